use crate::support::{fixture, lib_name, Host};

fn assert_failed_with(host: &Host, id: &str, expected: &str) {
    host.wait_state(id, "failed");
    let p = host.plugin(id);
    let message = p["last_error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains(expected), "{id}: expected '{expected}' in '{message}'");
    assert!(message.len() < 300 && !message.contains('\n'), "{id}: error not short: {message}");
    assert_eq!(p["generation"], 0, "{p}");
    assert!(p["file"].is_null(), "nothing may be loaded: {p}");
}

#[test]
fn broken_files_get_short_clear_errors_and_load_nothing() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");

    host.install_bytes(b"", &lib_name("empty"));
    assert_failed_with(&host, "empty", "empty file");

    let random: Vec<u8> =
        (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    host.install_bytes(&random, &lib_name("random"));
    assert_failed_with(&host, "random", "not a shared library");

    let echo = std::fs::read(fixture("echo")).unwrap();
    host.install_bytes(&echo[..echo.len() / 3], &lib_name("truncated"));
    assert_failed_with(&host, "truncated", "truncated library");

    host.install(&fixture("incompatible"), &lib_name("incompatible"));
    assert_failed_with(&host, "incompatible", "incompatible plugin interface");

    // Ignored entirely: hidden, temporary and foreign files.
    let ext = std::env::consts::DLL_EXTENSION;
    std::fs::write(host.plugins.join(format!(".hidden.{ext}")), b"junk").unwrap();
    std::fs::write(host.plugins.join("notes.txt"), b"junk").unwrap();
    std::fs::write(host.plugins.join(format!("echo.{ext}.part")), b"junk").unwrap();
    // A real plugin copied after them: once it is loaded, the watcher has handled every event
    // that came before (it takes them in order, and the registry its commands), so whatever
    // the junk files would have caused has happened by now.
    host.install(&fixture("uncounted"), &lib_name("later"));
    host.wait_state("uncounted", "running");

    // The running plugin never noticed, and the junk files made no record.
    assert_eq!(host.post("/api/plugins/echo/echo", "fine"), (200, "fine".to_string()));
    assert_eq!(host.plugin("echo")["generation"], 1);
    let (_, all) = host.get_json("/api/core/plugins?all=true");
    let ids: Vec<&str> =
        all["plugins"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["echo", "empty", "incompatible", "random", "truncated", "uncounted"]);

    // Removing a failed file removes its record.
    host.remove(&lib_name("random"));
    host.wait_for("the random record to go", || host.plugin("random").is_null());

    // A fixed file under the same name loads.
    host.install(&fixture("panicky"), &lib_name("empty"));
    host.wait_state("panicky", "running");
    host.wait_for("the placeholder record to go", || host.plugin("empty").is_null());
}

#[test]
fn malformed_requests_get_json_errors() {
    let host = Host::start();
    let (status, v) = host.get_json("/api/core/plugins/ghost");
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "not_found");
    let (status, v) = host.post_json("/api/plugins/ghost/echo", "{");
    assert_eq!(status, 404);
    assert!(v["error"]["message"].as_str().unwrap().contains("'ghost' is not loaded"));
    let (status, v) = host.get_json("/no/such/route");
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "not_found");
    assert_eq!(host.get("/healthz").0, 200);
    assert_eq!(host.get("/readyz").0, 200);
}
