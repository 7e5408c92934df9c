//! Retention of the event log and of `changes` (`host/src/store/retention.rs`): real hosts with
//! small limits set by their flags, a real SQLite file or the test binary's real PostgreSQL.
//! Every wait polls for a condition with a generous bound (support's `wait_for`).

use diesel::prelude::*;
use serde_json::Value;

use crate::scale::{set_greeting, wait_greeting};
use crate::support::{fixture, lib_name, postgres_database, Host};

/// Prune often, so that the tests wait for little.
const PRUNE_EVERY: &str = "100ms";

fn events(host: &Host, query: &str) -> Vec<Value> {
    let (status, v) = host.get_json(&format!("/api/core/events?{query}"));
    assert_eq!(status, 200, "{v}");
    v["events"].as_array().cloned().expect("an events array")
}

/// A host on the PostgreSQL database `url` with the `echo` fixture running and `flags`.
fn echo_host_on(url: &str, flags: &[&str]) -> Host {
    let mut args = vec!["--database-url", url];
    args.extend_from_slice(flags);
    let host = Host::start_with(&args);
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    host
}

/// One number read from the test database `url`.
fn pg_number(url: &str, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = PgConnection::establish(url).expect("connect to the test database");
    diesel::sql_query(sql).get_result::<Row>(&mut c).expect(sql).n
}

/// `SIGSTOP`s a host (it stays away: no request, no query, no heartbeat) until dropped, then
/// `SIGCONT`s it, also when the test fails.
struct Suspended(u32);

impl Suspended {
    fn new(host: &Host) -> Suspended {
        signal(host.pid(), "-STOP");
        Suspended(host.pid())
    }
}

impl Drop for Suspended {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid}: {status}");
}

/// `--events-max-rows`: a host writing many events keeps the newest ones only, and listing
/// them page by page (`before`) walks what is left, newest first, and ends.
#[test]
fn events_beyond_the_row_limit_are_pruned_the_newest_stay_and_pages_end() {
    let host = Host::start_with(&["--events-max-rows", "25", "--prune-every", PRUNE_EVERY]);
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    for i in 1..=60 {
        set_greeting(&host, &format!("hello {i}"));
    }
    host.wait_for("at most 25 events", || events(&host, "limit=1000").len() <= 25);
    let all = events(&host, "limit=1000");
    // The newest stay: the last config written is the newest event.
    let newest = &all[0];
    assert_eq!(newest["kind"], "config_changed", "{newest}");
    assert_eq!(newest["details"]["version"], 60, "{newest}");
    let versions: Vec<i64> = all
        .iter()
        .filter(|e| e["kind"] == "config_changed")
        .map(|e| e["details"]["version"].as_i64().unwrap())
        .collect();
    assert!(versions.len() >= 20, "{all:?}");
    assert!(
        versions.windows(2).all(|w| w[0] == w[1] + 1),
        "contiguous, newest first: {versions:?}"
    );
    assert!(!versions.contains(&1), "the oldest were pruned: {versions:?}");
    // Pages of 10 walk the same events and end.
    let mut paged = Vec::new();
    let mut query = "limit=10".to_string();
    loop {
        let page = events(&host, &query);
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap()["seq"].as_i64().unwrap();
        paged.extend(page);
        query = format!("limit=10&before={last}");
        assert!(paged.len() <= 1000, "paging does not end");
    }
    let seqs = |v: &[Value]| v.iter().map(|e| e["seq"].as_i64().unwrap()).collect::<Vec<_>>();
    let (all_seqs, paged_seqs) = (seqs(&all), seqs(&paged));
    // Nothing was written since: the pages hold exactly what one listing did.
    assert_eq!(paged_seqs, all_seqs);
}

/// `--changes-retention` on PostgreSQL: changes every host applied go once older than the
/// retention; the database's version never goes back, and a change made after is applied.
#[test]
fn changes_every_host_applied_are_pruned_after_the_retention() {
    let url = postgres_database();
    let flags = ["--changes-retention", "3s", "--prune-every", PRUNE_EVERY];
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| echo_host_on(&url, &flags));
        let b = s.spawn(|| echo_host_on(&url, &flags));
        (a.join().expect("host a"), b.join().expect("host b"))
    });
    for i in 1..=5 {
        set_greeting(&a, &format!("v{i}"));
    }
    wait_greeting(&b, "v5 v5");
    let newest = pg_number(&url, "SELECT max(id) AS n FROM changes");
    assert!(newest > 0);
    a.wait_for("every change applied by both hosts to be pruned", || {
        pg_number(&url, "SELECT count(*) AS n FROM changes") == 0
    });
    assert!(pg_number(&url, "SELECT pruned_through AS n FROM changes_pruned") >= newest);
    // Later changes still go everywhere, on top of the pruned ones.
    set_greeting(&b, "after");
    wait_greeting(&a, "after after");
    assert!(pg_number(&url, "SELECT max(id) AS n FROM changes") > newest);
    // A host that stops cleanly deletes its row: it holds nothing back.
    let (status, log) = b.terminate();
    assert!(status.success(), "{log}");
    a.wait_for("one host left in sync_hosts", || {
        pg_number(&url, "SELECT count(*) AS n FROM sync_hosts") == 1
    });
}

