//! Model downloads against a fake hub on 127.0.0.1: whole installs with progress and hashes,
//! resume after a broken transfer, 404 and corrupt files, cancel, and requests that would leave
//! the models folder.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::hub::{bytes, sha256_hex, FakeHub, HubFile, COMMIT};
use crate::support::{fixture, lib_name, Host};

const REPO: &str = "acme/tiny-bert";

/// The files of the test model: a git-lfs weights file, a config and a nested file.
fn model_files() -> Vec<(&'static str, Vec<u8>, bool)> {
    vec![
        ("model.safetensors", bytes(1_500_000, 1), true),
        ("config.json", br#"{"hidden_size": 8}"#.to_vec(), false),
        ("1_Pooling/config.json", br#"{"pooling_mode_mean_tokens": true}"#.to_vec(), false),
    ]
}

fn hub_with_model() -> FakeHub {
    let hub = FakeHub::start();
    for (name, data, lfs) in model_files() {
        hub.add(REPO, name, HubFile { data, lfs, ..Default::default() });
    }
    hub
}

/// A host with the echo plugin (downloads are made for a plugin) and this hub.
fn host_for(hub: &FakeHub, extra: &[&str]) -> Host {
    let mut args = vec!["--hub-endpoint", hub.url.as_str()];
    args.extend_from_slice(extra);
    let host = Host::start_with(&args);
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    host
}

fn request(files: &[&str]) -> String {
    serde_json::json!({ "repo": REPO, "revision": "main", "files": files }).to_string()
}

fn all_files() -> Vec<&'static str> {
    model_files().into_iter().map(|(n, _, _)| n).collect()
}

fn start(host: &Host, body: &str) -> String {
    let (status, job) = host.post_json("/api/core/plugins/echo/models/download", body);
    assert_eq!(status, 202, "{job}");
    job["id"].as_str().expect("job id").to_string()
}

/// Poll the job until it ends; return it.
fn finish(host: &Host, id: &str) -> Value {
    host.wait_for(&format!("download {id} to end"), || {
        let job = host.get_json(&format!("/api/core/models/downloads/{id}")).1;
        matches!(job["state"].as_str(), Some("installed" | "failed" | "cancelled"))
    });
    host.get_json(&format!("/api/core/models/downloads/{id}")).1
}

fn partial_files(models: &Path) -> Vec<String> {
    let blobs = models.join(".downloads/hub/models--acme--tiny-bert/blobs");
    std::fs::read_dir(blobs)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".part"))
                .collect()
        })
        .unwrap_or_default()
}

