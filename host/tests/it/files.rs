//! The plugins folder is the truth: several files may provide one plugin id (the newest
//! serves, removing it swaps to the next), and the watcher keeps loading files however busy
//! the folder is.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::{fixture, lib_name, Host, StopOnDrop};

/// Deploy by copy + rename, with the file's modification time set first.
fn install_modified(host: &Host, source: &Path, name: &str, modified: SystemTime) {
    let tmp = host.plugins.join(format!(".{name}.tmp"));
    std::fs::copy(source, &tmp).expect("copy plugin");
    let file = std::fs::File::options().write(true).open(&tmp).expect("open the copy");
    file.set_modified(modified).expect("set the modification time");
    drop(file);
    std::fs::rename(&tmp, host.plugins.join(name)).expect("rename plugin into place");
}

/// The view's `files` as (file name, serving) pairs, in the order the API gives them.
fn files_of(p: &Value) -> Vec<(String, bool)> {
    p["files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .map(|f| {
                    let path = f["file"].as_str().unwrap_or("");
                    let name = Path::new(path).file_name().unwrap().to_string_lossy().to_string();
                    (name, f["serving"].as_bool().unwrap_or(false))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn version_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    v["version"].as_str().unwrap_or("").to_string()
}

/// Call `echo/version` in a loop while `during` runs; every answer must be a 200. The last
/// call starts after `during` returned.
fn calls_keep_working(host: &Host, during: impl FnOnce()) -> Vec<String> {
    let stop = AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let mut seen = Vec::new();
            loop {
                let stopping = stop.load(Ordering::SeqCst);
                seen.push(host.post("/api/plugins/echo/version", ""));
                if stopping {
                    return seen;
                }
            }
        });
        let guard = StopOnDrop(&stop);
        during();
        drop(guard);
        client.join().unwrap()
    });
    assert!(!seen.is_empty(), "the client made no call");
    for (status, body) in &seen {
        assert_eq!(*status, 200, "a call failed while the serving file changed: {body}");
    }
    seen.iter().map(|(_, body)| version_of(body)).collect()
}

