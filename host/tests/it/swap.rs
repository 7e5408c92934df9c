use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{fixture, lib_name, Host, StopOnDrop};

fn version_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["version"].as_str().unwrap_or("").to_string()
}

#[test]
fn twenty_hot_swaps_under_continuous_load_lose_no_request() {
    twenty_hot_swaps_under_continuous_load_lose_no_request_in("in_process");
}

/// The same with echo in a child process: each swap starts a new child, switches, drains and
/// ends the old one.
#[test]
fn twenty_hot_swaps_under_continuous_load_lose_no_request_in_process_mode() {
    twenty_hot_swaps_under_continuous_load_lose_no_request_in("process");
}

fn twenty_hot_swaps_under_continuous_load_lose_no_request_in(mode: &str) {
    let host = Host::start();
    let v1 = fixture("echo");
    let v2 = fixture("echo-v2");
    host.install(&v1, &lib_name("echo"));
    host.wait_state("echo", "running");
    host.in_mode(mode, &["echo"]);
    // Moving to a child is a swap of its own: the generation the 20 swaps start from.
    let first = host.plugin("echo")["generation"].as_u64().unwrap();

    let stop = AtomicBool::new(false);
    let results = std::thread::scope(|s| {
        let stopper = StopOnDrop(&stop);
        let clients: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let (status, body) = host.post("/api/plugins/echo/version", "");
                        seen.push((status, version_of(&body), body));
                    }
                    seen
                })
            })
            .collect();
        for i in 0..20 {
            let (file, version) = if i % 2 == 0 { (&v2, "2.0.0") } else { (&v1, "1.0.0") };
            host.install(file, &lib_name("echo"));
            host.wait_for(&format!("swap {} to {version}", i + 1), || {
                let p = host.plugin("echo");
                p["generation"] == first + i + 1 && p["version"] == version
            });
            // Let the clients see each generation.
            std::thread::sleep(Duration::from_millis(30));
        }
        drop(stopper);
        clients.into_iter().map(|c| c.join().unwrap()).collect::<Vec<_>>()
    });

    for seen in &results {
        assert!(
            seen.len() > 20,
            "the client made too few requests to mean anything: {}",
            seen.len()
        );
        for (status, version, body) in seen {
            assert_eq!(*status, 200, "a request failed during a swap: {body}");
            assert!(version == "1.0.0" || version == "2.0.0", "{body}");
        }
        // Versions come in order: at most one change per swap, starting from v1.
        let changes = seen.windows(2).filter(|w| w[0].1 != w[1].1).count();
        assert!(changes <= 20, "{changes} version changes for 20 swaps");
        assert_eq!(seen[0].1, "1.0.0");
        assert!(seen.iter().any(|s| s.1 == "2.0.0"), "the client never saw v2");
    }
    let p = host.plugin("echo");
    assert_eq!(p["generation"], first + 20);
    assert_eq!(p["version"], "1.0.0");
    assert_eq!(p["isolation"], mode);
    let history = p["history"].as_array().unwrap();
    assert_eq!(history.len() as u64, first + 20);
    let last = history.len() - 1;
    for old in &history[last - 20..last] {
        assert_eq!(old["reason"], "swapped", "{old}");
        assert_eq!(old["residency"], "unloaded", "{old}");
    }
    assert!(history[last]["residency"].is_null());
}

#[test]
fn a_slow_in_place_copy_is_loaded_only_once_complete() {
    // No fallback timer: only the writer closing the file may trigger the load.
    let host = Host::start_with(&["--settle-ms", "600000"]);
    let bytes = std::fs::read(fixture("echo")).unwrap();
    let target = host.plugins.join(lib_name("echo"));
    let mut file = std::fs::File::create(&target).unwrap();
    for chunk in bytes.chunks(bytes.len() / 40 + 1) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(25));
        // Half-written: nothing loaded, nothing failed.
        let (_, list) = host.get_json("/api/core/plugins?all=true");
        assert!(
            list["plugins"].as_array().unwrap().is_empty(),
            "acted on a half-written file: {list}"
        );
    }
    drop(file);
    host.wait_state("echo", "running");
    let p = host.plugin("echo");
    assert!(p["last_error"].is_null(), "{p}");
    assert_eq!(p["generation"], 1);
    assert_eq!(host.post("/api/plugins/echo/echo", "ok"), (200, "ok".to_string()));
}

#[test]
fn a_failed_swap_keeps_the_old_version_serving() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");

    // A truncated copy of v2 over the running v1.
    let v2 = std::fs::read(fixture("echo-v2")).unwrap();
    host.install_bytes(&v2[..v2.len() / 2], &lib_name("echo"));
    host.wait_for("the failed swap to be recorded", || {
        !host.plugin("echo")["last_error"].is_null()
    });
    let p = host.plugin("echo");
    assert_eq!(p["state"], "running");
    assert_eq!(p["version"], "1.0.0");
    assert_eq!(p["generation"], 1);
    assert!(p["last_error"]["message"].as_str().unwrap().starts_with("truncated library"), "{p}");
    assert_eq!(host.post("/api/plugins/echo/echo", "v1"), (200, "v1".to_string()));

    // Then a good v2 goes in.
    host.install(&fixture("echo-v2"), &lib_name("echo"));
    host.wait_for("v2", || host.plugin("echo")["version"] == "2.0.0");
    assert!(host.plugin("echo")["last_error"].is_null());
}

#[test]
fn a_prefix_claimed_by_another_plugin_is_refused() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    host.install(&fixture("squatter"), &lib_name("squatter"));
    host.wait_state("squatter", "failed");
    let p = host.plugin("squatter");
    let message = p["last_error"]["message"].as_str().unwrap();
    assert!(
        message.contains("'/x-echo/sub' overlaps '/x-echo', already claimed by plugin 'echo'"),
        "{message}"
    );
    assert_eq!(host.get("/x-echo/sub").1, "echo 1.0.0 route GET /x-echo/sub ?");
}
