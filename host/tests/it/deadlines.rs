//! Deadlines that cancel: calls still running when a drain deadline passes (swap, stop,
//! shutdown) are cancelled and the outcome recorded; a config apply that timed out is not
//! applied behind the store's back; a panicking `Drop` does not end the host; the queue is
//! bounded in bytes.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::support::{fixture, lib_name, Host, ADMIN_KEY};

/// A streamed call in progress: its first line (once the stream began), then how it ended:
/// `Ok(rest)` for a body that ended cleanly, `Err(why)` for one that was cut off.
struct OpenStream {
    first: mpsc::Receiver<String>,
    done: std::thread::JoinHandle<Result<String, String>>,
}

fn open_stream(host: &Host, capability: &str, body: &str) -> OpenStream {
    let url = format!("{}/api/plugins/slow/{capability}", host.base);
    let body = body.to_string();
    let (tx, first) = mpsc::channel();
    let done = std::thread::spawn(move || {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
        let response = agent
            .post(&url)
            .set("Authorization", &format!("Bearer {ADMIN_KEY}"))
            .send_string(&body)
            .map_err(|e| format!("the call failed before streaming: {e}"))?;
        let mut reader = BufReader::new(response.into_reader());
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| format!("no first line: {e}"))?;
        let _ = tx.send(line);
        let mut rest = Vec::new();
        match reader.read_to_end(&mut rest) {
            Ok(_) => Ok(String::from_utf8_lossy(&rest).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    });
    OpenStream { first, done }
}

impl OpenStream {
    fn wait_started(&self, host: &Host) {
        match self.first.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => assert_eq!(line, "tick 1\n"),
            Err(_) => panic!("the stream did not begin\n{}", host.log()),
        }
    }
}

/// The newest event of `kind` for `plugin`.
fn event(host: &Host, plugin: &str, kind: &str) -> Value {
    let (status, v) = host.get_json(&format!("/api/core/events?plugin={plugin}&limit=1000"));
    assert_eq!(status, 200, "{v}");
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == kind)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} event for {plugin}: {v}"))
}

fn swap_in_a_new_build(host: &Host) {
    // The same plugin id from another file: the new file is the newer, so it takes over.
    host.install(&fixture("slow"), &lib_name("slow-new"));
    host.wait_for("the swap to finish", || {
        let p = host.plugin("slow");
        p["generation"] == 2 && !p["history"][0]["residency"].is_null()
    });
}

#[test]
fn a_streamed_call_held_across_a_swap_is_cancelled_at_the_drain_deadline() {
    let host = Host::start_with(&["--drain-timeout-ms", "200"]);
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("slow", "running");
    let stream = open_stream(&host, "stream", "600000");
    stream.wait_started(&host);

    swap_in_a_new_build(&host);
    let p = host.plugin("slow");
    let old = &p["history"][0];
    assert_eq!(old["reason"], "swapped", "{p}");
    assert_eq!(old["residency"], "unloaded", "{p}");
    assert_eq!(old["abandoned_calls"], 1, "{p}");
    assert_eq!(old["cancelled_calls"], 1, "{p}");
    assert_eq!(old["ignored_cancel_calls"], 0, "{p}");
    let unloaded = event(&host, "slow", "unloaded");
    assert_eq!(unloaded["details"]["cancelled_calls"], 1, "{unloaded}");
    assert_eq!(unloaded["details"]["ignored_cancel_calls"], 0, "{unloaded}");
    assert!(host.log().contains("stream cancelled"), "the plugin never saw its cancel flag");

    // The client's stream ends cut off (no final chunk): the plugin answered `cancelled`
    // after the stream began, so the body is aborted.
    let ended = stream.done.join().unwrap();
    assert!(ended.is_err(), "the stream ended as if complete: {ended:?}");
    // The new generation serves.
    assert_eq!(host.post("/api/plugins/slow/sleep", "1"), (200, "slept 1".to_string()));
}

