//! Issue 16, second part: several hosts on one PostgreSQL, with every change an operator makes
//! on one host pushed to the others (a row of `changes` and a NOTIFY in the change's
//! transaction; each host's `sync` listener applies it). Real hosts on ephemeral ports, one
//! real database of the test binary's cluster, the plugin files copied into each host's own
//! plugins folder (distributing the files through the database is a later part).
//!
//! Each test waits for what the others serve with a generous bound (support's `wait_for`):
//! without the listener B and C keep serving what they read at their start.

use diesel::prelude::*;
use serde_json::json;

use crate::support::{create_key, host_on_database, postgres_database, Host};

fn three_hosts(url: &str) -> [Host; 3] {
    std::thread::scope(|s| {
        let started: Vec<_> = (0..3).map(|_| s.spawn(|| host_on_database(url))).collect();
        let mut hosts = started.into_iter().map(|h| h.join().expect("start a host"));
        [hosts.next().unwrap(), hosts.next().unwrap(), hosts.next().unwrap()]
    })
}

pub(crate) fn set_greeting(host: &Host, greeting: &str) {
    let body = json!({ "greeting": greeting, "repeat": 2 }).to_string();
    let (status, v) = host.post_json("/api/core/plugins/echo/config", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["changed"], true, "{v}");
}

/// What the plugin itself answers: the config it applied, not the stored one.
pub(crate) fn greeting(host: &Host) -> String {
    host.post("/api/plugins/echo/greet", "").1
}

pub(crate) fn wait_greeting(host: &Host, expected: &str) {
    host.wait_for(&format!("echo to greet {expected:?}"), || greeting(host) == expected);
}

/// The backend pids of the `LISTEN` connections on `url`'s database.
fn listeners(url: &str) -> Vec<i32> {
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let mut c = PgConnection::establish(url).expect("connect to the test database");
    let rows: Vec<Pid> = diesel::sql_query(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND query LIKE 'LISTEN%' ORDER BY pid",
    )
    .load(&mut c)
    .expect("read pg_stat_activity");
    rows.into_iter().map(|r| r.pid).collect()
}

#[test]
fn a_config_set_on_one_host_is_applied_by_the_others() {
    let url = postgres_database();
    let [a, b, c] = three_hosts(&url);
    set_greeting(&a, "from a");
    assert_eq!(greeting(&a), "from a from a");
    wait_greeting(&b, "from a from a");
    wait_greeting(&c, "from a from a");
    // And the other way round, from another host.
    set_greeting(&c, "from c");
    wait_greeting(&a, "from c from c");
    wait_greeting(&b, "from c from c");
    // Applied, not stored again: one version per change.
    let (_, v) = b.get_json("/api/core/plugins/echo/config");
    assert_eq!(v["version"], 2, "{v}");
}

#[test]
fn a_key_created_on_one_host_works_on_the_others_and_once_revoked_is_refused_by_them() {
    let url = postgres_database();
    let [a, b, c] = three_hosts(&url);
    let (id, key) = create_key(&a, "shared", &["read"]);
    for host in [&a, &b, &c] {
        // Twice: the second answer comes from the host's verification cache.
        for _ in 0..2 {
            let (status, body) = host.get_as("/api/core/plugins", &key);
            assert_eq!(status, 200, "{body}");
        }
    }
    let (status, v) = a.post_json("/api/plugins/apikeys/revoke", &json!({ "id": id }).to_string());
    assert_eq!(status, 200, "{v}");
    assert_eq!(a.get_as("/api/core/plugins", &key).0, 401);
    // B and C cached the key as valid (for 30 s): the revocation drops it there too.
    for host in [&b, &c] {
        host.wait_for("the revoked key to be refused", || {
            host.get_as("/api/core/plugins", &key).0 == 401
        });
    }
}

#[test]
fn a_plugin_stopped_on_one_host_is_stopped_on_all_and_stays_so_across_their_restarts() {
    let url = postgres_database();
    let [a, b, c] = three_hosts(&url);
    assert_eq!(a.post_json("/api/core/plugins/echo/stop", "").0, 200);
    b.wait_state("echo", "stopped");
    c.wait_state("echo", "stopped");
    assert_eq!(b.post("/api/plugins/echo/echo", "x").0, 409);

    let b = b.restart(&["--database-url", &url]);
    let c = c.kill_and_restart(&["--database-url", &url]);
    for host in [&b, &c] {
        host.wait_state("apikeys", "running");
        host.wait_state("echo", "stopped");
    }
    // Started again on a restarted host: every host runs it.
    assert_eq!(c.post_json("/api/core/plugins/echo/start", "").0, 200);
    a.wait_state("echo", "running");
    b.wait_state("echo", "running");
    assert_eq!(b.post("/api/plugins/echo/echo", "x").1, "x");
}

#[test]
fn a_host_stopped_while_changes_happen_catches_up_when_started_again() {
    let url = postgres_database();
    let a = host_on_database(&url);
    let b = host_on_database(&url);
    set_greeting(&a, "before");
    wait_greeting(&b, "before before");
    let b = b.kill_edit_and_restart(&["--database-url", &url], |_| {
        set_greeting(&a, "while b was down");
        assert_eq!(a.post_json("/api/core/plugins/echo/stop", "").0, 200);
    });
    b.wait_state("apikeys", "running");
    b.wait_state("echo", "stopped");
    // And it applies what changes after its start.
    assert_eq!(a.post_json("/api/core/plugins/echo/start", "").0, 200);
    b.wait_state("echo", "running");
    wait_greeting(&b, "while b was down while b was down");
    set_greeting(&a, "after");
    wait_greeting(&b, "after after");
}

#[test]
fn the_listener_reconnects_after_its_connection_is_killed_and_applies_what_changed_meanwhile() {
    let url = postgres_database();
    let a = host_on_database(&url);
    let b = host_on_database(&url);
    a.wait_for("both hosts to listen", || listeners(&url).len() == 2);
    let before = listeners(&url);
    let mut admin = PgConnection::establish(&url).expect("connect to the test database");
    diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .execute(&mut admin)
    .expect("terminate the listeners");
    set_greeting(&a, "meanwhile");
    wait_greeting(&b, "meanwhile meanwhile");
    // Both listen again, on new connections.
    a.wait_for("both hosts to listen again", || {
        let now = listeners(&url);
        now.len() == 2 && now.iter().all(|pid| !before.contains(pid))
    });
    for host in [&a, &b] {
        host.wait_for("the reconnection to be logged", || {
            host.log().contains("the change listener's connection was lost")
        });
    }
    // And apply what changes after it.
    set_greeting(&b, "after");
    wait_greeting(&a, "after after");
}

#[test]
fn an_isolation_mode_set_on_one_host_is_applied_by_the_others() {
    let url = postgres_database();
    let a = host_on_database(&url);
    let b = host_on_database(&url);
    let in_mode = |host: &Host, mode: &str| {
        let p = host.plugin("echo");
        p["isolation"] == mode
            && p["state"] == "running"
            && (mode == "process") == p["process"]["pid"].is_u64()
    };
    a.isolate("echo", "process");
    b.wait_for("echo to run in a child on B", || in_mode(&b, "process"));
    assert_eq!(b.plugin("echo")["isolation_source"], "operator");
    assert_eq!(b.post("/api/plugins/echo/echo", "x").1, "x");
    // And back, from the other host.
    b.isolate("echo", "in_process");
    a.wait_for("echo to run in the host on A", || in_mode(&a, "in_process"));
}
