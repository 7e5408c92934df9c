use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Value};

use crate::support::{lib_name, product_plugin, start_with_apikeys, Host, ADMIN_KEY};

/// Every route of the API, with a method; `{}` stands for an existing plugin id.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/core/plugins"),
    ("GET", "/api/core/plugins/echo"),
    ("POST", "/api/core/plugins/echo/start"),
    ("POST", "/api/core/plugins/echo/stop"),
    ("POST", "/api/core/plugins/echo/restart"),
    ("GET", "/api/core/plugins/echo/status"),
    ("GET", "/api/core/plugins/echo/config"),
    ("POST", "/api/core/plugins/echo/config"),
    ("GET", "/api/core/plugins/echo/logs"),
    ("GET", "/api/core/plugins/echo/telemetry"),
    ("GET", "/api/core/events"),
    ("GET", "/api/core/telemetry"),
    ("GET", "/ws/core/plugins/echo/logs"),
    ("GET", "/ws/core/plugins/echo/telemetry"),
    ("GET", "/ws/core/telemetry"),
    ("POST", "/api/core/plugins/echo/models/download"),
    ("GET", "/api/core/models"),
    ("GET", "/api/core/models/downloads/x"),
    ("DELETE", "/api/core/models/downloads/x"),
    ("GET", "/ws/core/plugins/echo/models"),
    ("PUT", "/api/core/plugins/upload/x.so"),
    ("GET", "/metrics"),
    ("POST", "/api/plugins/echo/echo"),
    ("GET", "/api/plugins/echo/admin/info"),
    ("GET", "/x-echo/anything"),
    ("POST", "/api/plugins/apikeys/create"),
];

fn create_key(host: &Host, scopes: &[&str], extra: Value) -> (String, String) {
    let mut body = json!({ "name": format!("test {scopes:?}"), "scopes": scopes });
    if let Value::Object(map) = extra {
        for (k, v) in map {
            body[k] = v;
        }
    }
    let (status, v) = host.post_json("/api/plugins/apikeys/create", &body.to_string());
    assert_eq!(status, 201, "{v}");
    (v["id"].as_str().unwrap().to_string(), v["key"].as_str().unwrap().to_string())
}

