//! No accidental lockout: stopping the auth provider (after which every key but the
//! bootstrap one is refused) needs the bootstrap key or an explicit `?confirm=true`.

use serde_json::{json, Value};

use crate::support::{start_with_apikeys, Host, ADMIN_KEY};

fn admin_key(host: &Host) -> String {
    let body = json!({ "name": "operator", "scopes": ["admin"] }).to_string();
    let (status, v) = host.post_json("/api/plugins/apikeys/create", &body);
    assert_eq!(status, 201, "{v}");
    v["key"].as_str().unwrap().to_string()
}

#[test]
fn stopping_the_auth_provider_needs_a_confirmation_or_the_bootstrap_key() {
    let host = start_with_apikeys();
    let operator = admin_key(&host);
    // The views say which plugin is the provider (the dashboard asks before stopping it).
    assert_eq!(host.plugin("apikeys")["auth_provider"], true);
    assert_eq!(host.plugin("echo")["auth_provider"], false);

    // One click with an ordinary admin key: refused, nothing changes.
    let (status, body) = host.post_as("/api/core/plugins/apikeys/stop", "", &operator);
    assert_eq!(status, 409, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "confirm_required", "{body}");
    assert!(v["error"]["message"].as_str().unwrap().contains("bootstrap"), "{body}");
    assert_eq!(host.state("apikeys"), "running");
    assert_eq!(host.get_as("/api/core/plugins", &operator).0, 200);
    // Other plugins stop without a question; a restart of the provider is not a stop.
    assert_eq!(host.post_as("/api/core/plugins/echo/stop", "", &operator).0, 200);
    assert_eq!(host.post_as("/api/core/plugins/apikeys/restart", "", &operator).0, 200);
    assert_eq!(host.state("apikeys"), "running");

    // Confirmed: stopped, and the key that did it is refused from now on.
    let (status, body) = host.post_as("/api/core/plugins/apikeys/stop?confirm=true", "", &operator);
    assert_eq!(status, 200, "{body}");
    assert_eq!(host.state("apikeys"), "stopped");
    let (status, body) = host.get_as("/api/core/plugins", &operator);
    assert_eq!(status, 401, "{body}");
    // The bootstrap key recovers.
    assert_eq!(host.post("/api/core/plugins/apikeys/start", "").0, 200);
    host.wait_for("the operator key works again", || {
        host.get_as("/api/core/plugins", &operator).0 == 200
    });

    // The bootstrap key itself keeps working after a stop, so it needs no confirmation.
    let (status, body) = host.post_as("/api/core/plugins/apikeys/stop", "", ADMIN_KEY);
    assert_eq!(status, 200, "{body}");
    assert_eq!(host.state("apikeys"), "stopped");
}

/// A key revoked by another plugin through the bus (not over HTTP) is refused at once, not
/// only when its 30 s cache entry expires.
#[test]
fn a_key_revoked_over_the_bus_is_refused_at_once() {
    let host = start_with_apikeys();
    let body = json!({ "name": "doomed", "scopes": ["invoke"] }).to_string();
    let (status, created) = host.post_json("/api/plugins/apikeys/create", &body);
    assert_eq!(status, 201, "{created}");
    let (id, key) = (created["id"].as_str().unwrap(), created["key"].as_str().unwrap());
    // Verified once: now in the host's cache.
    assert_eq!(host.post_as("/api/plugins/echo/echo", "hi", key), (200, "hi".to_string()));
    assert_eq!(host.post_as("/api/plugins/echo/echo", "hi", key).0, 200);
    // echo's `relay` calls apikeys' `revoke` over the bus.
    let relay = format!("apikeys revoke {}", json!({ "id": id }));
    let (status, answer) = host.post("/api/plugins/echo/relay", &relay);
    assert_eq!(status, 200, "{answer}");
    let revoked: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(revoked["id"], id, "{answer}");
    let (status, body) = host.post_as("/api/plugins/echo/echo", "hi", key);
    assert_eq!(status, 401, "a revoked key still passed: {body}");
}
