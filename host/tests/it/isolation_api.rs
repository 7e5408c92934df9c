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
