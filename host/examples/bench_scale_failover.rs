//! Several hosts on one PostgreSQL (issue 16): invoke throughput of 3 hosts vs 1, and what a
//! `kill -9` of one host under load costs a client that retries on the next host.
//!
//! A temporary PostgreSQL cluster on 127.0.0.1 (`fsync=on`) and three real `bkg` hosts on one
//! database of it, each with the `echo` fixture in its own plugins folder.
//!
//! 1. Throughput: `POST /api/plugins/echo/echo` (64-byte body) with wrk, the same total
//!    connections and wrk threads on both sides: one host (`wrk -t3 -c{connections}` against
//!    A) vs three (`wrk -t1 -c{connections/3}` against each of A, B, C at the same time, their
//!    requests per second summed). The two sides alternate for `--rounds` rounds; all three
//!    hosts run in both (the idle two do nothing but wait on their sockets). Every process
//!    (hosts, wrk, PostgreSQL) shares this machine's CPUs: on 2 CPUs, 3 hosts cannot do more
//!    than one host's CPU time, so the figure shows what spreading costs or gains, not what
//!    3 machines would do.
//! 2. Failover: `--clients` threads send echo requests, each to the next host in turn; on a
//!    connection error or a 502/503 the same request goes to the next host (as a load
//!    balancer with retries does). After `--kill-after` seconds host C gets SIGKILL; the load
//!    goes on for `--down-for` seconds. Reported: requests, failures (the client's, after its
//!    retries), requests that needed a retry and how many, and the latency of every request
//!    including its retries (p50/p99/max), for all requests and for those retried.
//!
//! `cargo build --release -p bkg-host --bin bkg --example bench_scale_failover -p fixture-echo`,
//! then `target/release/examples/bench_scale_failover [--duration 10] [--connections 30]
//! [--rounds 3] [--clients 4] [--kill-after 2] [--down-for 4]`
//! (scripts/bench-scale-failover.sh, which also installs wrk when missing)

mod common;
#[path = "../src/store/test_pg.rs"]
mod test_pg;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{fixture, lib_name, summary_ms, wrk, Flags, Host, Wrk};

const PATH: &str = "/api/plugins/echo/echo";

/// Several wrk runs at the same time, one per `(threads, connections, url)`.
fn wrk_together(runs: &[(usize, usize, String)], secs: u64, script: &std::path::Path) -> Vec<Wrk> {
    std::thread::scope(|s| {
        let started: Vec<_> = runs
            .iter()
            .map(|(t, c, url)| s.spawn(move || wrk(*t, *c, secs, script, url)))
            .collect();
        started.into_iter().map(|h| h.join().expect("wrk thread")).collect()
    })
}

/// One request of the failover client: how long it took with its retries, how many.
struct Sample {
    ms: f64,
    retries: usize,
}

/// Send `body` to the hosts from `first` on, failing over on a connection error or 502/503
/// (each host at most twice). `Err` with the last answer when every attempt failed.
fn send(agent: &ureq::Agent, bases: &[String], first: usize, body: &str) -> Result<usize, String> {
    let mut last = String::new();
    for attempt in 0..bases.len() * 2 {
        let base = &bases[(first + attempt) % bases.len()];
        let (status, text) = common::finish(
            agent
                .post(&format!("{base}{PATH}"))
                .set("Authorization", &common::bearer())
                .send_string(body),
        );
        if status == 200 && text == body {
            return Ok(attempt);
        }
        last = format!("{base}: {status} {text}");
        if !matches!(status, 0 | 502 | 503) {
            break;
        }
    }
    Err(last)
}

