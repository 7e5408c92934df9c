//! Rough edges a new user hit in their first hour (issue 11): what the event log and the
//! plugin view say about a pinned library, who the events name as their actor, key creation
//! and revocation in the event log, an unchanged config, a plain-text log file, and what a
//! wrong bootstrap-shaped key is told.

use serde_json::{json, Value};

use crate::support::{fixture, lib_name, start_with_apikeys, Host, ADMIN_KEY};

/// The event log of one plugin (or of all, with `""`), newest first.
fn events(host: &Host, plugin: &str) -> Vec<Value> {
    let (status, v) = host.get_json(&format!("/api/core/events?plugin={plugin}&limit=1000"));
    assert_eq!(status, 200, "{v}");
    v["events"].as_array().expect("events").clone()
}

fn of_kind(events: &[Value], kind: &str) -> Vec<Value> {
    events.iter().filter(|e| e["kind"] == kind).cloned().collect()
}

/// Create a key with `creator`; returns its id and the key.
fn create_key(host: &Host, creator: &str, name: &str, scopes: &[&str]) -> (String, String) {
    let body = json!({ "name": name, "scopes": scopes }).to_string();
    let (status, text) = host.post_as("/api/plugins/apikeys/create", &body, creator);
    assert_eq!(status, 201, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    (v["id"].as_str().unwrap().to_string(), v["key"].as_str().unwrap().to_string())
}

#[test]
fn a_retired_library_that_stays_mapped_is_reported_pinned_not_unloaded() {
    let host = Host::start();
    host.install(&fixture("threaded"), &lib_name("threaded"));
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("threaded", "running");
    host.wait_state("echo", "running");
    // A thread that never ends runs the library's code: it can never be unmapped.
    assert_eq!(host.post("/api/plugins/threaded/leak", "").0, 200);
    host.remove(&lib_name("threaded"));
    host.remove(&lib_name("echo"));
    host.wait_state("threaded", "unloaded");
    host.wait_state("echo", "unloaded");

    let threaded = events(&host, "threaded");
    let pinned = of_kind(&threaded, "pinned");
    assert_eq!(pinned.len(), 1, "{threaded:?}");
    assert!(
        of_kind(&threaded, "unloaded").is_empty(),
        "a mapped library said unloaded: {threaded:?}"
    );
    let details = &pinned[0]["details"];
    assert_eq!(details["residency"], "pinned", "{details}");
    assert_eq!(details["reason"], "removed", "{details}");
    assert!(
        details["note"].as_str().is_some_and(|n| n.contains("until the host exits")),
        "the event says why and for how long: {details}"
    );
    // The view: the plugin id is gone (`unloaded`), its library is not.
    let p = host.plugin("threaded");
    assert_eq!(p["residency"], "pinned", "{p}");
    assert_eq!(p["history"][0]["residency"], "pinned", "{p}");

    // A library that left memory keeps saying `unloaded`.
    let echo = events(&host, "echo");
    assert_eq!(of_kind(&echo, "unloaded").len(), 1, "{echo:?}");
    assert!(of_kind(&echo, "pinned").is_empty(), "{echo:?}");
    assert_eq!(host.plugin("echo")["residency"], "unloaded");
    // While a generation is loaded, the view claims no residency.
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    assert!(host.plugin("echo")["residency"].is_null());
}

#[test]
fn lifecycle_events_name_the_calling_key() {
    let host = start_with_apikeys();
    let (id, key) = create_key(&host, ADMIN_KEY, "operator", &["admin"]);
    for action in ["stop", "start", "restart"] {
        let (status, body) = host.post_as(&format!("/api/core/plugins/echo/{action}"), "", &key);
        assert_eq!(status, 200, "{action}: {body}");
    }
    let echo = events(&host, "echo");
    for kind in ["stopped", "started", "restarted"] {
        let found = of_kind(&echo, kind);
        assert_eq!(found.len(), 1, "{kind}: {echo:?}");
        assert_eq!(found[0]["actor"], format!("key:{id}"), "{kind}: {echo:?}");
    }
    // The same key's config change names it the same way.
    let (status, body) =
        host.post_as("/api/core/plugins/echo/config", r#"{"greeting":"hi"}"#, &key);
    assert_eq!(status, 200, "{body}");
    let echo = events(&host, "echo");
    assert_eq!(of_kind(&echo, "config_changed")[0]["actor"], format!("key:{id}"), "{echo:?}");
    // Lifecycle calls by the bootstrap key name it.
    assert_eq!(host.post("/api/core/plugins/echo/stop", "").0, 200);
    let echo = events(&host, "echo");
    assert_eq!(of_kind(&echo, "stopped")[0]["actor"], "key:bootstrap", "{echo:?}");
}

#[test]
fn an_upload_through_the_api_names_the_key_that_uploaded_it() {
    let host = Host::start();
    let bytes = std::fs::read(fixture("echo")).unwrap();
    let (status, body) =
        host.put_bytes(&format!("/api/core/plugins/upload/{}", lib_name("echo")), &bytes);
    assert_eq!(status, 201, "{body}");
    host.wait_state("echo", "running");
    let all = events(&host, "");
    let uploaded = of_kind(&all, "uploaded");
    assert_eq!(uploaded.len(), 1, "{all:?}");
    assert_eq!(uploaded[0]["actor"], "key:bootstrap", "{all:?}");
    let details = &uploaded[0]["details"];
    assert!(details["file"].as_str().unwrap().ends_with(&lib_name("echo")), "{details}");
    assert_eq!(details["bytes"], bytes.len() as u64, "{details}");
    assert_eq!(details["sha256"].as_str().map(str::len), Some(64), "{details}");
}

#[test]
fn key_creation_and_revocation_are_in_the_event_log_without_the_key() {
    let host = start_with_apikeys();
    let (ci_id, ci_key) = create_key(&host, ADMIN_KEY, "ci", &["read", "invoke"]);
    let (ops_id, ops_key) = create_key(&host, ADMIN_KEY, "ops", &["admin"]);

    let log = events(&host, "apikeys");
    let created = of_kind(&log, "key_created");
    assert_eq!(created.len(), 2, "{log:?}");
    let ci = created.iter().find(|e| e["details"]["id"] == ci_id.as_str()).expect("ci's event");
    assert_eq!(ci["actor"], "key:bootstrap", "{ci}");
    assert_eq!(ci["plugin"], "apikeys", "{ci}");
    assert_eq!(ci["details"]["name"], "ci", "{ci}");
    assert_eq!(ci["details"]["scopes"], json!(["invoke", "read"]), "{ci}");
    // The secret is never written to the log, whole or in part.
    let all = serde_json::to_string(&events(&host, "")).unwrap();
    for key in [&ci_key, &ops_key] {
        let secret = key.rsplit('_').next().unwrap();
        assert!(!all.contains(secret), "a key's secret is in the event log");
    }

    // The second key revokes the first: the event names the revoker and the revoked key.
    let (status, body) =
        host.post_as("/api/plugins/apikeys/revoke", &json!({ "id": ci_id }).to_string(), &ops_key);
    assert_eq!(status, 200, "{body}");
    assert_eq!(host.get_as("/api/core/plugins", &ci_key).0, 401, "the revoked key still works");
    let log = events(&host, "apikeys");
    let revoked = of_kind(&log, "key_revoked");
    assert_eq!(revoked.len(), 1, "{log:?}");
    assert_eq!(revoked[0]["actor"], format!("key:{ops_id}"), "{log:?}");
    let details = &revoked[0]["details"];
    assert_eq!(
        (details["id"].as_str(), details["name"].as_str()),
        (Some(ci_id.as_str()), Some("ci"))
    );
    assert_eq!(details["scopes"], json!(["invoke", "read"]), "{details}");

    // Revoking it again revokes nothing, and a failed create creates nothing: no events.
    let again = json!({ "id": ci_id }).to_string();
    assert_eq!(host.post_as("/api/plugins/apikeys/revoke", &again, &ops_key).0, 200);
    let bad = json!({ "name": "x", "scopes": ["root"] }).to_string();
    assert_eq!(host.post("/api/plugins/apikeys/create", &bad).0, 400);
    let log = events(&host, "apikeys");
    assert_eq!(of_kind(&log, "key_revoked").len(), 1, "{log:?}");
    assert_eq!(of_kind(&log, "key_created").len(), 2, "{log:?}");
}

#[test]
fn saving_an_unchanged_config_keeps_its_version() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    let (status, v) =
        host.post_json("/api/core/plugins/echo/config", r#"{"greeting":"hi","repeat":2}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["version"].as_i64(), v["changed"].as_bool()), (Some(1), Some(true)), "{v}");

    // The same config, its keys in another order: equal as JSON.
    let (status, v) =
        host.post_json("/api/core/plugins/echo/config", r#"{"repeat":2,"greeting":"hi"}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["version"].as_i64(), v["changed"].as_bool()), (Some(1), Some(false)), "{v}");
    let (_, c) = host.get_json("/api/core/plugins/echo/config");
    assert_eq!(c["version"], 1, "{c}");
    assert_eq!(c["history"].as_array().unwrap().len(), 1, "{c}");
    assert_eq!(of_kind(&events(&host, "echo"), "config_changed").len(), 1);

    // A real change is a new version.
    let (status, v) =
        host.post_json("/api/core/plugins/echo/config", r#"{"greeting":"hi","repeat":3}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["version"].as_i64(), v["changed"].as_bool()), (Some(2), Some(true)), "{v}");
    assert_eq!(host.post("/api/plugins/echo/greet", "").1, "hi hi hi");
}

#[test]
fn the_host_log_written_to_a_file_has_no_colour_codes() {
    let host = Host::start_without_no_color();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    // Lines of several levels and from several targets.
    host.remove(&lib_name("echo"));
    host.wait_state("echo", "unloaded");
    let log = host.log();
    assert!(log.contains("plugin loaded"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in the log file:\n{log:?}");
}

#[test]
fn a_wrong_bootstrap_shaped_key_is_told_it_is_not_the_bootstrap_key() {
    let wrong = format!("bkg_admin_{}", "0123456789abcdef".repeat(4));
    let message = |host: &Host| {
        let (status, body) = host.get_as("/api/core/plugins", &wrong);
        assert_eq!(status, 401, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["error"]["message"].as_str().unwrap().to_string()
    };
    let host = start_with_apikeys();
    let said = message(&host);
    assert!(said.contains("not the bootstrap admin key"), "{said}");
    assert!(said.contains("unknown to 'apikeys'"), "{said}");
    assert!(!said.contains("not a bkg key"), "{said}");

    // Without a running provider it is told the same, and why nothing else is accepted.
    let (status, body) = host.post("/api/core/plugins/apikeys/stop", "");
    assert_eq!(status, 200, "{body}");
    let said = message(&host);
    assert!(said.contains("not the bootstrap admin key"), "{said}");
    assert!(said.contains("'apikeys' is not running"), "{said}");

    // A key of apikeys' own shape keeps the provider's reason; another shape is told what
    // apikeys' keys look like.
    assert_eq!(host.post("/api/core/plugins/apikeys/start", "").0, 200);
    let (status, body) = host.get_as("/api/core/plugins", "just-some-text");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not a key apikeys issued"), "{body}");
}