#[test]
fn every_route_needs_a_key_and_health_does_not() {
    let host = start_with_apikeys();
    for (method, path) in ROUTES {
        let (status, body) = host.request_as(method, path, "");
        assert_eq!(status, 401, "{method} {path} without a key: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
        let (status, _) = host.request_as(
            method,
            path,
            "bkg_00000000_0000000000000000000000000000000000000000000000000000000000000000",
        );
        assert_eq!(status, 401, "{method} {path} with an unknown key");
    }
    assert_eq!(host.get_as("/healthz", "").0, 200);
    assert_eq!(host.get_as("/readyz", "").0, 200);
    // The bootstrap key opens everything.
    assert_eq!(host.get_as("/api/core/plugins", ADMIN_KEY).0, 200);
}

#[test]
fn scopes_limit_what_a_key_may_do() {
    let host = start_with_apikeys();
    let (_, read) = create_key(&host, &["read"], json!({}));
    let (_, invoke) = create_key(&host, &["invoke"], json!({}));
    let (_, admin) = create_key(&host, &["admin"], json!({}));

    for (method, path) in ROUTES {
        let (status, body) = host.request_as(method, path, &read);
        let allowed = *method == "GET"
            && (path.starts_with("/api/core")
                || path.starts_with("/ws/")
                || *path == "/metrics"
                || path.contains("/admin/"));
        if allowed {
            assert_ne!(status, 403, "read key refused on {method} {path}: {body}");
            assert_ne!(status, 401, "read key refused on {method} {path}: {body}");
        } else {
            assert_eq!(status, 403, "read key allowed on {method} {path}: {body}");
            assert!(body.contains("scope"), "{body}");
        }
    }
    assert_eq!(host.post_as("/api/plugins/echo/echo", "hi", &invoke), (200, "hi".to_string()));
    assert_eq!(host.get_as("/x-echo/a", &invoke).0, 200);
    assert_eq!(host.get_as("/api/core/plugins", &invoke).0, 403);
    assert_eq!(host.post_as("/api/core/plugins/echo/stop", "", &invoke).0, 403);
    // Managing keys is an admin capability even though it is a plugin invocation.
    let (status, body) =
        host.post_as("/api/plugins/apikeys/create", r#"{"name":"x","scopes":["admin"]}"#, &invoke);
    assert_eq!(status, 403, "{body}");
    assert_eq!(host.post_as("/api/core/plugins/echo/stop", "", &admin).0, 200);
    assert_eq!(host.post_as("/api/core/plugins/echo/start", "", &admin).0, 200);

    // Keys are listed without their secrets.
    let (_, list) = host.post_json("/api/plugins/apikeys/list", "");
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.get("key").is_none() && k.get("sha256").is_none()), "{list}");
    // Bad input to the key manager gets clear errors.
    let (status, v) =
        host.post_json("/api/plugins/apikeys/create", r#"{"name":"x","scopes":["root"]}"#);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("unknown scope 'root'"));
}

#[test]
fn revoked_and_expired_keys_are_refused() {
    let host = start_with_apikeys();
    let (id, key) = create_key(&host, &["invoke"], json!({}));
    assert_eq!(host.post_as("/api/plugins/echo/echo", "a", &key).0, 200);
    let (status, v) =
        host.post_json("/api/plugins/apikeys/revoke", &json!({ "id": id }).to_string());
    assert_eq!(status, 200, "{v}");
    let (status, body) = host.post_as("/api/plugins/echo/echo", "a", &key);
    assert_eq!(status, 401, "a revoked key still works: {body}");
    assert!(body.contains("revoked"), "{body}");

    let soon = crate::support::now_ms() + 1500;
    let (_, short) = create_key(&host, &["invoke"], json!({ "expires_at_ms": soon }));
    assert_eq!(host.post_as("/api/plugins/echo/echo", "b", &short).0, 200);
    host.wait_for("the key to expire", || crate::support::now_ms() > soon + 10);
    let (status, body) = host.post_as("/api/plugins/echo/echo", "b", &short);
    assert_eq!(status, 401, "an expired key still works: {body}");
}

#[test]
fn stopping_or_swapping_the_provider_never_lets_a_request_through_unchecked() {
    stopping_or_swapping_the_provider_never_lets_a_request_through_unchecked_in("in_process");
}

/// The same with the key provider and the plugin it guards each in a child process.
#[test]
fn stopping_or_swapping_the_provider_never_lets_a_request_through_unchecked_in_process_mode() {
    stopping_or_swapping_the_provider_never_lets_a_request_through_unchecked_in("process");
}

fn stopping_or_swapping_the_provider_never_lets_a_request_through_unchecked_in(mode: &str) {
    let host = start_with_apikeys();
    host.in_mode(mode, &["apikeys", "echo"]);
    // Moving to a child is a swap of its own: the generation the swaps below start from.
    let first = host.plugin("apikeys")["generation"].as_u64().unwrap();
    let (_, key) = create_key(&host, &["invoke"], json!({}));
    assert_eq!(host.post_as("/api/plugins/echo/echo", "x", &key).0, 200);

    // Without a running provider only the bootstrap key works: fail closed.
    assert_eq!(host.post_json("/api/core/plugins/apikeys/stop", "").0, 200);
    let (status, body) = host.post_as("/api/plugins/echo/echo", "x", &key);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not running"), "{body}");
    assert_eq!(host.post("/api/plugins/echo/echo", "x").0, 200);
    assert_eq!(host.post_json("/api/core/plugins/apikeys/start", "").0, 200);
    assert_eq!(host.post_as("/api/plugins/echo/echo", "x", &key).0, 200);

    // Hot swaps of the provider (same code, a different file each time) under traffic.
    let original = std::fs::read(product_plugin("apikeys")).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let anonymous = s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = host.post_as("/api/plugins/echo/echo", "x", "");
                assert_eq!(status, 401, "an unauthenticated request got through: {body}");
                let (status, body) =
                    host.post_as("/api/plugins/echo/echo", "x", "bkg_12345678_wrong");
                assert_eq!(status, 401, "a bad key got through: {body}");
                n += 1;
            }
            n
        });
        // Every request with the valid key must succeed: a swap never leaves the host without
        // a provider. Failures are collected with their status and body, so the test says why.
        let authorized = s.spawn(|| {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match host.post_as("/api/plugins/echo/echo", "x", &key) {
                    (200, body) if body == "x" => ok += 1,
                    (status, body) => failed.push(format!("{status}: {body}")),
                }
            }
            (ok, failed)
        });
        for i in 1..=5u8 {
            let mut bytes = original.clone();
            bytes.extend_from_slice(&[i; 16]); // trailing bytes: another file, the same code
            host.install_bytes(&bytes, &lib_name("apikeys"));
            host.wait_for("the swap", || host.plugin("apikeys")["generation"] == first + i as u64);
        }
        stop.store(true, Ordering::SeqCst);
        assert!(anonymous.join().unwrap() > 0);
        let (ok, failed) = authorized.join().unwrap();
        assert!(
            failed.is_empty(),
            "{} of {} requests with a valid key failed during the swaps; the first: {:?}",
            failed.len(),
            ok as usize + failed.len(),
            &failed[..failed.len().min(10)]
        );
        assert!(ok > 0, "no request with the valid key ran during the swaps");
    });
    // Keys live in the plugin's key-value store: they survive the swaps.
    assert_eq!(host.post_as("/api/plugins/echo/echo", "x", &key).0, 200);
}
