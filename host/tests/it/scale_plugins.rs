//! Issue 16, plugin distribution: several hosts on one PostgreSQL share their plugin files. A
//! library deployed on one host (uploaded, or copied into its folder) is stored in the database
//! by SHA-256 and written into every other host's folder, where its watcher loads it; a file
//! removed on one host is removed everywhere. Real hosts on ephemeral ports, one real database
//! of the test binary's cluster, the real fixture libraries. Each test waits with a generous
//! bound (support's `wait_for`); none asserts how fast.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use diesel::prelude::*;
use sha2::{Digest, Sha256};

use crate::support::{fixture, lib_name, postgres_database, Host, StopOnDrop};

fn sha256_of(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn host_on(url: &str) -> Host {
    Host::start_with(&["--database-url", url])
}

/// The SHA-256 deployed under `file` in the database at `url` (none: nothing, or removed).
fn deployed(url: &str, file: &str) -> Option<String> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        sha256: String,
    }
    let mut c = PgConnection::establish(url).expect("connect to the test database");
    let rows: Vec<Row> =
        diesel::sql_query("SELECT sha256 FROM plugin_files WHERE file = $1 AND NOT removed")
            .bind::<diesel::sql_types::Text, _>(file)
            .load(&mut c)
            .expect("read plugin_files");
    rows.into_iter().next().map(|r| r.sha256)
}

/// How many `plugin_deployed` changes the database at `url` recorded.
fn deployed_changes(url: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = PgConnection::establish(url).expect("connect to the test database");
    diesel::sql_query("SELECT count(*) AS n FROM changes WHERE kind = 'plugin_deployed'")
        .get_result::<Count>(&mut c)
        .expect("count changes")
        .n
}

fn upload(host: &Host, name: &str, bytes: &[u8]) {
    let (status, body) = host.put_bytes(&format!("/api/core/plugins/upload/{name}"), bytes);
    assert!(status == 200 || status == 201, "upload {name}: {status} {body}");
}

/// `host` serves echo from the library hashing to `sha256`.
fn wait_serving(host: &Host, sha256: &str) {
    host.wait_for(&format!("echo serving {sha256}"), || {
        let p = host.plugin("echo");
        p["state"] == "running" && p["sha256"] == sha256
    });
}

/// A plugin uploaded to A runs on B and C with the same SHA-256; a new build uploaded to A
/// hot-swaps on B and C while a client calls B throughout without one failed call; deleting
/// it on A unloads it on B and C (their libraries leave memory, their files are gone).
#[test]
fn a_plugin_uploaded_to_one_host_runs_swaps_and_is_removed_on_the_others() {
    let url = postgres_database();
    let [a, b, c] = std::thread::scope(|s| {
        let started: Vec<_> = (0..3).map(|_| s.spawn(|| host_on(&url))).collect();
        let mut hosts = started.into_iter().map(|h| h.join().expect("start a host"));
        [hosts.next().unwrap(), hosts.next().unwrap(), hosts.next().unwrap()]
    });
    let name = lib_name("echo");
    let v1 = std::fs::read(fixture("echo")).unwrap();
    let v2 = std::fs::read(fixture("echo-v2")).unwrap();
    let (h1, h2) = (sha256_of(&v1), sha256_of(&v2));

    upload(&a, &name, &v1);
    for host in [&a, &b, &c] {
        wait_serving(host, &h1);
        assert_eq!(std::fs::read(host.plugins.join(&name)).unwrap(), v1);
    }
    assert_eq!(b.post("/api/plugins/echo/echo", "on b"), (200, "on b".into()));
    // No echo: B and C loaded what they fetched without publishing it again.
    assert_eq!(deployed_changes(&url), 1);

    // A new build, while a client calls B.
    let stop = AtomicBool::new(false);
    let (calls, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = b.post("/api/plugins/echo/echo", "during");
                calls.fetch_add(1, Ordering::SeqCst);
                if (status, body.as_str()) != (200, "during") {
                    failed.fetch_add(1, Ordering::SeqCst);
                    eprintln!("failed call on b: {status} {body}");
                }
            }
        });
        // Some calls before the swap.
        b.wait_for("calls on b", || calls.load(Ordering::SeqCst) >= 20);
        upload(&a, &name, &v2);
        for host in [&b, &c] {
            wait_serving(host, &h2);
            assert_eq!(host.plugin("echo")["version"], "2.0.0");
        }
        let after = calls.load(Ordering::SeqCst);
        b.wait_for("calls on b after the swap", || calls.load(Ordering::SeqCst) >= after + 20);
    });
    assert_eq!(failed.load(Ordering::SeqCst), 0, "calls on b failed during the swap");
    assert_eq!(deployed_changes(&url), 2);

    // Deleted on A: unloaded everywhere.
    a.remove(&name);
    for host in [&a, &b, &c] {
        host.wait_state("echo", "unloaded");
        let p = host.plugin("echo");
        let history = p["history"].as_array().unwrap();
        let last = history.last().unwrap();
        assert_eq!(last["reason"], "removed", "{p}");
        assert_eq!(last["residency"], "unloaded", "the library must have left memory: {p}");
        assert!(!host.plugins.join(&name).exists());
    }
    assert_eq!(b.post("/api/plugins/echo/echo", "x").0, 404);
}

