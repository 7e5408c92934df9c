//! The isolation mode a plugin library suggests (`export_plugin!(.., isolation = process)`,
//! the symbol `bkg_isolation_hint_v1`), read from the file without running its code: a
//! library that suggests process mode runs in a child with no API call, the operator's
//! choice wins and is kept, a library without the symbol (every library built before the
//! option) stays in the host, and a malformed suggestion is ignored with a warning. Also the
//! ELF reader itself on real built libraries, cut and damaged.

use std::path::Path;

use bkg_host::isolation::hint::{read_hint, read_hint_bytes};
use bkg_host::isolation::IsolationMode;
use serde_json::Value;

use crate::support::{
    author_guide_example, fixture, hinted_fixture, lib_name, product_plugin, Host,
};

/// The pid `id` says it runs in (its `pid` capability), if it answers.
fn says_pid(host: &Host, id: &str) -> Option<u64> {
    match host.post(&format!("/api/plugins/{id}/pid"), "") {
        (200, body) => body.parse().ok(),
        _ => None,
    }
}

/// True when `pid` no longer runs (gone, or a zombie nobody has reaped yet).
fn process_gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        }
    }
}

/// Wait until `id` runs in `mode` (a child pid in process mode, none in the host) and return
/// its view.
fn wait_mode(host: &Host, id: &str, mode: &str) -> Value {
    host.wait_for(&format!("{id} to run {mode}"), || {
        let p = host.plugin(id);
        p["isolation"] == mode
            && p["state"] == "running"
            && (mode == "process") == p["process"]["pid"].is_u64()
    });
    host.plugin(id)
}

#[test]
fn a_library_that_suggests_process_mode_runs_in_a_child_without_any_api_call() {
    let host = Host::start();
    host.install(&hinted_fixture(), &lib_name("hinted"));
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    let p = wait_mode(&host, "hinted", "process");
    assert_eq!(p["isolation_source"], "plugin", "{p}");
    assert_eq!(p["isolation_suggested"], "process", "{p}");
    let pid = p["process"]["pid"].as_u64().unwrap();
    assert_ne!(pid, host.pid() as u64, "{p}");
    // The calls really reach the child.
    assert_eq!(says_pid(&host, "hinted"), Some(pid));
    assert_eq!(host.post("/api/plugins/hinted/echo", "fenced"), (200, "fenced".to_string()));
    // No operator action: no isolation event.
    assert!(!host.events_of("hinted").iter().any(|e| e["kind"] == "isolation"));

    // A library built without the option (as every one before it) stays in the host.
    let echo = host.plugin("echo");
    assert_eq!(echo["isolation"], "in_process", "{echo}");
    assert_eq!(echo["isolation_source"], "default", "{echo}");
    assert!(echo["isolation_suggested"].is_null(), "{echo}");
    assert!(echo["process"].is_null(), "{echo}");
    assert_eq!(host.post("/api/plugins/echo/echo", "old build"), (200, "old build".to_string()));

    // Deleting the file ends the child and the generation leaves memory.
    host.remove(&lib_name("hinted"));
    host.wait_state("hinted", "unloaded");
    host.wait_for("the child to end", || process_gone(pid));
    let p = host.plugin("hinted");
    assert_eq!(p["residency"], "unloaded", "{p}");
}

