//! Plugin distribution between hosts on one PostgreSQL (issue 16): three real `bkg` hosts on one
//! database of a temporary cluster on 127.0.0.1 (`fsync=on`), each with its own plugins folder.
//!
//! 1. New builds: a new build of `echo` (the v1 and v2 fixtures, alternately) is renamed into
//!    host A's folder; from the rename, one thread per other host polls its plugin view until
//!    echo serves the new build's SHA-256 there: A loads it, publishes it (blob and deployment
//!    in the database, a change and NOTIFY), B and C fetch it, check it, rename it into their
//!    folders and hot-swap to it. Reported per host and for "every host" (the later of the two).
//! 2. `--big-library PATH` (optional): a large library (e.g. the candle plugin, ~90 MB with
//!    debug information) renamed into A's folder under a name of its own; the time until the
//!    checked file is in place in B's and C's folders (not until it serves: its start may need
//!    models), then it is removed on A and the run waits until it is gone everywhere.
//!
//! The pollers share the CPUs with the hosts and PostgreSQL.
//!
//! `cargo build --release -p bkg-host --bin bkg --example bench_distribute -p fixture-echo
//!  -p fixture-echo-v2`, then
//! `target/release/examples/bench_distribute [--uploads 20] [--big-library PATH --big-uploads 5]`
//! (scripts/bench-distribute.sh)

mod common;
#[path = "../src/store/test_pg.rs"]
mod test_pg;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{fixture, lib_name, poll_until, summary_ms, Flags, Host};
use sha2::{Digest, Sha256};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn sha256_of(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read library");
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// From `start`, the time until `done(host)` holds on each host (bounded at 60 s).
fn until_each(
    start: Instant,
    hosts: &[&Host],
    done: impl Fn(&Host) -> bool + Sync,
) -> Vec<Duration> {
    std::thread::scope(|s| {
        let polls: Vec<_> = hosts
            .iter()
            .map(|host| {
                let done = &done;
                s.spawn(move || {
                    let ok = poll_until(Duration::from_secs(60), Duration::from_millis(1), || {
                        done(host)
                    });
                    host.check(ok, "a deployment to arrive");
                    start.elapsed()
                })
            })
            .collect();
        polls.into_iter().map(|p| p.join().expect("poller")).collect()
    })
}

fn record(per_host: &mut [Vec<f64>; 2], every: &mut Vec<f64>, took: Vec<Duration>) {
    for (samples, t) in per_host.iter_mut().zip(&took) {
        samples.push(ms(*t));
    }
    every.push(ms(took.into_iter().max().unwrap_or_default()));
}

fn report(what: &str, per_host: &mut [Vec<f64>; 2], every: &mut [f64]) {
    for (name, samples) in ["B", "C"].iter().zip(per_host.iter_mut()) {
        println!("RESULT {what} on host {name}: {}", summary_ms(samples));
    }
    println!("RESULT {what} on every host: {}", summary_ms(every));
}

fn main() {
    let flags = Flags::parse(&["uploads", "big-library", "big-uploads"]);
    let uploads: usize = flags.get("uploads", 20);
    let big: String = flags.get("big-library", String::new());
    let big_uploads: usize = flags.get("big-uploads", 5);
    let cluster = test_pg::PgCluster::start(true).unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.create_database();
    let hosts: Vec<Host> = (0..3).map(|_| Host::start(&["--database-url", &url])).collect();
    let (a, others) = (&hosts[0], [&hosts[1], &hosts[2]]);
    let builds: [PathBuf; 2] = [fixture("echo"), fixture("echo-v2")];
    let hashes = [sha256_of(&builds[0]), sha256_of(&builds[1])];
    let size = std::fs::metadata(&builds[0]).map(|m| m.len()).unwrap_or(0);
    println!(
        "3 hosts on one PostgreSQL database ({} CPUs): {uploads} new builds of echo ({:.1} MB) on A",
        common::cpus(),
        size as f64 / 1e6
    );

    // 1. New builds of echo, renamed into A's folder.
    let name = lib_name("echo");
    let (mut per_host, mut every) = ([Vec::new(), Vec::new()], Vec::new());
    // The first deployment (a new plugin everywhere) is not a sample.
    for i in 0..=uploads {
        let (build, sha) = (&builds[i % 2], hashes[i % 2].as_str());
        let staged = a.stage(build, &name);
        let start = Instant::now();
        a.commit(&staged, &name);
        let took = until_each(start, &others, |h| {
            let p = h.plugin("echo");
            p["state"] == "running" && p["sha256"] == sha
        });
        if i > 0 {
            record(&mut per_host, &mut every, took);
        }
    }
    report("from the rename on A to the new build serving", &mut per_host, &mut every);

    // 2. A large library: the time until the checked file is in place on B and C.
    if !big.is_empty() {
        let big = PathBuf::from(big);
        let size = std::fs::metadata(&big).map(|m| m.len()).unwrap_or(0);
        println!("{big_uploads} deployments of {} ({:.1} MB)", big.display(), size as f64 / 1e6);
        let name = big.file_name().unwrap().to_string_lossy().into_owned();
        let (mut per_host, mut every) = ([Vec::new(), Vec::new()], Vec::new());
        for _ in 0..big_uploads {
            let staged = a.stage(&big, &name);
            let start = Instant::now();
            a.commit(&staged, &name);
            let took = until_each(start, &others, |h| h.plugins.join(&name).is_file());
            record(&mut per_host, &mut every, took);
            a.remove(&name);
            until_each(Instant::now(), &others, |h| !h.plugins.join(&name).exists());
        }
        report("from the rename on A to the checked file in place", &mut per_host, &mut every);
    }
}
