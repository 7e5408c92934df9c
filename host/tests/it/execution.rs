use crate::support::{fixture, lib_name, Host};

#[test]
fn a_panicking_call_is_a_500_and_nothing_else_is_affected() {
    let host = Host::start();
    host.install(&fixture("panicky"), &lib_name("panicky"));
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("panicky", "running");
    host.wait_state("echo", "running");

    for _ in 0..3 {
        let (status, v) = host.post_json("/api/plugins/panicky/boom", "");
        assert_eq!(status, 500, "{v}");
        assert_eq!(v["error"]["code"], "plugin_panicked");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("boom: the fixture panicked on purpose"),
            "{v}"
        );
    }
    assert_eq!(host.post("/api/plugins/panicky/ok", ""), (200, "ok".to_string()));
    assert_eq!(host.post("/api/plugins/echo/echo", "still here"), (200, "still here".to_string()));
    assert_eq!(host.state("panicky"), "running");
    let p = host.plugin("panicky");
    assert_eq!(p["calls"]["errors"], 3, "{p}");
}

#[test]
fn a_slow_call_times_out_with_504_while_the_host_stays_responsive() {
    // The timeout leaves ample time to see the slow call in flight (polled every 10 ms).
    let host = Host::start_with(&["--call-timeout-ms", "2000"]);
    host.install(&fixture("slow"), &lib_name("slow"));
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("slow", "running");
    host.wait_state("echo", "running");

    std::thread::scope(|s| {
        let slow = s.spawn(|| host.post_json("/api/plugins/slow/sleep", "60000"));
        // Probe only once the slow call is really running: before that, answers prove nothing.
        host.wait_for("the slow call to be in flight", || {
            host.plugin("slow")["calls"]["in_flight"] == 1
        });
        // While the slow call waits, the host and other plugins answer.
        for _ in 0..20 {
            assert_eq!(host.get("/healthz").0, 200);
            assert_eq!(host.post("/api/plugins/echo/echo", "x"), (200, "x".to_string()));
        }
        let (status, v) = slow.join().unwrap();
        assert_eq!(status, 504, "{v}");
        assert_eq!(v["error"]["code"], "timeout");
    });
    // The timeout cancelled the call: the plugin saw it and returned early.
    host.wait_for("the slow plugin to notice the cancellation", || {
        host.log().contains("sleep cancelled")
    });
    assert_eq!(host.post("/api/plugins/slow/sleep", "10"), (200, "slept 10".to_string()));
}

#[test]
fn a_full_queue_answers_503() {
    let host = Host::start_with(&["--queue-depth", "1", "--call-timeout-ms", "5000"]);
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("slow", "running");
    std::thread::scope(|s| {
        // One call runs (the slow fixture takes one at a time), one waits in the queue.
        let running = s.spawn(|| host.post("/api/plugins/slow/sleep", "1500"));
        host.wait_for("the first call to run", || host.plugin("slow")["calls"]["in_flight"] == 1);
        let queued = s.spawn(|| host.post("/api/plugins/slow/sleep", "1"));
        host.wait_for("the second call to queue", || {
            host.plugin("slow")["calls"]["in_flight"] == 2
        });
        let (status, v) = host.post_json("/api/plugins/slow/sleep", "1");
        assert_eq!(status, 503, "{v}");
        assert_eq!(v["error"]["code"], "busy");
        assert_eq!(running.join().unwrap().0, 200);
        assert_eq!(queued.join().unwrap().0, 200);
    });
    assert_eq!(host.plugin("slow")["calls"]["rejected"], 1);
}

#[test]
fn streaming_routes_prefixes_and_the_bus() {
    streaming_routes_prefixes_and_the_bus_in("in_process");
}

/// The same across the child process boundary: streaming, routes, bus calls (into another
/// child and back into the caller's own child), status, data dir and log callbacks.
#[test]
fn streaming_routes_prefixes_and_the_bus_in_process_mode() {
    streaming_routes_prefixes_and_the_bus_in("process");
}