#[test]
fn a_streamed_call_that_ignores_cancellation_pins_the_old_generation() {
    let host = Host::start_with(&["--drain-timeout-ms", "200", "--control-timeout-ms", "1000"]);
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("slow", "running");
    let stream = open_stream(&host, "stream-ignore", "600000");
    stream.wait_started(&host);

    swap_in_a_new_build(&host);
    let p = host.plugin("slow");
    let old = &p["history"][0];
    assert_eq!(old["reason"], "swapped", "{p}");
    assert_eq!(old["residency"], "pinned", "a thread still runs its code: {p}");
    assert_eq!(old["abandoned_calls"], 1, "{p}");
    assert_eq!(old["cancelled_calls"], 0, "{p}");
    assert_eq!(old["ignored_cancel_calls"], 1, "{p}");
    let pinned = event(&host, "slow", "pinned");
    assert_eq!(pinned["details"]["ignored_cancel_calls"], 1, "{pinned}");
    assert_eq!(pinned["details"]["residency"], "pinned", "{pinned}");

    // The host gave the client its final answer although the plugin never returned: the
    // body is cut off, and nothing the plugin sends afterwards reaches it.
    let ended = stream.done.join().unwrap();
    assert!(ended.is_err(), "the stream ended as if complete: {ended:?}");
    assert_eq!(host.post("/api/plugins/slow/sleep", "1"), (200, "slept 1".to_string()));
}

#[test]
fn stopping_a_plugin_cancels_its_running_call_at_the_drain_deadline() {
    let host = Host::start_with(&["--drain-timeout-ms", "200"]);
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("slow", "running");
    let stream = open_stream(&host, "stream", "600000");
    stream.wait_started(&host);

    let (status, v) = host.post_json("/api/core/plugins/slow/stop", "");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "stopped", "{v}");
    let stopped = event(&host, "slow", "stopped");
    assert_eq!(stopped["details"]["abandoned_calls"], 1, "{stopped}");
    assert_eq!(stopped["details"]["cancelled_calls"], 1, "{stopped}");
    assert_eq!(stopped["details"]["ignored_cancel_calls"], 0, "{stopped}");
    let p = host.plugin("slow");
    assert_eq!(p["history"][0]["cancelled_calls"], 1, "{p}");
    assert!(p["history"][0]["residency"].is_null(), "still loaded: {p}");
    let ended = stream.done.join().unwrap();
    assert!(ended.is_err(), "the stream ended as if complete: {ended:?}");

    assert_eq!(host.post_json("/api/core/plugins/slow/start", "").0, 200);
    assert_eq!(host.post("/api/plugins/slow/sleep", "1"), (200, "slept 1".to_string()));
}

