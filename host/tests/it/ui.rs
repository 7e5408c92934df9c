//! The admin UI's files at `/` and plugin uploads.

use crate::support::{fixture, lib_name, Host};

#[test]
fn an_uploaded_library_is_loaded_and_a_bad_one_changes_nothing() {
    let host = Host::start();
    let bytes = std::fs::read(fixture("echo")).unwrap();
    let name = lib_name("echo");
    let (status, body) = host.put_bytes(&format!("/api/core/plugins/upload/{name}"), &bytes);
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["bytes"], bytes.len());
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    host.wait_state("echo", "running");
    assert_eq!(host.post("/api/plugins/echo/echo", "hi"), (200, "hi".to_string()));

    // Junk and a truncated library are refused before they reach the folder: the running
    // plugin's file is not replaced and nothing is left behind.
    for (junk, needle) in [
        (b"not a library".to_vec(), "not an ELF"),
        (bytes[..bytes.len() / 2].to_vec(), "truncated"),
    ] {
        let (status, body) = host.put_bytes(&format!("/api/core/plugins/upload/{name}"), &junk);
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(needle), "{body}");
    }
    assert_eq!(std::fs::read(host.plugins.join(&name)).unwrap(), bytes);
    let left: Vec<String> = std::fs::read_dir(&host.plugins)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![name.clone()], "only the uploaded plugin is in the folder");
    assert_eq!(host.state("echo"), "running");

    for bad in ["..%2Fx.so", ".hidden.so", "x.txt", "a%20b.so"] {
        let (status, body) = host.put_bytes(&format!("/api/core/plugins/upload/{bad}"), &bytes);
        assert!(status == 400 || status == 404, "{bad}: {status} {body}");
    }
    assert!(!host.plugins.parent().unwrap().join("x.so").exists());
}

#[test]
fn the_ui_is_served_at_the_root_with_the_app_shell_for_client_routes() {
    let ui = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ui.path().join("assets")).unwrap();
    std::fs::write(ui.path().join("index.html"), "<html>bkg admin</html>").unwrap();
    std::fs::write(ui.path().join("main-ABC.js"), "console.log(1)").unwrap();
    let ui_dir = ui.path().to_str().unwrap();
    let host = Host::start_with(&["--ui-dir", ui_dir]);
    // Public: the login page loads without a key.
    for path in ["/", "/plugins/echo", "/events", "/index.html"] {
        let (status, body) = host.get_as(path, "");
        assert_eq!((status, body.as_str()), (200, "<html>bkg admin</html>"), "{path}");
    }
    assert_eq!(host.get_as("/main-ABC.js", "").1, "console.log(1)");
    // API paths keep their JSON 404; nothing outside the folder is reachable.
    let (status, body) = host.get("/api/nope");
    assert_eq!(status, 404);
    assert!(body.contains("no route"), "{body}");
    // An encoded '/' or a '..' segment is refused before routing.
    let (status, body) = host.get_as("/..%2f..%2fetc/passwd", "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_path"), "{body}");
}

#[test]
fn without_a_ui_the_root_says_how_to_get_one_and_a_ui_beside_the_binary_is_found() {
    // Nothing beside target/debug/bkg: `/` says how to get the UI, as JSON and as a page.
    let plain = Host::start();
    let (status, body) = plain.get_as("/", "");
    assert_eq!(status, 404, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "ui_not_installed", "{body}");
    assert!(body.contains("--ui-dir") && body.contains("scripts/run.sh"), "{body}");
    let page = ureq::get(&format!("{}/plugins/echo", plain.base))
        .set("Accept", "text/html,application/xhtml+xml")
        .call();
    let Err(ureq::Error::Status(404, page)) = page else { panic!("not a 404: {page:?}") };
    assert!(page.content_type().starts_with("text/html"), "{}", page.content_type());
    let text = page.into_string().unwrap();
    assert!(text.contains("admin UI is not installed") && text.contains("--ui-dir"), "{text}");
    // The host's own paths, and other paths asked for as JSON, keep their plain JSON 404.
    for path in ["/api/nope", "/no/such/route"] {
        let (status, body) = plain.get(path);
        assert_eq!(status, 404);
        assert!(body.contains("not_found") && !body.contains("ui_not_installed"), "{body}");
    }

    // The binary as an install lays it out: bin/bkg (a hard link to the built one, in the
    // target dir so the link stays on one file system) and share/bkg/ui.
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::create_dir_all(root.path().join("bin")).unwrap();
    std::fs::create_dir_all(root.path().join("share/bkg/ui")).unwrap();
    std::fs::write(root.path().join("share/bkg/ui/index.html"), "<html>installed ui</html>")
        .unwrap();
    let exe = root.path().join("bin/bkg");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_bkg"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_bkg"), &exe).unwrap();
    }
    let installed = Host::start_exe(&exe, &[]);
    for path in ["/", "/plugins/echo"] {
        assert_eq!(installed.get_as(path, ""), (200, "<html>installed ui</html>".into()), "{path}");
    }
}