#[test]
fn the_operators_choice_wins_over_the_suggestion_and_survives_a_restart() {
    let host = Host::start();
    host.install(&hinted_fixture(), &lib_name("hinted"));
    let child = wait_mode(&host, "hinted", "process")["process"]["pid"].as_u64().unwrap();

    host.set_isolation("hinted", "in_process");
    let p = wait_mode(&host, "hinted", "in_process");
    assert_eq!(p["isolation_source"], "operator", "{p}");
    assert_eq!(p["isolation_suggested"], "process", "the suggestion is still shown: {p}");
    assert_eq!(says_pid(&host, "hinted"), Some(host.pid() as u64));
    host.wait_for("the suggested child to end", || process_gone(child));
    let events = host.events_of("hinted");
    let switch = events.iter().find(|e| e["kind"] == "isolation").expect("an isolation event");
    assert_eq!(switch["details"]["from"], "process", "{switch}");
    assert_eq!(switch["details"]["to"], "in_process", "{switch}");

    // Stored: the restarted host loads it in the host although the library suggests not.
    let host = host.restart(&[]);
    host.wait_state("hinted", "running");
    let p = host.plugin("hinted");
    assert_eq!(p["isolation"], "in_process", "{p}");
    assert_eq!(p["isolation_source"], "operator", "{p}");
    assert!(p["process"].is_null(), "{p}");
    assert_eq!(says_pid(&host, "hinted"), Some(host.pid() as u64));
    // A new build of the file (the same suggestion) keeps the operator's mode too.
    host.remove(&lib_name("hinted"));
    host.wait_state("hinted", "unloaded");
    host.install(&hinted_fixture(), &lib_name("hinted"));
    host.wait_state("hinted", "running");
    assert_eq!(host.plugin("hinted")["isolation"], "in_process");
    assert_eq!(says_pid(&host, "hinted"), Some(host.pid() as u64));

    // The operator's process is a choice as well.
    host.isolate("hinted", "process");
    let p = host.plugin("hinted");
    assert_eq!(p["isolation_source"], "operator", "{p}");
}

#[test]
fn a_malformed_suggestion_is_ignored_with_a_warning_naming_what_is_wrong() {
    let bytes = std::fs::read(hinted_fixture()).unwrap();
    let at = find(&bytes, b"bkgisol1").expect("the hint's magic in the built library");
    let mut bad = bytes.clone();
    // Mode 9: neither in_process (1) nor process (2).
    bad[at + 12..at + 16].copy_from_slice(&9u32.to_le_bytes());
    let host = Host::start();
    host.install_bytes(&bad, &lib_name("hinted"));
    host.wait_state("hinted", "running");
    let p = host.plugin("hinted");
    assert_eq!(p["isolation"], "in_process", "{p}");
    assert_eq!(p["isolation_source"], "default", "{p}");
    assert!(p["isolation_suggested"].is_null(), "{p}");
    assert_eq!(says_pid(&host, "hinted"), Some(host.pid() as u64));
    host.wait_for("the warning in the host's log", || {
        host.log().lines().any(|l| {
            l.contains("WARN") && l.contains("bkg_isolation_hint_v1") && l.contains("names mode 9")
        })
    });
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn the_elf_reader_reads_real_libraries() {
    assert_eq!(read_hint(&hinted_fixture()), Ok(Some(IsolationMode::Process)));
    // Built without the option: no suggestion (old builds look the same).
    for lib in [fixture("echo"), fixture("uncounted"), product_plugin("apikeys")] {
        assert_eq!(read_hint(&lib), Ok(None), "{}", lib.display());
    }
    assert_eq!(read_hint(&author_guide_example()), Ok(None));
    assert!(read_hint(Path::new("/nonexistent/libx.so")).unwrap_err().contains("cannot open"));
}

#[test]
fn the_elf_reader_refuses_cut_and_damaged_libraries_without_panicking() {
    let bytes = std::fs::read(hinted_fixture()).unwrap();
    // Cut anywhere: an error or no suggestion, never a panic; cut before the end of the
    // section table (the end of the file): an error that says what lies past the end.
    let step = (bytes.len() / 500).max(1);
    for cut in (0..bytes.len()).step_by(step) {
        if let Err(message) = read_hint_bytes(&bytes[..cut]) {
            assert!(!message.is_empty());
        }
    }
    let cut = read_hint_bytes(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(cut.contains("past the end of the file"), "{cut}");
    assert!(read_hint_bytes(&bytes[..40]).unwrap_err().contains("too short"));
    // The magic damaged: named.
    let at = find(&bytes, b"bkgisol1").unwrap();
    let mut bad = bytes.clone();
    bad[at] = b'X';
    assert!(read_hint_bytes(&bad).unwrap_err().contains("does not start with the magic"));
    let mut bad = bytes.clone();
    bad[at + 8..at + 12].copy_from_slice(&2u32.to_le_bytes());
    assert!(read_hint_bytes(&bad).unwrap_err().contains("is version 2"));
    // Garbage after an ELF magic: an answer, never a panic.
    let mut junk = bytes[..64].to_vec();
    junk.extend(std::iter::repeat_n(0xa5u8, 4096));
    let _ = read_hint_bytes(&junk);
    assert_eq!(read_hint_bytes(&[b'M'; 100]), Err("not an ELF file".to_string()));
}