/// A host started after the upload catches up at start and runs it; a file copied into the
/// late host's folder only is published to the first one.
#[test]
fn a_host_started_after_an_upload_catches_up_and_runs_it() {
    let url = postgres_database();
    let a = host_on(&url);
    let v2 = std::fs::read(fixture("echo-v2")).unwrap();
    upload(&a, &lib_name("echo"), &v2);
    wait_serving(&a, &sha256_of(&v2));
    // Published (after the load, on A's distribution thread) before B starts: B learns of it
    // only from its catch-up at start, not from a change.
    let name = lib_name("echo");
    a.wait_for("the upload to be published", || {
        deployed(&url, &name).as_deref() == Some(sha256_of(&v2).as_str())
    });

    let b = host_on(&url);
    wait_serving(&b, &sha256_of(&v2));
    assert_eq!(b.post("/api/plugins/echo/echo", "late"), (200, "late".into()));

    let noop = fixture("noop");
    b.install(&noop, &lib_name("noop"));
    a.wait_for("noop from b", || a.plugin("noop")["state"] == "running");
    assert_eq!(a.plugin("noop")["sha256"], sha256_of(&std::fs::read(&noop).unwrap()));
}

/// A blob whose bytes do not hash to its recorded SHA-256 (corrupted in the database) is
/// refused by the host that fetches it: the error in its log and in the events, nothing
/// written into its folder, and the version it had keeps serving.
#[test]
fn a_corrupt_blob_is_refused_and_the_previous_version_keeps_serving() {
    let url = postgres_database();
    let (a, b) = std::thread::scope(|s| {
        let (a, b) = (s.spawn(|| host_on(&url)), s.spawn(|| host_on(&url)));
        (a.join().unwrap(), b.join().unwrap())
    });
    let name = lib_name("echo");
    let v1 = std::fs::read(fixture("echo")).unwrap();
    let v2 = std::fs::read(fixture("echo-v2")).unwrap();
    let (h1, h2) = (sha256_of(&v1), sha256_of(&v2));
    upload(&a, &name, &v1);
    wait_serving(&b, &h1);

    // A deployment of v2 whose stored bytes are v2 with one byte changed, recorded as a
    // change of another host (as a damaged database would serve it).
    let mut corrupt = v2.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    let mut db = PgConnection::establish(&url).expect("connect to the test database");
    db.transaction(|db| -> QueryResult<()> {
        diesel::sql_query(
            "INSERT INTO plugin_blobs (sha256, size, chunks, created_at_ms) VALUES ($1, $2, 1, 0)",
        )
        .bind::<diesel::sql_types::Text, _>(&h2)
        .bind::<diesel::sql_types::BigInt, _>(corrupt.len() as i64)
        .execute(db)?;
        diesel::sql_query("INSERT INTO plugin_blob_chunks (sha256, seq, data) VALUES ($1, 0, $2)")
            .bind::<diesel::sql_types::Text, _>(&h2)
            .bind::<diesel::sql_types::Binary, _>(&corrupt)
            .execute(db)?;
        diesel::sql_query("UPDATE plugin_files SET sha256 = $1, origin = 'test' WHERE file = $2")
            .bind::<diesel::sql_types::Text, _>(&h2)
            .bind::<diesel::sql_types::Text, _>(&name)
            .execute(db)?;
        diesel::sql_query(
            "WITH c AS (INSERT INTO changes (kind, subject, origin, at_ms) \
             VALUES ('plugin_deployed', $1, 'test', 0) RETURNING id) \
             SELECT pg_notify('bkg_changes', id::text) FROM c",
        )
        .bind::<diesel::sql_types::Text, _>(&name)
        .execute(db)?;
        Ok(())
    })
    .expect("write the corrupt deployment");

    b.wait_for("the refusal in b's log", || {
        b.log().contains("refused the plugin file") && b.log().contains("corrupt blob")
    });
    let refused = b
        .events_of("echo")
        .into_iter()
        .find(|e| e["kind"] == "deploy_refused")
        .expect("a deploy_refused event");
    assert_eq!(refused["details"]["sha256"], h2.as_str(), "{refused}");
    assert!(refused["details"]["error"].as_str().unwrap().contains(&h2), "{refused}");
    let p = b.plugin("echo");
    assert_eq!(p["sha256"], h1.as_str(), "b must keep serving v1: {p}");
    assert_eq!(p["generation"], 1, "{p}");
    assert_eq!(std::fs::read(b.plugins.join(&name)).unwrap(), v1);
    assert_eq!(b.post("/api/plugins/echo/echo", "still"), (200, "still".into()));
}

