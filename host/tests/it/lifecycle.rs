use crate::support::{author_guide_example, fixture, lib_name, Host};

#[test]
fn copied_plugin_is_served_and_deleting_it_unloads_the_library() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");

    let p = host.plugin("echo");
    assert_eq!(p["version"], "1.0.0");
    assert_eq!(p["generation"], 1);
    assert!(p["file"].as_str().unwrap().ends_with(&lib_name("echo")));
    let caps: Vec<&str> =
        p["capabilities"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(caps.contains(&"echo") && caps.contains(&"count"), "{caps:?}");

    let (status, body) = host.post("/api/plugins/echo/echo", r#"{"hello":"world"}"#);
    assert_eq!((status, body.as_str()), (200, r#"{"hello":"world"}"#));
    let (_, list) = host.get_json("/api/core/plugins");
    assert_eq!(list["plugins"].as_array().unwrap().len(), 1);

    host.remove(&lib_name("echo"));
    host.wait_state("echo", "unloaded");
    let p = host.plugin("echo");
    let history = p["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["reason"], "removed");
    assert_eq!(history[0]["residency"], "unloaded", "the library must have left memory: {p}");
    let (status, body) = host.post("/api/plugins/echo/echo", "x");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not loaded"), "{body}");
    let (_, list) = host.get_json("/api/core/plugins");
    assert!(list["plugins"].as_array().unwrap().is_empty(), "{list}");
    let (_, all) = host.get_json("/api/core/plugins?all=true");
    assert_eq!(all["plugins"].as_array().unwrap().len(), 1);

    // The shadow copy is gone from /proc/<pid>/maps too.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", host.pid())).unwrap();
    assert!(!maps.contains("fixture_echo") && !maps.contains("/shadow/echo-"), "still mapped");
}

#[test]
fn stop_start_restart_through_the_api() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");

    let (status, v) = host.post_json("/api/core/plugins/echo/stop", "");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "stopped");
    let (status, v) = host.post_json("/api/plugins/echo/echo", "hi");
    assert_eq!(status, 409);
    assert_eq!(v["error"]["code"], "plugin_stopped");
    assert!(v["error"]["message"].as_str().unwrap().contains("is stopped"), "{v}");

    let (status, v) = host.post_json("/api/core/plugins/echo/start", "");
    assert_eq!((status, v["state"].as_str()), (200, Some("running")));
    assert_eq!(host.post("/api/plugins/echo/echo", "hi"), (200, "hi".to_string()));

    let (status, v) = host.post_json("/api/core/plugins/echo/restart", "");
    assert_eq!((status, v["state"].as_str()), (200, Some("running")));
    assert_eq!(host.post("/api/plugins/echo/echo", "again"), (200, "again".to_string()));

    let (status, v) = host.post_json("/api/core/plugins/nope/start", "");
    assert_eq!(status, 404);
    assert!(v["error"]["message"].as_str().unwrap().contains("'nope'"), "{v}");
    let (status, _) = host.post_json("/api/core/plugins/echo/explode", "");
    assert_eq!(status, 404);
}

#[test]
fn plugin_threads_are_joined_so_the_library_unloads_and_a_leaked_thread_is_reported_pinned() {
    let host = Host::start();
    host.install(&fixture("threaded"), &lib_name("threaded"));
    host.wait_state("threaded", "running");
    let ticks = |h: &Host| h.post("/api/plugins/threaded/ticks", "").1.parse::<u64>().unwrap();
    let first = ticks(&host);
    host.wait_for("the ticker thread to tick", || ticks(&host) > first);

    // Stop joins the ticker: the count no longer moves.
    assert_eq!(host.post_json("/api/core/plugins/threaded/stop", "").0, 200);
    assert_eq!(host.post_json("/api/core/plugins/threaded/start", "").0, 200);
    host.remove(&lib_name("threaded"));
    host.wait_state("threaded", "unloaded");
    assert_eq!(host.plugin("threaded")["history"][0]["residency"], "unloaded");

    // A plugin that leaks a thread cannot leave memory; the host says so.
    host.install(&fixture("threaded"), &lib_name("threaded"));
    host.wait_state("threaded", "running");
    assert_eq!(host.post("/api/plugins/threaded/leak", "").0, 200);
    host.remove(&lib_name("threaded"));
    host.wait_state("threaded", "unloaded");
    let p = host.plugin("threaded");
    assert_eq!(p["history"][1]["residency"], "pinned", "{p}");
    // The host keeps serving after that.
    assert_eq!(host.get("/healthz").0, 200);
}

#[test]
fn sigterm_drains_stops_and_unloads_every_plugin() {
    let host = Host::start();
    host.install(&fixture("threaded"), &lib_name("threaded"));
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("threaded", "running");
    host.wait_state("echo", "running");
    let (status, log) = host.terminate();
    assert!(status.success(), "exit status {status:?}\n{log}");
    assert_eq!(log.matches("plugin generation retired").count(), 2, "{log}");
    assert!(log.contains("bkg stopped"), "{log}");
}

#[test]
fn the_plugin_from_the_author_guide_loads_and_answers() {
    let host = Host::start();
    host.install(&author_guide_example(), &lib_name("hello"));
    host.wait_state("hello", "running");
    assert_eq!(host.post("/api/plugins/hello/greet", "world"), (200, "hello, world".to_string()));
    host.wait_for("its log line", || host.log().contains("greeting someone"));
}

/// A card's uptime counts from `started_at_ms`: set at load, cleared by a stop, renewed by a
/// start and by a restart.
#[test]
fn started_at_follows_stop_start_and_restart() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    let started = |host: &Host| host.plugin("echo")["started_at_ms"].as_u64();
    let at_load = started(&host).expect("started_at_ms after the load");
    assert!(at_load >= host.plugin("echo")["loaded_at_ms"].as_u64().unwrap());
    assert_eq!(host.post("/api/core/plugins/echo/stop", "").0, 200);
    assert_eq!(started(&host), None, "a stopped plugin has no start time");
    let before_start = crate::support::now_ms();
    assert_eq!(host.post("/api/core/plugins/echo/start", "").0, 200);
    let at_start = started(&host).expect("started_at_ms after a start");
    assert!(at_start >= before_start, "{at_start} < {before_start}");
    let before_restart = crate::support::now_ms();
    assert_eq!(host.post("/api/core/plugins/echo/restart", "").0, 200);
    let at_restart = started(&host).expect("started_at_ms after a restart");
    assert!(at_restart >= before_restart && at_restart >= at_start);
}