fn read_ws(
    ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
) -> Value {
    loop {
        match ws.read().expect("read a WebSocket message") {
            tungstenite::Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
}

#[test]
fn a_download_installs_the_whole_model_with_progress_and_hashes() {
    let hub = FakeHub::start();
    let files = model_files();
    for (name, data, lfs) in files.clone() {
        // The weights stop half-way until the test has seen the progress.
        let pause_at = lfs.then_some(data.len() / 2);
        hub.add(REPO, name, HubFile { data, lfs, pause_at, ..Default::default() });
    }
    let host = host_for(&hub, &[]);
    let (mut ws, _) = tungstenite::connect(host.ws_url("/ws/core/plugins/echo/models"))
        .expect("connect the models WebSocket");
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = ws.get_mut() {
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    let id = start(&host, &request(&all_files()));

    // Half-way: the WebSocket and GET /api/core/models both show bytes done / total.
    let half = files[0].1.len() / 2;
    let total = files[0].1.len() as u64;
    loop {
        let msg = read_ws(&mut ws);
        assert_eq!(msg["id"], id.as_str(), "{msg}");
        let f = &msg["files"][0];
        assert!(f["bytes_done"].as_u64().unwrap() <= half as u64, "{msg}");
        if f["bytes_done"] == half && f["bytes_total"] == total {
            assert_eq!(f["state"], "downloading");
            break;
        }
    }
    let (_, overview) = host.get_json("/api/core/models");
    let job = &overview["downloads"][0];
    assert_eq!(job["state"], "downloading", "{overview}");
    assert_eq!(job["files"][0]["bytes_done"], half);
    assert_eq!(job["files"][0]["bytes_total"], total);
    assert_eq!(job["files"][1]["state"], "pending");
    assert!(!host.models_dir().join(REPO).exists(), "nothing is installed before the end");
    hub.release();

    let job = finish(&host, &id);
    assert_eq!(job["state"], "installed", "{job}");
    assert_eq!(job["path"], REPO);
    // The last message on the socket is the installed job.
    let mut last = read_ws(&mut ws);
    while last["state"] != "installed" {
        last = read_ws(&mut ws);
    }
    for (i, (name, data, _)) in files.iter().enumerate() {
        let sha = sha256_hex(data);
        assert_eq!(last["files"][i]["name"], *name);
        assert_eq!(last["files"][i]["state"], "verified");
        assert_eq!(last["files"][i]["bytes_done"], data.len());
        assert_eq!(last["files"][i]["sha256"], sha.as_str());
        let installed = host.models_dir().join(REPO).join(name);
        assert_eq!(&std::fs::read(&installed).unwrap(), data, "{}", installed.display());
    }

    // The registry has it, with hashes, and the event log says so.
    let (_, overview) = host.get_json("/api/core/models");
    let model = &overview["models"][0];
    assert_eq!(model["repo"], REPO, "{overview}");
    assert_eq!(model["commit"], COMMIT);
    assert_eq!(model["present"], true);
    assert_eq!(model["plugin"], "echo");
    assert_eq!(model["files"][0]["sha256"], sha256_hex(&files[0].1).as_str());
    assert_eq!(model["total_bytes"], files.iter().map(|f| f.1.len()).sum::<usize>());
    let (_, events) = host.get_json("/api/core/events?plugin=echo&limit=20");
    let kinds: Vec<&str> =
        events["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"model_downloaded"), "{kinds:?}");
    let (_, logs) = host.get_json("/api/core/plugins/echo/logs?tail=50");
    assert!(logs.to_string().contains("installed acme/tiny-bert@main"), "{logs}");
    // The download cache is gone once the model is in place; only the model folder holds data.
    assert!(!host.models_dir().join(".downloads/hub/models--acme--tiny-bert").exists());

    // The registry survives a restart of the host.
    let host = host.restart(&["--hub-endpoint", hub.url.as_str()]);
    let (_, overview) = host.get_json("/api/core/models");
    assert_eq!(overview["models"][0]["repo"], REPO, "{overview}");
    assert_eq!(overview["models"][0]["files"].as_array().unwrap().len(), 3);
}

#[test]
fn a_broken_transfer_resumes_where_it_stopped() {
    let hub = FakeHub::start();
    let data = bytes(1_000_000, 7);
    let cut = 300_000;
    hub.add(
        REPO,
        "model.safetensors",
        HubFile { data: data.clone(), lfs: true, cut_once_at: Some(cut), ..Default::default() },
    );
    // No automatic retries: the first job fails, the second resumes.
    let host = host_for(&hub, &["--hub-retries", "0"]);
    let id = start(&host, &request(&["model.safetensors"]));
    let job = finish(&host, &id);
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("broke off") && error.contains("resume"), "{error}");
    assert!(!host.models_dir().join(REPO).exists(), "nothing half-installed");
    assert_eq!(partial_files(&host.models_dir()).len(), 1, "the partial file is kept");

    let id = start(&host, &request(&["model.safetensors"]));
    let job = finish(&host, &id);
    assert_eq!(job["state"], "installed", "{job}");
    assert_eq!(job["files"][0]["sha256"], sha256_hex(&data).as_str());
    let resumed: Vec<String> = hub
        .seen()
        .into_iter()
        .filter(|s| s.range.as_deref() == Some(&format!("bytes={cut}-")))
        .map(|s| s.path)
        .collect();
    assert_eq!(
        resumed,
        ["/acme/tiny-bert/resolve/main/model.safetensors"],
        "the second transfer resumed at byte {cut}: {:?}",
        hub.seen()
    );
    assert_eq!(
        std::fs::read(host.models_dir().join(REPO).join("model.safetensors")).unwrap(),
        data
    );
    assert!(partial_files(&host.models_dir()).is_empty());

    // With retries (the default), a broken transfer is resumed within the same job.
    let hub2 = FakeHub::start();
    hub2.add(
        "acme/other",
        "w.bin",
        HubFile { data: data.clone(), lfs: true, cut_once_at: Some(cut), ..Default::default() },
    );
    let host = host_for(&hub2, &[]);
    let body = serde_json::json!({ "repo": "acme/other", "files": ["w.bin"] }).to_string();
    let job = finish(&host, &start(&host, &body));
    assert_eq!(job["state"], "installed", "{job}");
    assert_eq!(std::fs::read(host.models_dir().join("acme/other/w.bin")).unwrap(), data);
}

#[test]
fn missing_and_corrupt_files_fail_clearly_and_install_nothing() {
    let hub = hub_with_model();
    let host = host_for(&hub, &[]);
    // A first, good install: later failures must leave it as it is.
    let job = finish(&host, &start(&host, &request(&all_files())));
    assert_eq!(job["state"], "installed", "{job}");
    let installed = host.models_dir().join(REPO).join("model.safetensors");
    let good = std::fs::read(&installed).unwrap();

    // A file the hub does not have.
    let id = start(&host, &request(&["config.json", "no-such-file.bin"]));
    let job = finish(&host, &id);
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("no-such-file.bin") && error.contains("404"), "{error}");
    assert_eq!(job["files"][1]["state"], "failed");

    // A corrupt file: the hub's sha256 does not match what arrives.
    hub.add(
        REPO,
        "model.safetensors",
        HubFile { data: bytes(1_500_000, 1), lfs: true, corrupt: true, ..Default::default() },
    );
    let job = finish(&host, &start(&host, &request(&all_files())));
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("corrupt") && error.contains("sha256"), "{error}");
    let blobs = host.models_dir().join(".downloads/hub/models--acme--tiny-bert/blobs");
    for e in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert_ne!(name, sha256_hex(&bytes(1_500_000, 1)), "the corrupt file was discarded");
    }

    // An expected hash given by the client is checked too.
    let body = serde_json::json!({ "repo": REPO, "files": ["config.json"],
        "sha256": { "config.json": "00".repeat(32) } })
    .to_string();
    let job = finish(&host, &start(&host, &body));
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("corrupt"), "{job}");

    // The earlier install is untouched, in the folder and in the registry.
    assert_eq!(std::fs::read(&installed).unwrap(), good);
    let (_, overview) = host.get_json("/api/core/models");
    assert_eq!(overview["models"].as_array().unwrap().len(), 1, "{overview}");
    assert_eq!(overview["models"][0]["files"].as_array().unwrap().len(), 3);
    let (_, events) = host.get_json("/api/core/events?plugin=echo&limit=50");
    let failed = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "model_download_failed")
        .count();
    assert_eq!(failed, 3, "{events}");
}