/// A file deployed while the database is down (on a cluster of the test's own) is published
/// once it is back, without a restart: the other host runs it.
#[test]
fn a_file_deployed_during_a_database_outage_is_published_when_it_is_back() {
    let cluster =
        crate::support::test_pg::PgCluster::start(false).unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.create_database();
    let (a, b) = (host_on(&url), host_on(&url));
    let database = |host: &Host| host.get_json("/readyz").1["database"].clone();

    cluster.stop_server().unwrap_or_else(|e| panic!("{e}"));
    a.wait_for("a to see the database down", || database(&a) == "down");
    let noop = fixture("noop");
    a.install(&noop, &lib_name("noop"));
    a.wait_state("noop", "running");
    a.wait_for("the failed publication in a's log", || {
        a.log().contains("cannot publish") && a.log().contains("retrying")
    });

    cluster.start_server().unwrap_or_else(|e| panic!("{e}"));
    b.wait_for("noop published from a", || b.plugin("noop")["state"] == "running");
    assert_eq!(b.plugin("noop")["sha256"], sha256_of(&std::fs::read(&noop).unwrap()));
}

/// On SQLite (one host) nothing is distributed: no blob is stored, nothing deployed.
#[test]
fn on_sqlite_no_plugin_blob_is_stored() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    // Distribution is not started at all (it creates its work folder at start, before the
    // watcher's scan), so nothing can be stored later either.
    assert!(!host.data_dir().join("distribute").exists(), "distribution ran on SQLite");
    let mut c = diesel::SqliteConnection::establish(
        host.data_dir().join("bkg.db").to_str().expect("utf-8 path"),
    )
    .expect("open the host's SQLite file");
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    for table in ["plugin_blobs", "plugin_blob_chunks", "plugin_files"] {
        let n = diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
            .get_result::<Count>(&mut c)
            .expect("count rows")
            .n;
        assert_eq!(n, 0, "{table} on SQLite");
    }
}
