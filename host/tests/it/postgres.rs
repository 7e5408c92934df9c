//! Issue 16, first part: the store on PostgreSQL (`--database-url postgres://...`), against a
//! real temporary cluster (support::postgres_database; one cluster per test binary). Change
//! propagation between running hosts (NOTIFY) is the next part: here two hosts on one database
//! see each other's rows once they read them again, i.e. after a restart.

use std::process::Command;

use serde_json::{json, Value};

use crate::support::{create_key, host_on_database, postgres_database, Host};

fn set_greeting(host: &Host, greeting: &str) -> i64 {
    let body = json!({ "greeting": greeting, "repeat": 2 }).to_string();
    let (status, v) = host.post_json("/api/core/plugins/echo/config", &body);
    assert_eq!(status, 200, "{v}");
    v["version"].as_i64().unwrap()
}

fn stored_config(host: &Host) -> Value {
    let (status, c) = host.get_json("/api/core/plugins/echo/config");
    assert_eq!(status, 200, "{c}");
    c
}

#[test]
fn config_desired_state_and_api_key_survive_a_restart_on_postgres() {
    let url = postgres_database();
    let host = host_on_database(&url);
    assert_eq!(set_greeting(&host, "hi"), 1);
    let key = create_key(&host, "reader", &["read"]).1;
    assert_eq!(host.get_as("/api/core/plugins", &key).0, 200);
    assert_eq!(host.post_json("/api/core/plugins/echo/stop", "").0, 200);

    let host = host.restart(&["--database-url", &url]);
    host.wait_state("apikeys", "running");
    host.wait_state("echo", "stopped");
    assert_eq!(host.post("/api/plugins/echo/echo", "x").0, 409);
    let c = stored_config(&host);
    assert_eq!((c["source"].as_str(), c["version"].as_i64()), (Some("stored"), Some(1)), "{c}");
    assert_eq!(c["history"][0]["actor"], "key:bootstrap");
    assert_eq!(host.get_as("/api/core/plugins", &key).0, 200, "the key was lost");
    assert_eq!(host.post_json("/api/core/plugins/echo/start", "").0, 200);
    host.wait_state("echo", "running");
    assert_eq!(host.post("/api/plugins/echo/greet", "").1, "hi hi");
}

#[test]
fn two_hosts_on_one_database_see_each_others_rows_after_a_restart() {
    let url = postgres_database();
    let a = host_on_database(&url);
    let b = host_on_database(&url);
    // A sets the config and makes a key; B stops the plugin and makes another key.
    assert_eq!(set_greeting(&a, "from a"), 1);
    let key_a = create_key(&a, "made on a", &["read"]).1;
    assert_eq!(b.post_json("/api/core/plugins/echo/stop", "").0, 200);
    let key_b = create_key(&b, "made on b", &["read"]).1;

    let a = a.restart(&["--database-url", &url]);
    let b = b.restart(&["--database-url", &url]);
    for (host, other_key) in [(&a, &key_b), (&b, &key_a)] {
        host.wait_state("apikeys", "running");
        // B's desired state, A's config, the other's key.
        host.wait_state("echo", "stopped");
        let c = stored_config(host);
        assert_eq!(c["config"]["greeting"], "from a", "{c}");
        assert_eq!(c["version"], 1, "{c}");
        assert_eq!(host.get_as("/api/core/plugins", other_key).0, 200);
        // One event log: both hosts' starts are in it (two each).
        let (_, events) = host.get_json("/api/core/events?limit=200");
        let pids: std::collections::BTreeSet<u64> = events["events"]
            .as_array()
            .unwrap_or_else(|| panic!("no events list: {events}"))
            .iter()
            .filter(|e| e["kind"] == "host_started")
            .map(|e| e["details"]["pid"].as_u64().unwrap())
            .collect();
        assert_eq!(pids.len(), 4, "{pids:?}");
    }
}

/// An unreachable database at start: the host exits with an error that names the URL
/// (password elided) and what failed, and never prints the password.
#[test]
fn a_host_whose_database_is_unreachable_says_which_and_why_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://bkg:s3cretpw@127.0.0.1:{port}/bkg");
    let out = Command::new(env!("CARGO_BIN_EXE_bkg"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("BKG_DATABASE_URL", &url)
        .env("NO_COLOR", "1")
        .output()
        .expect("run bkg");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "bkg started without its database:\n{text}");
    assert!(text.contains(&format!("postgres://bkg:***@127.0.0.1:{port}/bkg")), "{text}");
    assert!(text.contains("Connection refused"), "{text}");
    assert!(!text.contains("s3cretpw"), "the password was printed:\n{text}");
    assert!(!dir.path().join("bkg.db").exists(), "it fell back to SQLite");

    // A URL it cannot use at all is refused before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_bkg"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--database-url", "mysql://bkg@127.0.0.1/bkg"])
        .output()
        .expect("run bkg");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("--database-url") && text.contains("\"mysql\" is not supported"),
        "{text}"
    );
}
