//! Issue 16, "when the database is unreachable": one host on a PostgreSQL cluster of its own
//! (never the shared one: other tests use it meanwhile), the server stopped for a few seconds
//! under load and started again. Plugin calls with a key verified before the outage keep
//! succeeding (served from the verification cache past its TTL, which the test makes short);
//! admin writes and a key never verified get 503 `database_unavailable` and change nothing; a
//! plugin's key-value call gets UNAVAILABLE naming the database; afterwards writes work again
//! without restarting the host and everything written before the outage is there.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::test_pg::PgCluster;
use crate::support::{create_key, fixture, lib_name, product_plugin, Host, StopOnDrop};

fn set_greeting(host: &Host, greeting: &str) -> (u16, Value) {
    let body = json!({ "greeting": greeting, "repeat": 1 }).to_string();
    host.post_json("/api/core/plugins/echo/config", &body)
}

fn database_state(host: &Host) -> String {
    let (status, v) = host.get_json("/readyz");
    assert_eq!(status, 200, "the host must stay ready through an outage: {v}");
    v["database"].as_str().unwrap_or("").to_string()
}

fn assert_database_unavailable(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 503, "{what}: {body}");
    assert_eq!(body["error"]["code"], "database_unavailable", "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("database")
            && message.contains("unreachable")
            && message.contains("retry"),
        "{what}: the message must say the database is unreachable and to retry: {body}"
    );
}

#[test]
fn plugin_calls_survive_a_postgres_outage_and_admin_writes_get_503_until_it_is_back() {
    let cluster = PgCluster::start(false).unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.create_database();
    // Verifications older than 100 ms are past their TTL: every call during the outage needs
    // the outage rule (serve what was verified before), not the ordinary cache.
    let host = Host::start_with_env(&["--database-url", &url], &[("BKG_AUTH_CACHE_TTL_MS", "100")]);
    host.install(&fixture("echo"), &lib_name("echo"));
    host.install(&product_plugin("apikeys"), &lib_name("apikeys"));
    host.wait_state("echo", "running");
    host.wait_state("apikeys", "running");

    // Before the outage: a config, a key-value entry, a key used once, a key never used.
    assert_eq!(set_greeting(&host, "before").0, 200);
    assert_eq!(host.post("/api/plugins/echo/kv-put", "color blue").0, 200);
    let key = create_key(&host, "client", &["invoke", "read"]).1;
    let unused = create_key(&host, "unused", &["invoke", "read"]).1;
    let (status, body) = host.post_as("/api/plugins/echo/echo", "hello", &key);
    assert_eq!(status, 200, "{body}");
    assert_eq!(database_state(&host), "up");

    let stop = AtomicBool::new(false);
    let (ok, ok_while_down) = (AtomicU64::new(0), AtomicU64::new(0));
    let down = AtomicBool::new(false);
    let failures = Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = host.post_as("/api/plugins/echo/echo", "ping", &key);
                if status == 200 {
                    ok.fetch_add(1, Ordering::SeqCst);
                    if down.load(Ordering::SeqCst) {
                        ok_while_down.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    failures.lock().unwrap().push(format!("{status} {body}"));
                }
            }
        });
        host.wait_for("calls before the outage", || ok.load(Ordering::SeqCst) >= 20);

        let stopped_at = Instant::now();
        cluster.stop_server().unwrap_or_else(|e| panic!("{e}"));
        host.wait_for("the host to see the database down", || database_state(&host) == "down");
        down.store(true, Ordering::SeqCst);

        // An admin write: 503 with the message, and the plugin is not reconfigured.
        let (status, body) = set_greeting(&host, "during");
        assert_database_unavailable(status, &body, "a config write");
        let (status, body) = host.post_json("/api/core/plugins/echo/stop", "");
        assert_database_unavailable(status, &body, "a stop");
        assert_eq!(host.state("echo"), "running", "a refused stop stopped the plugin");
        // A key never verified here cannot be checked: 503 naming the database, not 401.
        let (status, body) = host.post_as("/api/plugins/echo/echo", "x", &unused);
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_database_unavailable(status, &body, "a key never verified");
        // The plugin's key-value store: UNAVAILABLE naming the database, not a hang or a 500.
        let (status, body) = host.post("/api/plugins/echo/kv-get", "color");
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("key-value store") && body.contains("database"), "{body}");
        // Reads from memory: the plugin list and a plugin's detail.
        assert_eq!(host.get("/api/core/plugins").0, 200);
        assert_eq!(host.plugin("echo")["id"], "echo");
        let (status, metrics) = host.get("/metrics");
        assert_eq!(status, 200, "{metrics}");
        assert!(metrics.contains("bkg_database_up{backend=\"postgres\"} 0"), "{metrics}");

        // The outage lasts 5 s and carries calls (not a timing assert: the scenario's length).
        host.wait_for("calls during the outage", || {
            ok_while_down.load(Ordering::SeqCst) >= 50
                && stopped_at.elapsed() >= Duration::from_secs(5)
        });
        cluster.start_server().unwrap_or_else(|e| panic!("{e}"));
        host.wait_for("the host to reconnect", || database_state(&host) == "up");
        down.store(false, Ordering::SeqCst);
        let after = ok.load(Ordering::SeqCst);
        host.wait_for("calls after the outage", || ok.load(Ordering::SeqCst) >= after + 20);
        stop.store(true, Ordering::SeqCst);
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "plugin calls failed during the outage: {failures:?}");

    // Writes work again without a restart; the refused one changed nothing (version 2, not 3).
    let (status, v) = set_greeting(&host, "after");
    assert_eq!((status, v["version"].as_i64()), (200, Some(2)), "{v}");
    let (status, c) = host.get_json("/api/core/plugins/echo/config");
    assert_eq!(status, 200, "{c}");
    let greetings: Vec<&str> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["config"]["greeting"].as_str())
        .collect();
    assert!(!greetings.contains(&"during"), "the refused write was stored: {c}");
    // Everything written before the outage is there.
    let (status, body) = host.post("/api/plugins/echo/kv-get", "color");
    assert_eq!((status, body.as_str()), (200, "blue"));
    let (status, body) = host.post_as("/api/plugins/echo/echo", "x", &unused);
    assert_eq!(status, 200, "the key created before the outage: {body}");
    let (status, metrics) = host.get("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("bkg_database_up{backend=\"postgres\"} 1"), "{metrics}");
    assert!(metrics.contains("bkg_database_outages_total 1"), "{metrics}");
    // One log line per state change, not one per failed query.
    let log = host.log();
    assert_eq!(log.matches("database connection lost").count(), 1, "{log}");
    assert_eq!(log.matches("database connection restored").count(), 1, "{log}");
}
