//! Store write latency (issue 16): the same store writes on SQLite and on PostgreSQL, in one
//! process and one run, each durable the way the host runs it (SQLite: WAL with
//! `synchronous=FULL`; PostgreSQL: a temporary cluster on 127.0.0.1 with `fsync=on` and
//! `synchronous_commit=on`, over TCP like a remote database). Each round runs both backends in turn.
//!
//! Writes measured, one at a time from one thread (the host's store is one connection):
//! `set_config` (a transaction: upsert the plugin row, read and bump its version, write the
//! history row and an event) and `kv_put` (one upsert, a plugin's key-value store).
//!
//! `cargo build --release -p bkg-host --example bench_store`
//! `target/release/examples/bench_store [--writes 2000] [--rounds 3]` (scripts/bench-store.sh)

#[path = "../src/store/test_pg.rs"]
mod test_pg;

use std::time::{Duration, Instant};

use bkg_host::store::{Database, Store};

struct Flags {
    writes: usize,
    rounds: usize,
}

fn flags() -> Flags {
    let mut f = Flags { writes: 2000, rounds: 3 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = |it: &mut std::slice::Iter<String>| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{a} needs a positive number"))
        };
        match a.as_str() {
            "--writes" => f.writes = value(&mut it).max(1),
            "--rounds" => f.rounds = value(&mut it).max(1),
            other => panic!("unknown flag {other} (--writes N, --rounds N)"),
        }
    }
    f
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Latencies of `writes` calls of `write(n)`.
fn measure(writes: usize, mut write: impl FnMut(usize)) -> Vec<Duration> {
    let mut out = Vec::with_capacity(writes);
    for n in 0..writes {
        let t = Instant::now();
        write(n);
        out.push(t.elapsed());
    }
    out
}

fn main() {
    let f = flags();
    let cluster = test_pg::PgCluster::start(true).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut results: Vec<(&str, &str, Vec<Duration>)> = Vec::new();
    for round in 0..f.rounds {
        let backends = [
            ("sqlite", Database::Sqlite(dir.path().join(format!("bench-{round}.db")))),
            ("postgres", Database::Postgres(cluster.create_database())),
        ];
        for (name, db) in backends {
            let store = Store::connect(&db).expect("open the store");
            // Warm up: the connection, the statement caches, the first pages.
            for n in 0..50 {
                store.kv_put("bench", &format!("warm{n}"), b"x").unwrap();
            }
            let config = serde_json::json!({ "greeting": "hello", "repeat": 3 });
            let lat = measure(f.writes, |n| {
                store.set_config(&format!("p{}", n % 16), &config, "bench").unwrap();
            });
            results.push((name, "set_config", lat));
            let value = vec![7u8; 256];
            let lat = measure(f.writes, |n| {
                store.kv_put("bench", &format!("key{}", n % 512), &value).unwrap();
            });
            results.push((name, "kv_put", lat));
        }
    }
    println!(
        "store write latency, {} writes x {} rounds per backend and write",
        f.writes, f.rounds
    );
    println!(
        "{:<10} {:<11} {:>10} {:>10} {:>10}",
        "backend", "write", "p50 us", "p99 us", "mean us"
    );
    for backend in ["sqlite", "postgres"] {
        for write in ["set_config", "kv_put"] {
            let mut all: Vec<Duration> = results
                .iter()
                .filter(|(b, w, _)| *b == backend && *w == write)
                .flat_map(|(_, _, l)| l.iter().copied())
                .collect();
            all.sort();
            let mean = all.iter().sum::<Duration>() / all.len() as u32;
            println!(
                "{backend:<10} {write:<11} {:>10.0} {:>10.0} {:>10.0}",
                us(percentile(&all, 0.5)),
                us(percentile(&all, 0.99)),
                us(mean)
            );
        }
    }
}
