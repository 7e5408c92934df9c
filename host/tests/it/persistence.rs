use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use serde_json::json;

use crate::support::{fixture, lib_name, Host};

#[test]
fn config_is_validated_applied_live_and_survives_a_host_restart() {
    config_is_validated_applied_live_and_survives_a_host_restart_in("in_process");
}

/// The same with echo in a child process (the mode survives the host's restart too).
#[test]
fn config_is_validated_applied_live_and_survives_a_host_restart_in_process_mode() {
    config_is_validated_applied_live_and_survives_a_host_restart_in("process");
}

fn config_is_validated_applied_live_and_survives_a_host_restart_in(mode: &str) {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    host.in_mode(mode, &["echo"]);

    let (status, c) = host.get_json("/api/core/plugins/echo/config");
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["schema"]["properties"]["repeat"]["maximum"], 5);
    assert_eq!((c["source"].as_str(), c["version"].as_i64()), (Some("plugin"), Some(0)));
    assert_eq!(c["config"], json!({ "greeting": "hello", "repeat": 1 }));

    // Invalid: every failing field is named.
    let (status, v) = host.post_json(
        "/api/core/plugins/echo/config",
        r#"{"greeting": 5, "repeat": 9, "extra": true}"#,
    );
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "invalid_config");
    let paths: Vec<&str> = v["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/greeting") && paths.contains(&"/repeat") && paths.contains(&""),
        "{v}"
    );
    // Malformed JSON, and a config the plugin itself refuses.
    let (status, v) = host.post_json("/api/core/plugins/echo/config", "{");
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("bad_request")), "{v}");
    let (status, v) =
        host.post_json("/api/core/plugins/echo/config", r#"{"greeting": "reject me"}"#);
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("config_rejected")), "{v}");
    assert_eq!(host.post("/api/plugins/echo/greet", "").1, "hello");

    // Valid: applied at once.
    let (status, v) =
        host.post_json("/api/core/plugins/echo/config", r#"{"greeting": "hi", "repeat": 3}"#);
    assert_eq!((status, v["version"].as_i64()), (200, Some(1)), "{v}");
    assert_eq!(host.post("/api/plugins/echo/greet", "").1, "hi hi hi");
    // A plugin without a schema takes no config.
    host.install(&fixture("panicky"), &lib_name("panicky"));
    host.wait_state("panicky", "running");
    let (status, v) = host.post_json("/api/core/plugins/panicky/config", "{}");
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("no_config")), "{v}");

    // After a restart of the host the stored config is applied before the plugin starts.
    let host = host.restart(&[]);
    host.wait_state("echo", "running");
    assert_eq!(host.plugin("echo")["isolation"], mode);
    assert_eq!(host.post("/api/plugins/echo/greet", "").1, "hi hi hi");
    let (_, c) = host.get_json("/api/core/plugins/echo/config");
    assert_eq!((c["source"].as_str(), c["version"].as_i64()), (Some("stored"), Some(1)), "{c}");
    assert_eq!(c["history"].as_array().unwrap().len(), 1);
    assert_eq!(c["history"][0]["actor"], "key:bootstrap");

    // And after a hot swap.
    host.install(&fixture("echo-v2"), &lib_name("echo"));
    host.wait_for("v2", || host.plugin("echo")["version"] == "2.0.0");
    assert_eq!(host.post("/api/plugins/echo/greet", "").1, "hi hi hi");
}

#[test]
fn a_plugin_stopped_by_an_operator_stays_stopped_after_a_host_restart() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.install(&fixture("panicky"), &lib_name("panicky"));
    host.wait_state("echo", "running");
    host.wait_state("panicky", "running");
    assert_eq!(host.post_json("/api/core/plugins/echo/stop", "").0, 200);

    let host = host.restart(&[]);
    host.wait_state("panicky", "running");
    host.wait_state("echo", "stopped");
    assert_eq!(host.post("/api/plugins/echo/echo", "x").0, 409);
    assert_eq!(host.post_json("/api/core/plugins/echo/start", "").0, 200);
    let host = host.restart(&[]);
    host.wait_state("echo", "running");

    // The event log tells the story.
    let (status, v) = host.get_json("/api/core/events?plugin=echo&limit=50");
    assert_eq!(status, 200);
    let kinds: Vec<&str> =
        v["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    // Newest first.
    assert_eq!(
        kinds,
        ["loaded", "unloaded", "started", "loaded", "unloaded", "stopped", "loaded"],
        "{v}"
    );
    assert!(v["events"].as_array().unwrap().iter().all(|e| e["plugin"] == "echo"));
    let (_, all) = host.get_json("/api/core/events?limit=500");
    assert!(all["events"].as_array().unwrap().iter().any(|e| e["kind"] == "host_started"));
    assert_eq!(host.get_json("/api/core/events?limit=2").1["events"].as_array().unwrap().len(), 2);
}