/// A host away (suspended) longer than `--changes-retention` while another changed a config:
/// those changes are pruned without it, so when it is back it reloads the whole shared state
/// (a `changes_reloaded` event and a warning say so) and serves the config set meanwhile;
/// later changes reach it as usual.
#[test]
fn a_host_away_longer_than_the_retention_reloads_the_whole_state_when_back() {
    let url = postgres_database();
    let flags = ["--changes-retention", "3s", "--prune-every", PRUNE_EVERY];
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| echo_host_on(&url, &flags));
        let b = s.spawn(|| echo_host_on(&url, &flags));
        (a.join().expect("host a"), b.join().expect("host b"))
    });
    set_greeting(&a, "before");
    wait_greeting(&b, "before before");
    {
        let _away = Suspended::new(&b);
        set_greeting(&a, "while away");
        let change = pg_number(&url, "SELECT max(id) AS n FROM changes");
        a.wait_for("the change made while b was away to be pruned", || {
            pg_number(&url, "SELECT pruned_through AS n FROM changes_pruned") >= change
        });
    }
    wait_greeting(&b, "while away while away");
    // The event is in the shared log: either host lists it.
    let reloaded = || -> Option<Value> {
        events(&a, "limit=1000").into_iter().find(|e| e["kind"] == "changes_reloaded")
    };
    a.wait_for("a changes_reloaded event", || reloaded().is_some());
    let event = reloaded().unwrap();
    assert_eq!(event["actor"], "sync", "{event}");
    let details = &event["details"];
    assert!(
        details["applied"].as_i64().unwrap() < details["pruned_through"].as_i64().unwrap(),
        "{details}"
    );
    assert!(details["plugins"].as_i64().unwrap() >= 1, "{details}");
    assert!(b.log().contains("reloading the whole shared state"), "{}", b.log());
    // Back in step: the next change is applied as any other.
    set_greeting(&a, "after");
    wait_greeting(&b, "after after");
}

/// Change ids are taken when a transaction inserts its row, not when it commits: a change
/// whose transaction commits after a later one was read leaves a hole in what a listener
/// read. The listener looks for such ids again (`fill_holes`), so the late change is applied
/// by every host all the same.
#[test]
fn a_change_committed_after_a_later_one_was_applied_is_still_applied() {
    let url = postgres_database();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| echo_host_on(&url, &[]));
        let b = s.spawn(|| echo_host_on(&url, &[]));
        (a.join().expect("host a"), b.join().expect("host b"))
    });
    let mut c = PgConnection::establish(&url).expect("connect to the test database");
    c.transaction(|c| -> QueryResult<()> {
        // What `Store::set_config` writes, in a transaction that takes its change id first and
        // commits last.
        let late = take_change_id(c)?;
        set_greeting(&a, "from a");
        wait_greeting(&b, "from a from a");
        let read = pg_number(&url, "SELECT max(id) AS n FROM changes");
        assert!(read > late, "the later change was committed: {read} > {}", late);
        commit_late_config(c, late)?;
        Ok(())
    })
    .expect("the slow transaction");
    wait_greeting(&b, "late late");
    wait_greeting(&a, "late late");
}

/// What `Store::set_config` writes first, in a slow transaction: the change row, which takes
/// its id now (committed only with the transaction).
fn take_change_id(c: &mut PgConnection) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let late: Id = diesel::sql_query(
        "INSERT INTO changes (kind, subject, origin, at_ms) \
         VALUES ('config', 'echo', 'a-slow-host', 1) RETURNING id",
    )
    .get_result(c)?;
    Ok(late.id)
}

/// The rest of that transaction: echo's new config ("late") and the notification of change `id`.
fn commit_late_config(c: &mut PgConnection, id: i64) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE plugins SET config = '{\"greeting\": \"late\", \"repeat\": 2}', \
         config_version = config_version + 1 WHERE id = 'echo'",
    )
    .execute(c)?;
    diesel::sql_query(format!("SELECT pg_notify('bkg_changes', '{id}')")).execute(c)?;
    Ok(())
}

/// The same at a start: a host reads its state at the newest change id, while a transaction
/// that took a lower id commits only after that. The new host still applies it.
#[test]
fn a_change_committed_late_while_a_host_started_is_applied_by_that_host() {
    let url = postgres_database();
    let a = echo_host_on(&url, &[]);
    let mut c = PgConnection::establish(&url).expect("connect to the test database");
    let b = c
        .transaction(|c| -> QueryResult<Host> {
            let late = take_change_id(c)?;
            set_greeting(&a, "from a");
            let read = pg_number(&url, "SELECT max(id) AS n FROM changes");
            assert!(read > late, "the later change was committed: {read} > {}", late);
            // Host b starts now: it reads its state and version with the slow change unseen.
            let b = echo_host_on(&url, &[]);
            wait_greeting(&b, "from a from a");
            commit_late_config(c, late)?;
            Ok(b)
        })
        .expect("the slow transaction");
    wait_greeting(&b, "late late");
    wait_greeting(&a, "late late");
}