fn main() {
    let flags =
        Flags::parse(&["duration", "connections", "rounds", "clients", "kill-after", "down-for"]);
    let secs: u64 = flags.get("duration", 10);
    let connections: usize = flags.get("connections", 30);
    let rounds: usize = flags.get("rounds", 3);
    let clients: usize = flags.get("clients", 4);
    let kill_after: f64 = flags.get("kill-after", 2.0);
    let down_for: f64 = flags.get("down-for", 4.0);
    assert!(connections >= 3 && connections.is_multiple_of(3), "--connections: a multiple of 3");

    let cluster = test_pg::PgCluster::start(true).unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.create_database();
    let hosts: Vec<Host> = (0..3).map(|_| Host::start(&["--database-url", &url])).collect();
    for host in &hosts {
        host.install(&fixture("echo"), &lib_name("echo"));
    }
    for host in &hosts {
        host.wait_state("echo", "running", Duration::from_millis(10));
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    let script = scratch.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", 64)\n\
             wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n\
             wrk.headers[\"Authorization\"] = \"{}\"\n",
            common::bearer()
        ),
    )
    .expect("write wrk script");
    let urls: Vec<String> = hosts.iter().map(|h| format!("{}{PATH}", h.base)).collect();
    println!(
        "3 hosts on one PostgreSQL database ({} CPUs, each host its default HTTP workers)",
        common::cpus()
    );

    // 1. Throughput, 1 host vs 3, alternating.
    println!(
        "throughput: {rounds} rounds of {secs} s each side; 1 host: wrk -t3 -c{connections}; \
         3 hosts: 3 x wrk -t1 -c{} at once, summed",
        connections / 3
    );
    wrk(3, connections, 2, &script, &urls[0]); // warm-up
    let (mut one, mut three) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let single = wrk(3, connections, secs, &script, &urls[0]);
        let runs: Vec<_> = urls.iter().map(|u| (1, connections / 3, u.clone())).collect();
        let spread = wrk_together(&runs, secs, &script);
        let sum: f64 = spread.iter().map(|w| w.rps).sum();
        let per: Vec<String> = spread.iter().map(|w| format!("{:.0}", w.rps)).collect();
        let errors: String =
            std::iter::once(&single).chain(&spread).map(|w| w.errors.as_str()).collect();
        println!(
            "round {round}: 1 host {:.0} req/s ({} requests); 3 hosts {sum:.0} req/s ({}) = {:.2}x{}",
            single.rps,
            single.requests,
            per.join(" + "),
            sum / single.rps,
            if errors.is_empty() { String::new() } else { format!("; wrk: {errors}") }
        );
        one.push(single.rps);
        three.push(sum);
    }
    let (m1, m3) = (common::median(&one), common::median(&three));
    println!("RESULT throughput 1 host: median {m1:.0} req/s over {rounds} rounds");
    println!(
        "RESULT throughput 3 hosts: median {m3:.0} req/s over {rounds} rounds ({:.2}x)",
        m3 / m1
    );

    // 2. Failover: kill -9 of host C under the retrying client's load.
    let bases: Vec<String> = hosts.iter().map(|h| h.base.clone()).collect();
    let (next, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
    let samples = Mutex::new(Vec::<Sample>::new());
    let failures = Mutex::new(Vec::<String>::new());
    let start = Instant::now();
    let killed_at = std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                let agent = common::agent();
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let body = format!("request {n}");
                    let t = Instant::now();
                    match send(&agent, &bases, n, &body) {
                        Ok(retries) => samples
                            .lock()
                            .unwrap()
                            .push(Sample { ms: t.elapsed().as_secs_f64() * 1e3, retries }),
                        Err(last) => failures.lock().unwrap().push(format!("{body}: {last}")),
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(kill_after));
        let killed_at = start.elapsed();
        let status = Command::new("kill")
            .args(["-KILL", &hosts[2].pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -9 of host C failed");
        std::thread::sleep(Duration::from_secs_f64(down_for));
        stop.store(true, Ordering::Relaxed);
        killed_at
    });
    let samples = samples.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    let retried: Vec<&Sample> = samples.iter().filter(|s| s.retries > 0).collect();
    println!(
        "failover: {clients} client threads, round robin over A, B, C; C killed (SIGKILL) at \
         {:.1} s, load on for {down_for} s after",
        killed_at.as_secs_f64()
    );
    println!(
        "RESULT failover: {} requests, {} failed for the client; {} needed a retry ({} retries \
         in all, at most {} for one request)",
        samples.len() + failures.len(),
        failures.len(),
        retried.len(),
        retried.iter().map(|s| s.retries).sum::<usize>(),
        retried.iter().map(|s| s.retries).max().unwrap_or(0)
    );
    for f in failures.iter().take(5) {
        println!("  failed: {f}");
    }
    let mut all: Vec<f64> = samples.iter().map(|s| s.ms).collect();
    println!("RESULT failover latency, every request with its retries: {}", summary_ms(&mut all));
    let mut with_retry: Vec<f64> = retried.iter().map(|s| s.ms).collect();
    println!(
        "RESULT failover latency, requests that were retried: {}",
        summary_ms(&mut with_retry)
    );
}