#[test]
fn a_host_killed_during_config_writes_serves_the_last_committed_config() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");

    let acked = AtomicI64::new(0);
    let stop = AtomicBool::new(false);
    let url = format!("{}/api/core/plugins/echo/config", host.base);
    let host = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for n in 1..=100_000i64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let body = json!({ "greeting": format!("g{n}"), "repeat": 1 + n % 5 }).to_string();
                let request = ureq::post(&url)
                    .set("Content-Type", "application/json")
                    .set("Authorization", &format!("Bearer {}", crate::support::ADMIN_KEY));
                match request.send_string(&body) {
                    Ok(r) if r.status() == 200 => acked.store(n, Ordering::SeqCst),
                    _ => break, // the host is gone
                }
            }
        });
        host.wait_for("some committed writes", || acked.load(Ordering::SeqCst) >= 30);
        let host = host.kill_and_restart(&[]);
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        host
    });
    let last_acked = acked.load(Ordering::SeqCst);
    host.wait_state("echo", "running");
    let (_, c) = host.get_json("/api/core/plugins/echo/config");
    let version = c["version"].as_i64().unwrap();
    // Every acknowledged write is there; at most the one in flight at the kill got in too.
    assert!(
        version == last_acked || version == last_acked + 1,
        "version {version}, acked {last_acked}"
    );
    let expected = json!({ "greeting": format!("g{version}"), "repeat": 1 + version % 5 });
    assert_eq!(c["config"], expected);
    assert_eq!(
        host.post("/api/plugins/echo/greet", "").1,
        vec![format!("g{version}"); (1 + version % 5) as usize].join(" ")
    );
}

#[test]
fn the_key_value_store_survives_swaps_plugin_restarts_and_host_restarts() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    assert_eq!(host.post("/api/plugins/echo/kv-put", "color blue").0, 200);
    assert_eq!(host.post("/api/plugins/echo/kv-put", "colour green").0, 200);
    assert_eq!(host.post("/api/plugins/echo/kv-put", "size 9").0, 200);
    assert_eq!(host.post("/api/plugins/echo/kv-get", "color"), (200, "blue".to_string()));
    assert_eq!(host.post("/api/plugins/echo/kv-keys", "col"), (200, "color,colour".to_string()));
    let (status, v) = host.post_json("/api/plugins/echo/kv-get", "nothing");
    assert_eq!((status, v["error"]["message"].as_str()), (404, Some("no such key")));
    let (status, v) = host.post_json("/api/plugins/echo/kv-put", &format!("{} x", "k".repeat(600)));
    assert_eq!(status, 400, "{v}");

    host.install(&fixture("echo-v2"), &lib_name("echo"));
    host.wait_for("v2", || host.plugin("echo")["version"] == "2.0.0");
    assert_eq!(host.post("/api/plugins/echo/kv-get", "color"), (200, "blue".to_string()));
    assert_eq!(host.post_json("/api/core/plugins/echo/restart", "").0, 200);
    assert_eq!(host.post("/api/plugins/echo/kv-delete", "size"), (200, "true".to_string()));

    let host = host.restart(&[]);
    host.wait_state("echo", "running");
    assert_eq!(host.post("/api/plugins/echo/kv-get", "colour"), (200, "green".to_string()));
    assert_eq!(host.post("/api/plugins/echo/kv-keys", ""), (200, "color,colour".to_string()));
}

#[test]
fn a_plugin_that_reads_its_config_at_start_is_restarted_to_apply_one() {
    let host = Host::start();
    host.install(&fixture("slow"), &lib_name("slow"));
    host.wait_state("slow", "running");
    let starts = |h: &Host| h.post_json("/api/plugins/slow/starts", "").1;
    assert_eq!(starts(&host), json!({ "starts": 1, "config": {} }));

    let (status, v) = host.post_json("/api/core/plugins/slow/config", r#"{"label": "night"}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!(starts(&host), json!({ "starts": 2, "config": { "label": "night" } }));
    assert_eq!(host.state("slow"), "running");

    // While stopped, a new config is stored and taken up at the next start.
    assert_eq!(host.post_json("/api/core/plugins/slow/stop", "").0, 200);
    assert_eq!(host.post_json("/api/core/plugins/slow/config", r#"{"label": "day"}"#).0, 200);
    assert_eq!(host.state("slow"), "stopped");
    assert_eq!(host.post_json("/api/core/plugins/slow/start", "").0, 200);
    assert_eq!(starts(&host), json!({ "starts": 3, "config": { "label": "day" } }));
}
