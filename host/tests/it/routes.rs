//! The adversarial route test: every route of the API (from the OpenAPI document) and every
//! plugin capability, admin route and claimed prefix (from the plugin views), asked for in
//! many spellings of the same path (percent-encoded letters and slashes, `//`, `/./`, `/../`,
//! trailing slashes, letter case, overlong and invalid UTF-8 encodings, a query string) with
//! no key, a read key and an invoke key. Whatever the spelling, a key that lacks the scope the
//! route needs never gets the resource: the answer is 400, 401, 403, 404 or 405.
//!
//! Requests go over a raw TCP socket: HTTP client libraries normalise paths (resolving `.` and
//! `..`, re-encoding), which would hide exactly what this test is about.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{fixture, lib_name, product_plugin, Host, ADMIN_KEY};

/// Send one request with a raw request-target; returns the status and body.
fn raw_request(host: &Host, method: &str, target: &str, key: Option<&str>) -> (u16, String) {
    let addr = host.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The scope a route needs according to the README's rules, or None for public routes.
/// Written out here on purpose, independently of the host's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Public,
    Read,
    Invoke,
    Admin,
}

fn core_scope(method: &str, path: &str) -> Needs {
    if ["/healthz", "/readyz", "/api/openapi.json"].contains(&path) {
        return Needs::Public;
    }
    let get = method == "GET";
    if path == "/metrics" || path.starts_with("/ws/") {
        return Needs::Read;
    }
    if path.starts_with("/api/core/") {
        return if get { Needs::Read } else { Needs::Admin };
    }
    panic!("the test does not know the scope of {method} {path}: add it to core_scope");
}

fn allows(key: &str, needs: Needs) -> bool {
    matches!((key, needs), (_, Needs::Public) | ("read", Needs::Read) | ("invoke", Needs::Invoke))
}

/// Percent-encode one byte.
fn pct(b: u8) -> String {
    format!("%{b:02X}")
}

/// Many spellings of `path` (which starts with '/'), each of which must be judged by the
/// scope of `path` itself, or refused.
fn spellings(path: &str) -> Vec<String> {
    let mut out = vec![path.to_string()];
    let segments: Vec<&str> = path[1..].split('/').collect();
    let join = |segs: &[String]| format!("/{}", segs.join("/"));
    let owned: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
    // One letter of each segment percent-encoded (lower- and upper-case hex), and all letters.
    for (i, seg) in segments.iter().enumerate() {
        if let Some(c) = seg.chars().next().filter(char::is_ascii_alphanumeric) {
            let mut v = owned.clone();
            v[i] = format!("{}{}", pct(c as u8), &seg[1..]);
            out.push(join(&v));
            v[i] = format!("{}{}", pct(c as u8).to_lowercase(), &seg[1..]);
            out.push(join(&v));
            // Overlong two-byte encoding of the same ASCII letter.
            v[i] = format!(
                "%{:02X}%{:02X}{}",
                0xC0 | (c as u8 >> 6),
                0x80 | (c as u8 & 0x3F),
                &seg[1..]
            );
            out.push(join(&v));
        }
    }
    out.push(
        path.bytes()
            .map(|b| if b.is_ascii_alphabetic() { pct(b) } else { (b as char).to_string() })
            .collect(),
    );
    // Slashes: encoded, doubled, overlong, backslash, one at a time.
    for (i, _) in path.match_indices('/').skip(1) {
        let (a, b) = (&path[..i], &path[i + 1..]);
        for sep in [
            "%2F",
            "%2f",
            "//",
            "%C0%AF",
            "%E0%80%AF",
            "%5C",
            "\\",
            "/./",
            "/%2e/",
            "/x/../",
            "/x/%2E%2E/",
            "/;/",
        ] {
            out.push(format!("{a}{sep}{b}"));
        }
    }
    // Around the path.
    out.push(format!("/{path}"));
    out.push(format!("/.{path}"));
    out.push(format!("/x/..{path}"));
    out.push(format!("{path}/"));
    out.push(format!("{path}/."));
    out.push(format!("{path}/.."));
    out.push(format!("{path}%00"));
    out.push(format!("{path}%FF"));
    out.push(format!("{path};x=y"));
    out.push(format!("{path}#frag"));
    // Letter case.
    out.push(path.to_ascii_uppercase());
    let mut v = owned.clone();
    if let Some(first) = v.first_mut() {
        *first = first.to_ascii_uppercase();
    }
    out.push(join(&v));
    let mut v = owned.clone();
    if let Some(last) = v.last_mut() {
        *last = last.to_ascii_uppercase();
    }
    out.push(join(&v));
    // A query string on each of the above.
    let with_query: Vec<String> = out.iter().map(|p| format!("{p}?x=1&y=%2F..%2F")).collect();
    out.extend(with_query);
    out.sort();
    out.dedup();
    out
}