#[test]
fn two_files_with_one_id_the_newest_serves_and_removing_it_swaps_back() {
    let host = Host::start();
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    install_modified(&host, &fixture("echo"), &lib_name("echo-a"), an_hour_ago);
    host.wait_state("echo", "running");
    install_modified(&host, &fixture("echo-v2"), &lib_name("echo-b"), SystemTime::now());
    host.wait_for("the newer file to serve", || {
        let p = host.plugin("echo");
        p["version"] == "2.0.0" && p["generation"] == 2
    });
    let p = host.plugin("echo");
    assert_eq!(files_of(&p), [(lib_name("echo-b"), true), (lib_name("echo-a"), false)], "{p}");
    assert!(p["file"].as_str().unwrap().ends_with(&lib_name("echo-b")), "{p}");
    let serving = &p["files"][0];
    assert_eq!(serving["sha256"], p["sha256"], "{p}");

    // The serving file goes: the other one takes over, and no call fails in between.
    let versions = calls_keep_working(&host, || {
        host.remove(&lib_name("echo-b"));
        host.wait_for("echo-a to serve again", || {
            let p = host.plugin("echo");
            p["version"] == "1.0.0" && p["generation"] == 3
        });
    });
    assert_eq!(versions.last().map(String::as_str), Some("1.0.0"), "{versions:?}");
    let p = host.plugin("echo");
    assert_eq!(p["state"], "running", "{p}");
    assert_eq!(files_of(&p), [(lib_name("echo-a"), true)], "{p}");
    let history = p["history"].as_array().unwrap();
    assert_eq!(history[1]["reason"], "swapped", "{p}");
    assert_eq!(history[1]["residency"], "unloaded", "{p}");

    // The last file goes: the plugin is unloaded.
    host.remove(&lib_name("echo-a"));
    host.wait_state("echo", "unloaded");
    assert!(files_of(&host.plugin("echo")).is_empty());
    let (status, body) = host.post("/api/plugins/echo/version", "");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn an_older_file_for_a_served_id_stands_by_until_the_newer_one_goes() {
    let host = Host::start();
    install_modified(&host, &fixture("echo-v2"), &lib_name("new"), SystemTime::now());
    host.wait_state("echo", "running");
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    install_modified(&host, &fixture("echo"), &lib_name("old"), an_hour_ago);
    host.wait_for("the older file to be listed", || files_of(&host.plugin("echo")).len() == 2);
    let p = host.plugin("echo");
    assert_eq!(files_of(&p), [(lib_name("new"), true), (lib_name("old"), false)], "{p}");
    // Nothing was swapped: the older file was only noted.
    assert_eq!(p["version"], "2.0.0", "{p}");
    assert_eq!(p["generation"], 1, "{p}");
    assert!(p["last_error"].is_null(), "{p}");

    // Removing the file that stands by changes nothing but the list.
    host.remove(&lib_name("old"));
    host.wait_for("the older file to leave the list", || files_of(&host.plugin("echo")).len() == 1);
    let p = host.plugin("echo");
    assert_eq!((p["generation"].clone(), p["state"].clone()), (1.into(), "running".into()), "{p}");

    // Back, then the newer one goes: the older one serves.
    install_modified(&host, &fixture("echo"), &lib_name("old"), an_hour_ago);
    host.wait_for("the older file to be listed", || files_of(&host.plugin("echo")).len() == 2);
    let versions = calls_keep_working(&host, || {
        host.remove(&lib_name("new"));
        host.wait_for("the older file to serve", || host.plugin("echo")["version"] == "1.0.0");
    });
    assert_eq!(versions.last().map(String::as_str), Some("1.0.0"), "{versions:?}");
    assert_eq!(files_of(&host.plugin("echo")), [(lib_name("old"), true)]);
}

#[test]
fn deleting_an_uploaded_copy_keeps_the_plugin_served_from_its_first_file() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    let v2 = std::fs::read(fixture("echo-v2")).unwrap();
    let (status, body) =
        host.put_bytes(&format!("/api/core/plugins/upload/{}", lib_name("echo-upload")), &v2);
    assert_eq!(status, 201, "{body}");
    host.wait_for("the upload to serve", || host.plugin("echo")["version"] == "2.0.0");
    assert_eq!(
        files_of(&host.plugin("echo")),
        [(lib_name("echo-upload"), true), (lib_name("echo"), false)]
    );

    let versions = calls_keep_working(&host, || {
        host.remove(&lib_name("echo-upload"));
        host.wait_for("echo.so to serve again", || host.plugin("echo")["version"] == "1.0.0");
    });
    assert_eq!(versions.last().map(String::as_str), Some("1.0.0"), "{versions:?}");
    let p = host.plugin("echo");
    assert_eq!(p["state"], "running", "{p}");
    assert!(p["file"].as_str().unwrap().ends_with(&lib_name("echo")), "{p}");
    assert_eq!(host.post("/api/plugins/echo/echo", "still here"), (200, "still here".into()));
}

#[test]
fn a_stream_of_events_in_the_plugins_folder_does_not_starve_loads() {
    let host = Host::start();
    let stop = AtomicBool::new(false);
    let junk = host.plugins.join("busy.log");
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut writes = 0u64;
            while !stop.load(Ordering::SeqCst) {
                std::fs::write(&junk, format!("line {writes}\n")).expect("write the junk file");
                writes += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            writes
        });
        let guard = StopOnDrop(&stop);
        // Let the stream start before the plugin arrives.
        while !junk.exists() {
            std::thread::sleep(Duration::from_millis(1));
        }
        host.install(&fixture("echo"), &lib_name("echo"));
        host.wait_state("echo", "running");
        drop(guard);
        assert!(writer.join().unwrap() > 0);
    });
    assert_eq!(host.post("/api/plugins/echo/echo", "loaded"), (200, "loaded".into()));
}
