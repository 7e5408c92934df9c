//! The operator's side of crash isolation: `POST /api/core/plugins/{id}/isolation`, its
//! scope, its errors, the event, the plugin view and the mode's persistence.

use serde_json::{json, Value};

use crate::support::{fixture, lib_name, start_with_apikeys, Host, ADMIN_KEY};

const ECHO_ISOLATION: &str = "/api/core/plugins/echo/isolation";

fn create_key(host: &Host, scopes: &[&str]) -> (String, String) {
    let body = json!({ "name": format!("isolation {scopes:?}"), "scopes": scopes });
    let (status, v) = host.post_json("/api/plugins/apikeys/create", &body.to_string());
    assert_eq!(status, 201, "{v}");
    (v["id"].as_str().unwrap().to_string(), v["key"].as_str().unwrap().to_string())
}

fn isolation_events(host: &Host, id: &str) -> Vec<Value> {
    let (status, v) = host.get_json(&format!("/api/core/events?plugin={id}&limit=1000"));
    assert_eq!(status, 200, "{v}");
    v["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "isolation").cloned().collect()
}

fn error_of(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let code = v["error"]["code"].as_str().unwrap_or_else(|| panic!("no code: {body}"));
    let message = v["error"]["message"].as_str().unwrap_or_else(|| panic!("no message: {body}"));
    (code.to_string(), message.to_string())
}

#[test]
fn isolation_switch_needs_the_admin_scope() {
    let host = start_with_apikeys();
    let body = r#"{"mode":"process"}"#;
    assert_eq!(host.post_as(ECHO_ISOLATION, body, "").0, 401, "no key");
    assert_eq!(host.post_as(ECHO_ISOLATION, body, "not-a-key-0123456789").0, 401, "unknown key");
    for scope in ["read", "invoke"] {
        let (_, key) = create_key(&host, &[scope]);
        let (status, answer) = host.post_as(ECHO_ISOLATION, body, &key);
        assert_eq!(status, 403, "a {scope} key switched the mode: {answer}");
    }
    // Nothing was switched or logged by the refused requests.
    assert_eq!(host.plugin("echo")["isolation"], "in_process");
    assert!(isolation_events(&host, "echo").is_empty());

    // An admin key may: the same mode again answers the view and changes nothing.
    let (_, admin) = create_key(&host, &["admin"]);
    let (status, answer) = host.post_as(ECHO_ISOLATION, r#"{"mode":"in_process"}"#, &admin);
    assert_eq!(status, 200, "{answer}");
    let view: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(view["id"], "echo");
    assert_eq!(view["isolation"], "in_process");
    assert!(view["process"].is_null(), "no child in in_process mode: {view}");
    assert!(isolation_events(&host, "echo").is_empty(), "an unchanged mode is no event");
}

#[test]
fn isolation_switch_refuses_bad_bodies_and_unknown_plugins_naming_what_is_wrong() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");

    let cases: &[(&str, &str, &str)] = &[
        (r#"{"mode":"sandbox"}"#, "invalid_isolation", "unknown isolation mode \"sandbox\""),
        (r#"{"mode":"PROCESS"}"#, "invalid_isolation", "unknown isolation mode \"PROCESS\""),
        (r#"{"mode":1}"#, "invalid_isolation", "\"mode\" is a number, not a string"),
        (r#"{}"#, "invalid_isolation", "the field \"mode\" is missing"),
        (r#"{"mode":"process","memory":1}"#, "invalid_isolation", "unknown field \"memory\""),
        (r#""process""#, "invalid_isolation", "not a string"),
        (r#"{"mode":"#, "bad_request", "malformed JSON"),
        ("", "bad_request", "malformed JSON"),
    ];
    for (body, code, needle) in cases {
        let (status, answer) = host.post_as(ECHO_ISOLATION, body, ADMIN_KEY);
        assert_eq!(status, 400, "{body:?}: {answer}");
        let (got_code, message) = error_of(&answer);
        assert_eq!(got_code, *code, "{body:?}: {answer}");
        assert!(message.contains(needle), "{body:?}: {message:?} does not say {needle:?}");
    }
    // The bad requests changed nothing.
    assert_eq!(host.plugin("echo")["isolation"], "in_process");
    assert!(isolation_events(&host, "echo").is_empty());

    let (status, answer) =
        host.post_as("/api/core/plugins/nosuch/isolation", r#"{"mode":"process"}"#, ADMIN_KEY);
    assert_eq!(status, 404, "{answer}");
    let (code, message) = error_of(&answer);
    assert_eq!(code, "not_found");
    assert!(message.contains("'nosuch'"), "{message}");
}

#[test]
fn isolation_mode_is_an_event_shown_in_the_view_and_survives_a_restart() {
    let host = start_with_apikeys();
    let (key_id, admin) = create_key(&host, &["admin"]);
    assert_eq!(host.plugin("echo")["isolation"], "in_process", "the default");

    let (status, answer) = host.post_as(ECHO_ISOLATION, r#"{"mode":"process"}"#, &admin);
    assert_eq!(status, 200, "{answer}");
    let view: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(view["id"], "echo");
    assert_eq!(view["isolation"], "process", "{view}");
    assert_eq!(host.plugin("echo")["isolation"], "process");
    let events = isolation_events(&host, "echo");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["details"], json!({"from": "in_process", "to": "process"}));
    assert_eq!(events[0]["actor"], format!("key:{key_id}"));
    // It serves in the new mode.
    host.wait_state("echo", "running");
    assert_eq!(host.post("/api/plugins/echo/echo", "hi"), (200, "hi".to_string()));

    // The store keeps the mode: the restarted host loads echo in process mode again.
    let host = host.restart(&[]);
    host.wait_state("echo", "running");
    assert_eq!(host.plugin("echo")["isolation"], "process");
    assert_eq!(host.post("/api/plugins/echo/echo", "again"), (200, "again".to_string()));

    // And back.
    let view = set_mode(&host, "echo", "in_process");
    assert_eq!(view["isolation"], "in_process");
    let events = isolation_events(&host, "echo");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["details"], json!({"from": "process", "to": "in_process"}));
    assert_eq!(events[0]["actor"], "key:bootstrap");
    let host = host.restart(&[]);
    host.wait_state("echo", "running");
    assert_eq!(host.plugin("echo")["isolation"], "in_process");
    assert!(host.plugin("echo")["process"].is_null());
}

#[test]
fn isolation_of_an_unloaded_plugin_is_kept_for_its_next_load() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    host.remove(&lib_name("echo"));
    host.wait_state("echo", "unloaded");

    let view = set_mode(&host, "echo", "process");
    assert_eq!(view["state"], "unloaded", "switching an unloaded plugin loads nothing: {view}");
    assert_eq!(view["isolation"], "process");
    let events = isolation_events(&host, "echo");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["details"], json!({"from": "in_process", "to": "process"}));

    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    assert_eq!(host.plugin("echo")["isolation"], "process");
    assert_eq!(host.post("/api/plugins/echo/echo", "back"), (200, "back".to_string()));
}

/// `POST .../isolation` with the bootstrap key; asserts a 200 and returns the view.
fn set_mode(host: &Host, id: &str, mode: &str) -> Value {
    let (status, v) = host.post_json(
        &format!("/api/core/plugins/{id}/isolation"),
        &json!({ "mode": mode }).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    v
}

// Limits per plugin in process mode (`"limits"` in the body).

/// The pid the plugin view shows for `id`'s child, if one runs.
fn child_pid(host: &Host, id: &str) -> Option<u64> {
    host.plugin(id)["process"]["pid"].as_u64()
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

/// The soft and hard values of one line of `/proc/<pid>/limits` ("Max open files").
fn proc_limit(pid: u64, name: &str) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/limits: {e}"));
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name:?} in /proc/{pid}/limits:\n{text}"));
    let mut values = line[name.len()..].split_whitespace();
    (values.next().unwrap().to_string(), values.next().unwrap().to_string())
}

/// `POST .../isolation` with `body` (JSON); asserts a 200 and returns the view.
fn set_isolation_body(host: &Host, id: &str, body: Value) -> Value {
    let (status, v) =
        host.post_json(&format!("/api/core/plugins/{id}/isolation"), &body.to_string());
    assert_eq!(status, 200, "{body}: {v}");
    v
}

/// Wait until `id` serves from a child other than `old` and return its pid.
fn wait_new_child(host: &Host, id: &str, old: Option<u64>) -> u64 {
    let pid = std::cell::Cell::new(None);
    host.wait_for(&format!("{id} to serve from a new child"), || {
        let p = host.plugin(id);
        pid.set(p["process"]["pid"].as_u64().filter(|p| Some(*p) != old));
        pid.get().is_some() && p["state"] == "running"
    });
    pid.get().unwrap()
}

#[test]
fn bad_limits_are_a_400_naming_the_field_and_why_and_change_nothing() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    let cases: &[(&str, &str)] = &[
        (r#"{"mode":"process","limits":{"memory_mb":-1}}"#, "limits.memory_mb must be"),
        (r#"{"mode":"process","limits":{"memory_mb":1}}"#, "from 64 to"),
        (r#"{"mode":"process","limits":{"open_files":"many"}}"#, "limits.open_files"),
        (r#"{"mode":"process","limits":{"processes":0}}"#, "limits.processes"),
        (r#"{"mode":"process","limits":{"call_deadline_ms":1.5}}"#, "limits.call_deadline_ms"),
        (r#"{"mode":"process","limits":{"memory":512}}"#, "unknown limit \"memory\""),
        (r#"{"mode":"process","limits":[512]}"#, "\"limits\" is an array"),
        (r#"{"limits":{"memory_mb":512}}"#, "the field \"mode\" is missing"),
    ];
    for (body, needle) in cases {
        let (status, answer) = host.post_as(ECHO_ISOLATION, body, ADMIN_KEY);
        assert_eq!(status, 400, "{body}: {answer}");
        let (code, message) = error_of(&answer);
        assert_eq!(code, "invalid_isolation", "{body}: {answer}");
        assert!(message.contains(needle), "{body}: {message:?} does not say {needle:?}");
    }
    let p = host.plugin("echo");
    assert_eq!(p["isolation"], "in_process", "{p}");
    assert_eq!(p["isolation_limits"]["memory_mb"]["source"], "host", "{p}");
    assert!(isolation_events(&host, "echo").is_empty());
}

#[test]
fn per_plugin_limits_reach_the_child_are_shown_with_their_source_and_survive_a_restart() {
    let host = Host::start_with(&["--process-max-open-files", "512"]);
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    let limits = json!({"memory_mb": 1024, "open_files": 256, "call_deadline_ms": 30000});
    let view = set_isolation_body(&host, "echo", json!({"mode": "process", "limits": limits}));
    let l = &view["isolation_limits"];
    assert_eq!(l["memory_mb"], json!({"value": 1024, "source": "operator"}), "{view}");
    assert_eq!(l["open_files"], json!({"value": 256, "source": "operator"}), "{view}");
    assert_eq!(l["processes"], json!({"value": null, "source": "host"}), "{view}");
    assert_eq!(l["call_deadline_ms"], json!({"value": 30000, "source": "operator"}), "{view}");
    let pid = wait_new_child(&host, "echo", None);
    assert_eq!(proc_limit(pid, "Max address space"), ("1073741824".into(), "1073741824".into()));
    assert_eq!(proc_limit(pid, "Max open files"), ("256".into(), "256".into()));

    // A change on the running plugin is a swap to a child with the new limits, under load.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let new_pid = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match host.post("/api/plugins/echo/echo", "x") {
                    (200, got) if got == "x" => ok += 1,
                    (status, got) => failed.push(format!("{status}: {got}")),
                }
            }
            (ok, failed)
        });
        let _stop = crate::support::StopOnDrop(&stop);
        let view = set_isolation_body(
            &host,
            "echo",
            json!({"mode": "process", "limits": {"open_files": 300, "processes": 2000}}),
        );
        assert_eq!(view["isolation_limits"]["memory_mb"]["source"], "host", "{view}");
        let new_pid = wait_new_child(&host, "echo", Some(pid));
        host.wait_for("the old child to end", || process_gone(pid));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (ok, failed) = client.join().unwrap();
        assert!(failed.is_empty(), "{} of {} calls failed: {:?}", failed.len(), ok, failed.first());
        assert!(ok > 0, "the client made no call");
        new_pid
    });
    assert_eq!(proc_limit(new_pid, "Max open files"), ("300".into(), "300".into()));
    assert_eq!(proc_limit(new_pid, "Max processes"), ("2000".into(), "2000".into()));
    assert_eq!(proc_limit(new_pid, "Max address space").0, "unlimited");
    let events = isolation_events(&host, "echo");
    assert_eq!(events[0]["details"]["limits"]["open_files"], 300, "{events:?}");

    // Null is the host's default (--process-max-open-files 512), and the setting is stored.
    set_isolation_body(&host, "echo", json!({"mode": "process", "limits": {"open_files": null}}));
    let pid = wait_new_child(&host, "echo", Some(new_pid));
    assert_eq!(proc_limit(pid, "Max open files"), ("512".into(), "512".into()));
    set_isolation_body(&host, "echo", json!({"mode": "process", "limits": {"open_files": 128}}));
    let pid = wait_new_child(&host, "echo", Some(pid));
    let host = host.restart(&["--process-max-open-files", "512"]);
    host.wait_state("echo", "running");
    let p = host.plugin("echo");
    assert_eq!(p["isolation_limits"]["open_files"], json!({"value": 128, "source": "operator"}));
    let after = wait_new_child(&host, "echo", Some(pid));
    assert_eq!(proc_limit(after, "Max open files"), ("128".into(), "128".into()));
    // Without "limits" a mode switch keeps them.
    set_isolation_body(&host, "echo", json!({"mode": "in_process"}));
    let p = host.plugin("echo");
    assert_eq!(p["isolation_limits"]["open_files"]["value"], 128, "{p}");
}

#[test]
fn an_allocation_past_a_plugins_memory_limit_crashes_only_that_plugin() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.install(&crate::support::crashy_fixture(), &lib_name("crashy"));
    host.wait_state("echo", "running");
    host.wait_state("crashy", "running");
    // Both in children; only crashy's has a memory limit.
    host.isolate("echo", "process");
    let view = set_isolation_body(
        &host,
        "crashy",
        json!({"mode": "process", "limits": {"memory_mb": 2048}}),
    );
    assert_eq!(view["isolation_limits"]["memory_mb"]["value"], 2048, "{view}");
    let crashy = wait_new_child(&host, "crashy", None);
    let echo = child_pid(&host, "echo").unwrap();
    assert_eq!(proc_limit(echo, "Max address space").0, "unlimited");
    // 8 GiB of 64 MiB blocks: past 2 GiB an allocation fails and the child aborts. Without
    // the limit the fixture would stop at 8 GiB and answer 500.
    let (status, v) = host.post_json("/api/plugins/crashy/oom", "8192");
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "plugin_crashed", "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("SIGABRT"), "{v}");
    host.wait_for("the crashed child to end", || process_gone(crashy));
    let again = wait_new_child(&host, "crashy", Some(crashy));
    assert_eq!(proc_limit(again, "Max address space").0, (2048u64 << 20).to_string());
    assert_eq!(host.post("/api/plugins/crashy/echo", "after"), (200, "after".to_string()));
    // The other plugin's child never noticed.
    assert_eq!(child_pid(&host, "echo"), Some(echo));
    assert_eq!(host.post("/api/plugins/echo/echo", "fine"), (200, "fine".to_string()));
    assert_eq!(host.plugin("echo")["process"]["restarts"], 0);
}

#[test]
fn a_call_past_its_plugins_call_deadline_is_a_504_and_the_plugin_serves_again_from_a_new_child() {
    // The host's call timeout stays 30 s; crashy's deadline is 1.5 s. `spin` ignores its
    // cancellation: after the control timeout (1 s) of grace its child is killed.
    let host = Host::start_with(&["--control-timeout-ms", "1000"]);
    host.install(&crate::support::crashy_fixture(), &lib_name("crashy"));
    host.wait_state("crashy", "running");
    set_isolation_body(
        &host,
        "crashy",
        json!({"mode": "process", "limits": {"call_deadline_ms": 1500}}),
    );
    let old = wait_new_child(&host, "crashy", None);
    let (status, v) = host.post_json("/api/plugins/crashy/spin", "");
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"]["code"], "timeout", "{v}");
    host.wait_for("the stuck child to be killed", || process_gone(old));
    let new = wait_new_child(&host, "crashy", Some(old));
    assert_eq!(host.post("/api/plugins/crashy/pid", ""), (200, new.to_string()));
    let crash = &host.plugin("crashy")["process"]["last_crash"];
    assert_eq!(crash["signal"], "SIGKILL", "{crash}");
}