/// Every route to try: (method, path, scope it needs).
fn all_routes(host: &Host) -> Vec<(String, String, Needs)> {
    let (status, doc) = {
        let (s, body) = host.get_as("/api/openapi.json", "");
        (s, serde_json::from_str::<Value>(&body).expect("openapi json"))
    };
    assert_eq!(status, 200);
    let mut routes = Vec::new();
    for (template, ops) in doc["paths"].as_object().expect("paths") {
        let path = template
            .replace("{id}", "echo")
            .replace("{capability}", "echo")
            .replace("{action}", "restart")
            .replace("{route}", "info")
            .replace("{filename}", "x.so")
            .replace("{job}", "x");
        assert!(!path.contains('{'), "a path parameter the test does not fill: {template}");
        for method in ops.as_object().expect("operations").keys() {
            let method = method.to_ascii_uppercase();
            let needs = if path == "/api/plugins/echo/echo" {
                Needs::Invoke
            } else if path.starts_with("/api/plugins/echo/admin/") {
                if method == "GET" {
                    Needs::Read
                } else {
                    Needs::Admin
                }
            } else {
                core_scope(&method, &path)
            };
            routes.push((method, path.clone(), needs));
        }
    }
    // The plugins' own capabilities, admin routes and prefixes, from their views.
    let (_, plugins) = host.get_json("/api/core/plugins");
    for p in plugins["plugins"].as_array().expect("plugins") {
        let id = p["id"].as_str().unwrap();
        for c in p["capabilities"].as_array().unwrap() {
            let needs = if c["scope"] == "admin" { Needs::Admin } else { Needs::Invoke };
            routes.push((
                "POST".into(),
                format!("/api/plugins/{id}/{}", c["name"].as_str().unwrap()),
                needs,
            ));
        }
        for r in p["routes"].as_array().unwrap() {
            let method = r["method"].as_str().unwrap().to_ascii_uppercase();
            let needs = if method == "GET" { Needs::Read } else { Needs::Admin };
            routes.push((
                method,
                format!("/api/plugins/{id}/admin{}", r["path"].as_str().unwrap()),
                needs,
            ));
        }
        if let Some(prefix) = p["route_prefix"].as_str() {
            for method in ["GET", "POST", "DELETE"] {
                routes.push((method.into(), format!("{prefix}/anything"), Needs::Invoke));
                routes.push((method.into(), prefix.to_string(), Needs::Invoke));
            }
        }
    }
    routes
}

fn create_key(host: &Host, scopes: &[&str]) -> String {
    let body = json!({ "name": format!("routes {scopes:?}"), "scopes": scopes }).to_string();
    let (status, v) = host.post_json("/api/plugins/apikeys/create", &body);
    assert_eq!(status, 201, "{v}");
    v["key"].as_str().unwrap().to_string()
}