#[test]
fn cancel_stops_a_transfer_and_leaves_nothing() {
    let hub = FakeHub::start();
    let data = bytes(2_000_000, 3);
    hub.add(
        REPO,
        "model.safetensors",
        HubFile { data: data.clone(), lfs: true, pause_at: Some(500_000), ..Default::default() },
    );
    let host = host_for(&hub, &[]);
    let id = start(&host, &request(&["model.safetensors"]));
    host.wait_for("the transfer to reach the pause", || {
        host.get_json(&format!("/api/core/models/downloads/{id}")).1["files"][0]["bytes_done"]
            == 500_000
    });
    // A second download of the same repo meanwhile is refused.
    let (status, body) = host.post("/api/core/plugins/echo/models/download", &request(&["x.bin"]));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("already running"), "{body}");

    let (status, body) = host.request_as(
        "DELETE",
        &format!("/api/core/models/downloads/{id}"),
        crate::support::ADMIN_KEY,
    );
    assert_eq!(status, 202, "{body}");
    hub.release();
    let job = finish(&host, &id);
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(job["files"][0]["state"], "cancelled", "{job}");
    assert!(!host.models_dir().join(REPO).exists());
    assert!(partial_files(&host.models_dir()).is_empty(), "partial data removed");
    let (status, _) = host.request_as(
        "DELETE",
        &format!("/api/core/models/downloads/{id}"),
        crate::support::ADMIN_KEY,
    );
    assert_eq!(status, 409, "an ended job cannot be cancelled");
    let (status, _) =
        host.request_as("DELETE", "/api/core/models/downloads/nope", crate::support::ADMIN_KEY);
    assert_eq!(status, 404);

    // The same repo downloads fine afterwards.
    let job = finish(&host, &start(&host, &request(&["model.safetensors"])));
    assert_eq!(job["state"], "installed", "{job}");
    assert_eq!(
        std::fs::read(host.models_dir().join(REPO).join("model.safetensors")).unwrap(),
        data
    );
}