fn streaming_routes_prefixes_and_the_bus_in(mode: &str) {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.install(&fixture("panicky"), &lib_name("panicky"));
    host.wait_state("echo", "running");
    host.wait_state("panicky", "running");
    host.in_mode(mode, &["echo", "panicky"]);

    assert_eq!(host.post("/api/plugins/echo/count", "3"), (200, "1\n2\n3\ndone\n".to_string()));
    let (status, v) = host.post_json("/api/plugins/echo/count", "not a number");
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("bad_request")));

    assert_eq!(
        host.get("/api/plugins/echo/admin/info"),
        (200, "echo 1.0.0 route GET /info ?".to_string())
    );
    assert_eq!(host.get("/api/plugins/echo/admin/nope").0, 404);
    assert_eq!(
        host.get("/x-echo/a/b?q=1"),
        (200, "echo 1.0.0 route GET /x-echo/a/b ?q=1".to_string())
    );
    assert_eq!(host.get("/x-echoes").0, 404);
    let (status, v) = host.post_json("/api/plugins/echo/missing", "");
    assert_eq!(status, 404);
    assert!(v["error"]["message"].as_str().unwrap().contains("no capability 'missing'"), "{v}");

    // Plugin-to-plugin calls through the host's bus.
    assert_eq!(host.post("/api/plugins/echo/relay", "panicky ok"), (200, "ok".to_string()));
    let (status, v) = host.post_json("/api/plugins/echo/relay", "panicky boom");
    assert_eq!(status, 500, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("panicked"), "{v}");
    // A streamed answer crosses the bus chunk by chunk; the caller may stop it.
    assert_eq!(
        host.post("/api/plugins/echo/relay-stream", "echo count 3 10"),
        (200, "chunks 1,2,3; tail done".to_string())
    );
    let (status, text) = host.post("/api/plugins/echo/relay-stream", "echo count 100000 2");
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("stopped after 2: 1,2;"), "{text}");
    // A callee that does not stream answers whole.
    assert_eq!(
        host.post("/api/plugins/echo/relay-stream", "echo echo hi 5"),
        (200, "chunks ; tail hi".to_string())
    );
    let (status, v) = host.post_json("/api/plugins/echo/relay", "ghost ping");
    assert_eq!(status, 404, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("'ghost' is not loaded"), "{v}");

    // The plugin's own status report.
    let (status, v) = host.get_json("/api/core/plugins/echo/status");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], serde_json::json!({ "version": "1.0.0", "healthy": true }));
    assert!(host.get_json("/api/core/plugins/panicky/status").1["status"].is_null());
    assert_eq!(host.get("/api/core/plugins/ghost/status").0, 404);

    // The data dir exists and belongs to the plugin.
    let (_, dir) = host.post("/api/plugins/echo/datadir", "");
    assert!(std::path::Path::new(&dir).is_dir(), "{dir}");
    assert!(dir.ends_with("plugin-data/echo"), "{dir}");

    // Log lines from the plugin reach the host's log under the plugin's id.
    assert_eq!(host.post("/api/plugins/echo/log", "hello from the plugin").0, 200);
    host.wait_for("the plugin log line", || host.log().contains("hello from the plugin"));
}

#[test]
fn a_client_that_goes_away_cancels_its_call() {
    let host = Host::start();
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("slow", "running");
    // The client gives up after 200 ms; the host's own timeout (30 s) is far away.
    let impatient =
        ureq::AgentBuilder::new().timeout(std::time::Duration::from_millis(200)).build();
    let result = impatient
        .post(&format!("{}/api/plugins/slow/sleep", host.base))
        .set("Authorization", &format!("Bearer {}", crate::support::ADMIN_KEY))
        .send_string("20000");
    assert!(
        matches!(result, Err(ureq::Error::Transport(_))),
        "the client should have timed out: {result:?}"
    );
    host.wait_for("the plugin to see the cancellation", || host.log().contains("sleep cancelled"));
    // The worker is free again: the next call runs at once (the fixture takes one at a time).
    assert_eq!(host.post("/api/plugins/slow/sleep", "1"), (200, "slept 1".to_string()));
}

#[test]
fn a_plugin_stuck_in_start_is_abandoned_without_stalling_the_host() {
    let host = Host::start_with(&["--control-timeout-ms", "500", "--drain-timeout-ms", "200"]);
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("slow", "running");

    // This config makes the fixture's start() loop forever; the plugin restarts to apply it.
    let (status, v) = host.post_json("/api/core/plugins/slow/config", r#"{"label": "hang-start"}"#);
    assert_eq!(status, 409, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("did not answer within 500 ms"), "{message}");
    assert_eq!(host.state("slow"), "failed");
    // Not stored: the next load would not hang.
    assert_eq!(host.get_json("/api/core/plugins/slow/config").1["version"], 0);

    // The host and its registry go on.
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    host.remove(&lib_name("slow"));
    host.wait_state("slow", "unloaded");
    let p = host.plugin("slow");
    assert_eq!(p["history"][0]["residency"], "pinned", "a stuck library cannot be unloaded: {p}");
    host.install(&fixture("echo-v2"), &lib_name("echo"));
    host.wait_for("v2", || host.plugin("echo")["version"] == "2.0.0");
    assert_eq!(host.post("/api/plugins/echo/echo", "alive"), (200, "alive".to_string()));
    assert!(host.log().contains("a plugin thread did not stop"));
}