#[test]
fn no_spelling_of_a_path_reaches_a_route_without_its_scope() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.install(&product_plugin("apikeys"), &lib_name("apikeys"));
    host.wait_state("echo", "running");
    host.wait_state("apikeys", "running");
    let read = create_key(&host, &["read"]);
    let invoke = create_key(&host, &["invoke"]);
    let keys: [(&str, Option<&str>); 3] =
        [("none", None), ("read", Some(&read)), ("invoke", Some(&invoke))];

    let routes = all_routes(&host);
    assert!(routes.len() > 40, "too few routes found: {routes:?}");
    assert!(routes
        .iter()
        .any(|(_, p, n)| p == "/api/plugins/apikeys/create" && *n == Needs::Admin));
    let mut tried = 0;
    let mut failures = Vec::new();
    for (method, path, needs) in &routes {
        for spelling in spellings(path) {
            for (name, key) in &keys {
                if allows(name, *needs) {
                    continue;
                }
                let (status, body) = raw_request(&host, method, &spelling, *key);
                tried += 1;
                if ![400, 401, 403, 404, 405].contains(&status) {
                    failures.push(format!(
                        "{method} {spelling} with {name} key (route {path} needs {needs:?}): {status} {}",
                        body.chars().take(160).collect::<String>()
                    ));
                }
            }
        }
        // A query `access_token` authenticates WebSockets only.
        if !path.starts_with("/ws/") && *needs != Needs::Public {
            let (status, body) =
                raw_request(&host, method, &format!("{path}?access_token={ADMIN_KEY}"), None);
            tried += 1;
            if status != 401 {
                failures.push(format!("{method} {path}?access_token=<admin>: {status} {body}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {tried} answers broke the scope rules:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(tried > 3000, "only {tried} requests tried");
    // The host is still healthy, and every plugin still runs.
    assert_eq!(host.state("echo"), "running");
    assert_eq!(host.state("apikeys"), "running");
}

/// The README's promise: every route but `/healthz`, `/readyz` and `/api/openapi.json` needs
/// a key, checked against every operation of the OpenAPI document and every plugin route.
#[test]
fn only_health_readiness_and_the_openapi_document_answer_without_a_key() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    let mut public = Vec::new();
    for (method, path, needs) in all_routes(&host) {
        let (status, body) = raw_request(&host, &method, &path, None);
        if needs == Needs::Public {
            assert_eq!(status, 200, "{method} {path}: {body}");
            public.push(path);
        } else {
            assert_eq!(status, 401, "{method} {path} without a key: {body}");
            assert!(body.contains("\"unauthorized\""), "{method} {path}: {body}");
        }
    }
    public.sort();
    assert_eq!(public, ["/api/openapi.json", "/healthz", "/readyz"]);
}

/// The reported exploits, one by one (each answered 200/201 before the fix).
#[test]
fn percent_encoded_paths_do_not_bypass_auth() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.install(&product_plugin("apikeys"), &lib_name("apikeys"));
    host.wait_state("echo", "running");
    host.wait_state("apikeys", "running");
    let invoke = create_key(&host, &["invoke"]);
    assert_eq!(raw_request(&host, "GET", "/%61pi/core/plugins", None).0, 401);
    assert_eq!(raw_request(&host, "GET", "/%6detrics", None).0, 401);
    assert_eq!(raw_request(&host, "PUT", "/%61pi/core/plugins/upload/evil.so", None).0, 401);
    let (status, body) = raw_request(&host, "POST", "/api/plugins/apikeys/%63reate", Some(&invoke));
    assert_eq!(status, 403, "{body}");
    // Non-canonical spellings are refused with a reason, even with the admin key.
    let (status, body) =
        raw_request(&host, "GET", "/api/core/plugins/%2e%2e/plugins", Some(ADMIN_KEY));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_path") && body.contains("'..'"), "{body}");
    let (status, body) = raw_request(&host, "GET", "/api%2Fcore/plugins", Some(ADMIN_KEY));
    assert_eq!((status, body.contains("encoded '/'")), (400, true), "{body}");
    // An equivalent spelling with a key that has the scope reaches the same route.
    let (status, body) = raw_request(&host, "GET", "/%61pi/core/plugins", Some(ADMIN_KEY));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"echo\""), "{body}");
}