#[test]
fn requests_that_would_leave_the_models_folder_are_refused() {
    let hub = hub_with_model();
    let host = host_for(&hub, &[]);
    let post = |body: &str| host.post("/api/core/plugins/echo/models/download", body);
    for (body, needle) in [
        (r#"{"repo":"../etc","files":["passwd"]}"#, "repo id"),
        (r#"{"repo":"acme/../../x","files":["a"]}"#, "repo id"),
        (r#"{"repo":"/abs","files":["a"]}"#, "repo id"),
        (r#"{"repo":"acme/m","files":["../../../etc/passwd"]}"#, "relative path"),
        (r#"{"repo":"acme/m","files":["/etc/passwd"]}"#, "relative path"),
        (r#"{"repo":"acme/m","files":["a\\..\\b"]}"#, "relative path"),
        (r#"{"repo":"acme/m","files":[".bkg-model.json"]}"#, "reserved"),
        (r#"{"repo":"acme/m","revision":"../main","files":["a"]}"#, "revision"),
        (r#"{"repo":"acme/m","files":[]}"#, "files"),
        (r#"{"repo":"acme/m","files":["a","a"]}"#, "twice"),
        (r#"{"repo":"acme/m","files":["a"],"sha256":{"a":"xyz"}}"#, "64 hex"),
        (r#"{"repo":"acme/m","files":["a"],"sha256":{"b":"00"}}"#, "not among"),
        (r#"{"repo":"acme/m","files":"a"}"#, "malformed JSON"),
        (r#"{"repo":"acme/m""#, "malformed JSON"),
    ] {
        let (status, answer) = post(body);
        assert_eq!(status, 400, "{body} -> {answer}");
        assert!(answer.contains(needle), "{body} -> {answer}");
    }
    let (status, _) =
        host.post("/api/core/plugins/nope/models/download", &request(&["config.json"]));
    assert_eq!(status, 404);
    // Nothing was fetched and nothing escaped.
    assert!(hub.seen().is_empty(), "{:?}", hub.seen());
    let root = host.models_dir().parent().unwrap().parent().unwrap().to_path_buf();
    assert!(!root.join("etc").exists() && !root.join("x").exists());

    // A folder the operator made is never replaced.
    let mine = host.models_dir().join(REPO);
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "mine").unwrap();
    let (status, body) = post(&request(&["config.json"]));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("not installed by bkg"), "{body}");
    assert_eq!(std::fs::read_to_string(mine.join("notes.txt")).unwrap(), "mine");
}

#[test]
fn models_laid_out_by_other_tools_are_registered_at_start() {
    let hub = hub_with_model();
    let host = host_for(&hub, &[]);
    let job = finish(&host, &start(&host, &request(&["config.json"])));
    assert_eq!(job["state"], "installed", "{job}");
    // Copy the folder (manifest included) to another repo's place, as a script would lay it out.
    let manifest = host.models_dir().join(REPO).join(".bkg-model.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["repo"] = "local/copied".into();
    m["path"] = "local/copied".into();
    m["source"] = "pypi:some-package==1.0".into();
    let copied = host.models_dir().join("local/copied");
    std::fs::create_dir_all(&copied).unwrap();
    std::fs::copy(host.models_dir().join(REPO).join("config.json"), copied.join("config.json"))
        .unwrap();
    std::fs::write(copied.join(".bkg-model.json"), m.to_string()).unwrap();
    let host = host.restart(&["--hub-endpoint", hub.url.as_str()]);
    let (_, overview) = host.get_json("/api/core/models");
    let repos: Vec<&str> =
        overview["models"].as_array().unwrap().iter().filter_map(|m| m["repo"].as_str()).collect();
    assert_eq!(repos, ["acme/tiny-bert", "local/copied"], "{overview}");
    assert_eq!(overview["models"][1]["source"], "pypi:some-package==1.0");

    // A model folder removed behind the host's back is reported, not hidden.
    std::fs::remove_dir_all(host.models_dir().join(REPO)).unwrap();
    let (_, overview) = host.get_json("/api/core/models");
    assert_eq!(overview["models"][0]["present"], false, "{overview}");
}

/// The second version of the test model: the same file names, other bytes.
fn model_files_v2() -> Vec<(&'static str, Vec<u8>, bool)> {
    vec![
        ("model.safetensors", bytes(1_200_000, 2), true),
        ("config.json", br#"{"hidden_size": 16}"#.to_vec(), false),
        ("1_Pooling/config.json", br#"{"pooling_mode_cls_token": true}"#.to_vec(), false),
    ]
}

/// The names in a folder, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Install the model, then replace it by its second version on a host that aborts when the
/// install reaches `step` (`BKG_FAILPOINT=model_install:<step>`). The host started next on the
/// same folders must hold one complete install (the second version if `expect_v2`, else the
/// first): every file byte-equal, the manifest and `GET /api/core/models` agreeing with it,
/// the user's file beside it kept, and no work folder left; and a new replacement must work.
fn replacement_killed_at(step: &str, expect_v2: bool) {
    let hub = hub_with_model();
    let args = ["--hub-endpoint", hub.url.as_str()];
    let host = host_for(&hub, &[]);
    let job = finish(&host, &start(&host, &request(&all_files())));
    assert_eq!(job["state"], "installed", "{job}");
    let models = host.models_dir();
    let dir = models.join(REPO);
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    for (name, data, lfs) in model_files_v2() {
        hub.add(REPO, name, HubFile { data, lfs, ..Default::default() });
    }

    let failpoint = format!("model_install:{step}");
    let mut host = host.restart_with_env(&args, &[("BKG_FAILPOINT", failpoint.as_str())]);
    host.wait_state("echo", "running");
    start(&host, &request(&all_files()));
    let status = host.wait_for_exit();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(6), "the host aborted (SIGABRT): {status:?}");
    }
    assert!(!status.success(), "{status:?}");
    assert!(
        host.log().contains(&format!("aborting at failpoint {failpoint}")),
        "the host died at the failpoint\n{}",
        host.log()
    );

    let host = host.restart_after_exit(&args);
    let expected = if expect_v2 { model_files_v2() } else { model_files() };
    for (name, data, _) in &expected {
        let file = dir.join(name);
        assert!(
            std::fs::read(&file).unwrap() == *data,
            "{} is the expected version",
            file.display()
        );
    }
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join(".bkg-model.json")).unwrap()).unwrap();
    let (_, overview) = host.get_json("/api/core/models");
    let listed = overview["models"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{overview}");
    assert_eq!(listed[0]["repo"], REPO);
    assert_eq!(listed[0]["present"], true, "{overview}");
    for model in [&manifest, &listed[0]] {
        let files = model["files"].as_array().unwrap();
        assert_eq!(files.len(), expected.len(), "{model}");
        for (f, (name, data, _)) in files.iter().zip(&expected) {
            assert_eq!(f["name"], *name, "{model}");
            assert_eq!(f["sha256"], sha256_hex(data).as_str(), "{model}");
            assert_eq!(f["size"], data.len(), "{model}");
        }
        assert_eq!(model["installed_at_ms"], manifest["installed_at_ms"], "{model}");
    }
    // No staging, previous or discarded folder is left, and nothing beside the model.
    assert_eq!(entries(&models.join(".downloads")), ["hub"]);
    assert_eq!(entries(&models.join("acme")), ["tiny-bert"]);
    assert_eq!(entries(&models), [".downloads", "acme"]);

    // The repo can be replaced again.
    host.wait_state("echo", "running");
    let job = finish(&host, &start(&host, &request(&all_files())));
    assert_eq!(job["state"], "installed", "{job}");
    for (name, data, _) in model_files_v2() {
        assert!(std::fs::read(dir.join(name)).unwrap() == data, "{name} after the new install");
    }
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine");
    assert_eq!(entries(&models.join(".downloads")), ["hub"]);
}

#[test]
fn a_replacement_killed_once_staged_keeps_the_earlier_model() {
    replacement_killed_at("staged", false);
}

#[test]
fn a_replacement_killed_after_moving_the_earlier_model_aside_puts_it_back() {
    replacement_killed_at("moved_aside", false);
}

#[test]
fn a_replacement_killed_after_the_rename_keeps_the_new_model() {
    replacement_killed_at("renamed", true);
}

#[test]
fn a_replacement_killed_after_registering_keeps_the_new_model() {
    replacement_killed_at("registered", true);
}