#[test]
fn a_config_apply_that_timed_out_is_not_applied_later() {
    let host = Host::start_with(&["--control-timeout-ms", "1000"]);
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("slow", "running");
    let (status, v) = host.post_json("/api/core/plugins/slow/config", r#"{"label": "a"}"#);
    assert_eq!(status, 200, "{v}");

    // The plugin takes 3 s to apply this one; the host gives up after 1 s. (The fixture
    // applies a config at start, so the host also asks for a start, queued behind it.)
    let (status, v) =
        host.post_json("/api/core/plugins/slow/config", r#"{"label": "b", "delay_ms": 3000}"#);
    assert_eq!(status, 409, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("did not answer within 1000 ms"), "{message}");
    // The plugin finishes it late (its own log line says so).
    host.wait_for("the plugin to finish the late apply", || {
        host.log().lines().any(|l| l.contains("configure done") && l.contains("delay_ms"))
    });
    let (_, stored) = host.get_json("/api/core/plugins/slow/config");
    assert_eq!(stored["version"], 1, "{stored}");
    assert_eq!(stored["config"]["label"], "a", "{stored}");

    if host.state("slow") != "running" {
        let (status, v) = host.post_json("/api/core/plugins/slow/start", "");
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = host.post_json("/api/plugins/slow/starts", "");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["config"]["label"], "a", "the plugin runs a config the store does not hold: {v}");
    // Started at load, at the restart for config "a", and once more now: the start that
    // timed out in its queue was never run.
    assert_eq!(v["starts"], 3, "{v}");
    assert!(host.log().contains("the stored config was re-applied over it"));
}

#[test]
fn a_config_apply_that_timed_out_with_nothing_stored_stops_the_plugin() {
    let host = Host::start_with(&["--control-timeout-ms", "1000", "--drain-timeout-ms", "200"]);
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("slow", "running");
    let (status, v) =
        host.post_json("/api/core/plugins/slow/config", r#"{"label": "b", "delay_ms": 3000}"#);
    assert_eq!(status, 409, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("no earlier config is stored to restore"), "{message}");
    let p = host.plugin("slow");
    assert_eq!(p["state"], "failed", "{p}");
    assert_eq!(p["last_error"]["message"], message, "{p}");
    // It serves nothing with the config the store does not hold.
    let (status, v) = host.post_json("/api/plugins/slow/starts", "");
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "plugin_stopped", "{v}");
    assert_eq!(host.get_json("/api/core/plugins/slow/config").1["version"], 0);
}

#[test]
fn a_panic_in_the_plugins_drop_does_not_end_the_host() {
    let host = Host::start();
    host.install(&fixture("panicky"), &lib_name("panicky"));
    host.wait_state("panicky", "running");
    assert_eq!(host.post("/api/plugins/panicky/arm-drop-panic", ""), (200, "armed".to_string()));

    host.remove(&lib_name("panicky"));
    host.wait_state("panicky", "unloaded");
    let p = host.plugin("panicky");
    // Backtraces on or off (the host inherits RUST_BACKTRACE), the SDK's panic hook leaves
    // nothing mapped (panics.rs).
    assert_eq!(p["history"][0]["residency"], "unloaded", "{p}");
    assert!(host.log().contains("panicked in Drop on purpose"), "the drop never ran");
    assert_eq!(host.get("/healthz").0, 200);
    // And the host still loads and serves plugins.
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    assert_eq!(host.post("/api/plugins/echo/echo", "alive"), (200, "alive".to_string()));
}

#[test]
fn the_queue_bounds_request_bytes_not_only_calls() {
    let host = Host::start_with(&["--queue-bytes", "1000000", "--drain-timeout-ms", "200"]);
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("slow", "running");
    // 300 kB that the fixture reads as "sleep 1 ms".
    let big = format!("1{}", " ".repeat(299_999));
    let in_flight = |n: u64| host.plugin("slow")["calls"]["in_flight"] == n;
    std::thread::scope(|s| {
        // The fixture takes one call at a time: this one holds the worker.
        let running = s.spawn(|| host.post("/api/plugins/slow/sleep", "600000"));
        host.wait_for("the first call to run", || in_flight(1));
        let queued: Vec<_> =
            (0..3).map(|_| s.spawn(|| host.post("/api/plugins/slow/sleep", &big))).collect();
        host.wait_for("three big bodies to queue", || in_flight(4));
        let (status, v) = host.post_json("/api/plugins/slow/sleep", &big);
        assert_eq!(status, 503, "{v}");
        assert_eq!(v["error"]["code"], "busy", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("the queue's byte limit of 1000000 bytes (--queue-bytes)"),
            "{message}"
        );
        // The limit is on bytes: a small body still fits.
        let small = s.spawn(|| host.post("/api/plugins/slow/sleep", "1"));
        host.wait_for("the small body to queue", || in_flight(5));

        // Stopping cancels them all at the drain deadline; none reaches 200.
        assert_eq!(host.post_json("/api/core/plugins/slow/stop", "").0, 200);
        for call in queued.into_iter().chain([running, small]) {
            let (status, body) = call.join().unwrap();
            assert_ne!(status, 200, "{body}");
        }
    });
    let stopped = event(&host, "slow", "stopped");
    assert_eq!(stopped["details"]["cancelled_calls"], 5, "{stopped}");
    assert_eq!(host.plugin("slow")["calls"]["rejected"], 1);

    // The bytes were given back: a big body goes through again.
    assert_eq!(host.post_json("/api/core/plugins/slow/start", "").0, 200);
    assert_eq!(host.post("/api/plugins/slow/sleep", &big), (200, "slept 1".to_string()));
}
