//! A plugin's panics with `RUST_BACKTRACE` set: the SDK's panic hook prints the frames
//! unsymbolized, so the library still leaves memory when its file is deleted.
use crate::support::{fixture, lib_name, Host};

/// Lines of the log that are frames printed by the SDK's hook in `file`.
fn frames_in(log: &str, file: &str) -> usize {
    log.lines()
        .filter(|l| {
            let l = l.trim_start();
            l.split_once(": ").is_some_and(|(n, rest)| {
                n.bytes().all(|b| b.is_ascii_digit())
                    && rest.contains(file)
                    && rest.contains("+0x")
                    && u64::from_str_radix(rest.rsplit("+0x").next().unwrap(), 16).is_ok()
            })
        })
        .count()
}

/// A host with `env`, the panicky fixture installed and running, and one call that panicked
/// (the caller's 500 as ever); the library's file name.
fn host_after_a_panic(env: &[(&str, &str)]) -> (Host, String) {
    let host = Host::start_with_env(&[], env);
    let file = lib_name("panicky");
    host.install(&fixture("panicky"), &file);
    host.wait_state("panicky", "running");
    let (status, v) = host.post_json("/api/plugins/panicky/boom", "");
    assert_eq!(status, 500, "{v}");
    assert_eq!(v["error"]["code"], "plugin_panicked", "{v}");
    (host, file)
}

#[test]
fn a_plugin_that_panics_with_backtraces_on_still_unloads() {
    // A panic in a call ...
    let (host, file) = host_after_a_panic(&[("RUST_BACKTRACE", "1")]);
    // ... and the hook's report on the host's stderr: thread, location, message, and the
    // frames as `<file>+0x<offset>`, some of them in the plugin's own library.
    host.wait_for("the panic's report in the log", || {
        frames_in(&host.log(), "panicky") > 0 && host.log().contains("addr2line -Cfie")
    });
    let log = host.log();
    assert!(log.contains("boom: the fixture panicked on purpose"), "{log}");
    assert!(log.contains("panicked at host/tests/fixtures/panicky/src/lib.rs:"), "{log}");
    assert!(log.contains("stack backtrace:"), "{log}");
    // Nothing was symbolized (std's hook would name `core::panicking::panic_fmt`).
    assert!(!log.contains("core::panicking"), "{log}");
    assert!(!log.contains("panic_fmt"), "{log}");

    // A panic in Drop runs on another host thread; it is reported the same way.
    assert_eq!(host.post("/api/plugins/panicky/arm-drop-panic", ""), (200, "armed".to_string()));
    host.remove(&file);
    let p = host.wait_residency("panicky");
    assert!(host.log().contains("panicked in Drop on purpose"), "the drop never ran");
    assert!(
        frames_in(&host.log(), "panicky") > frames_in(&log, "panicky"),
        "no frames for the drop"
    );
    // Before the SDK's hook, std's symbolizer kept the library mapped: `pinned`.
    assert_eq!(p["history"][0]["residency"], "unloaded", "{p}");
}

#[test]
fn bkg_plugin_symbolize_brings_back_std_symbolized_backtrace_and_the_pin() {
    let (host, file) =
        host_after_a_panic(&[("RUST_BACKTRACE", "1"), ("BKG_PLUGIN_SYMBOLIZE", "1")]);
    host.wait_for("std's symbolized backtrace in the log", || {
        host.log().contains("fixture_panicky::")
    });
    assert_eq!(frames_in(&host.log(), "panicky"), 0, "{}", host.log());
    host.remove(&file);
    let p = host.wait_residency("panicky");
    // The documented price: std's symbolizer keeps the library's file mapped.
    assert_eq!(p["history"][0]["residency"], "pinned", "{p}");
}
