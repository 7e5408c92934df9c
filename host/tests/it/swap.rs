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

/// The SHA-256 of a file as coreutils' `sha256sum` computes it (not the host's code).
fn sha256sum(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}: {out:?}", path.display());
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

/// A copy of a library that differs in one byte no loader reads: after the end of every
/// segment the program headers name and before the section header table at the end. Same
/// size, other content.
fn with_one_unread_byte_changed(bytes: &[u8]) -> Vec<u8> {
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&bytes[..6], b"\x7fELF\x02\x01", "a 64-bit little-endian ELF file");
    let (phoff, shoff, phentsize, phnum) = (u64_at(0x20), u64_at(0x28), u16_at(0x36), u16_at(0x38));
    let segments_end = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .map(|e| u64_at(e + 0x08) + u64_at(e + 0x20))
        .max()
        .unwrap();
    assert!(segments_end + 2 < shoff, "no unread bytes: segments end at {segments_end}, {shoff}");
    let mut changed = bytes.to_vec();
    changed[(segments_end + shoff) / 2] ^= 0xff;
    changed
}

/// Regression (issue 15, swap latency): the copy of a swapped-in file is hashed after the
/// switch, off the swap's path, or before it only when the registry needs it to decide (a
/// file of the loaded one's size). Either way the view, the history and the event record the
/// SHA-256 of the file's bytes; a rebuild of the same size still swaps, and the same bytes
/// renamed in again do not.
#[test]
fn a_swapped_in_file_records_the_sha256_of_its_bytes_hashed_before_or_after_the_switch() {
    let host = Host::start();
    let (v1, v2) = (fixture("echo"), fixture("echo-v2"));
    let name = lib_name("echo");
    host.install(&v1, &name);
    host.wait_state("echo", "running");
    assert_eq!(host.plugin("echo")["sha256"], sha256sum(&v1));

    // Another size: hashed after the switch.
    host.install(&v2, &name);
    host.wait_for("v2", || host.plugin("echo")["generation"] == 2);
    let p = host.plugin("echo");
    assert_eq!(p["version"], "2.0.0", "{p}");
    assert_eq!(p["sha256"], sha256sum(&v2), "{p}");
    assert_eq!(p["files"][0]["sha256"], p["sha256"], "{p}");
    let history = p["history"].as_array().unwrap();
    assert_eq!(history[0]["sha256"], sha256sum(&v1), "{p}");
    assert_eq!(history[1]["sha256"], sha256sum(&v2), "{p}");
    let swapped = host.events_of("echo").into_iter().find(|e| e["kind"] == "swapped").unwrap();
    assert_eq!(swapped["details"]["sha256"], sha256sum(&v2), "{swapped}");

    // The same size, other bytes: hashed before deciding, and swapped in.
    let dir = tempfile::tempdir().unwrap();
    let rebuilt = dir.path().join(&name);
    std::fs::write(&rebuilt, with_one_unread_byte_changed(&std::fs::read(&v2).unwrap())).unwrap();
    assert_ne!(sha256sum(&rebuilt), sha256sum(&v2));
    host.install(&rebuilt, &name);
    host.wait_for("the same-size rebuild", || host.plugin("echo")["generation"] == 3);
    let p = host.plugin("echo");
    assert_eq!(p["sha256"], sha256sum(&rebuilt), "{p}");
    assert_eq!(host.post("/api/plugins/echo/echo", "same size"), (200, "same size".into()));

    // The same bytes again, with a time of their own to see them handled: nothing to load.
    let tmp = host.plugins.join(format!(".{name}.tmp"));
    std::fs::copy(&rebuilt, &tmp).unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&tmp).unwrap().set_modified(later).unwrap();
    std::fs::rename(&tmp, host.plugins.join(&name)).unwrap();
    let later_ms = later.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    host.wait_for("the same bytes to be seen", || {
        host.plugin("echo")["files"][0]["modified_ms"] == later_ms
    });
    let p = host.plugin("echo");
    assert_eq!(p["generation"], 3, "the same bytes were loaded again: {p}");
    assert_eq!(p["sha256"], sha256sum(&rebuilt), "{p}");
    // The next file is generation 4.
    host.install(&v1, &name);
    host.wait_for("v1 again", || host.plugin("echo")["version"] == "1.0.0");
    let p = host.plugin("echo");
    assert_eq!(p["generation"], 4, "the same bytes were loaded again: {p}");
    assert_eq!(p["sha256"], sha256sum(&v1), "{p}");
}
