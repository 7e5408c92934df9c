//! Change propagation between hosts on one PostgreSQL (issue 16): three real `bkg` hosts on one
//! database of a temporary cluster on 127.0.0.1 (`fsync=on`), each with the `echo` fixture and
//! the `apikeys` plugin in its own plugins folder.
//!
//! 1. Config: host A sets echo's config (`POST /api/core/plugins/echo/config`: A applies it,
//!    then commits it with its change row and NOTIFY, then answers). From A's answer, one
//!    thread per other host calls echo's `greet` back to back until it answers with the new
//!    config: the time until the plugin on that host serves it. Reported per host and for
//!    "every host" (the later of B and C, per change).
//! 2. Key revocation: a key made on A is used once on B and on C (so each caches it as valid),
//!    then revoked on A; from A's answer, the time until B and C each refuse it (401).
//!
//! The pollers share the 2 CPUs with the hosts and PostgreSQL; a figure is an upper bound of
//! the propagation itself by one poll (a request round trip, well under a millisecond).
//!
//! `cargo build --release -p bkg-host --bin bkg --example bench_scale -p fixture-echo
//!  -p bkg-plugin-apikeys`, then
//! `target/release/examples/bench_scale [--changes 200] [--revocations 100]`
//! (scripts/bench-scale.sh)

mod common;
#[path = "../src/store/test_pg.rs"]
mod test_pg;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{build_dir, fixture, lib_name, poll_until, summary_ms, Flags, Host};

fn apikeys_plugin() -> PathBuf {
    let path = build_dir().join(format!(
        "{}bkg_plugin_apikeys.{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_EXTENSION
    ));
    assert!(
        path.is_file(),
        "apikeys not built at {} (cargo build --release -p bkg-plugin-apikeys)",
        path.display()
    );
    path
}

/// A JSON POST with the admin key.
fn post_json(host: &Host, path: &str, body: &serde_json::Value) -> (u16, String) {
    common::finish(
        common::agent()
            .post(&format!("{}{path}", host.base))
            .set("Authorization", &common::bearer())
            .set("Content-Type", "application/json")
            .send_string(&body.to_string()),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// From now, the time until `done(host)` holds on each host, polled back to back on a thread
/// per host (bounded at 20 s: a change not applied by then fails the run).
fn until_each(hosts: &[&Host], done: impl Fn(&Host) -> bool + Sync) -> Vec<Duration> {
    let start = Instant::now();
    std::thread::scope(|s| {
        let polls: Vec<_> = hosts
            .iter()
            .map(|host| {
                let done = &done;
                s.spawn(move || {
                    let ok = poll_until(Duration::from_secs(20), Duration::ZERO, || done(host));
                    host.check(ok, "a change to be applied");
                    start.elapsed()
                })
            })
            .collect();
        polls.into_iter().map(|p| p.join().expect("poller")).collect()
    })
}

fn main() {
    let flags = Flags::parse(&["changes", "revocations"]);
    let changes: usize = flags.get("changes", 200);
    let revocations: usize = flags.get("revocations", 100);
    let cluster = test_pg::PgCluster::start(true).unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.create_database();
    let hosts: Vec<Host> = (0..3).map(|_| Host::start(&["--database-url", &url])).collect();
    for host in &hosts {
        host.install(&fixture("echo"), &lib_name("echo"));
        host.install(&apikeys_plugin(), &lib_name("apikeys"));
    }
    for host in &hosts {
        host.wait_state("echo", "running", Duration::from_millis(10));
        host.wait_state("apikeys", "running", Duration::from_millis(10));
    }
    let (a, others) = (&hosts[0], [&hosts[1], &hosts[2]]);
    println!(
        "3 hosts on one PostgreSQL database ({} CPUs): {changes} config changes, {revocations} key revocations",
        common::cpus()
    );

    // 1. Config changes.
    let (mut per_host, mut every) = ([Vec::new(), Vec::new()], Vec::new());
    for i in 0..changes {
        let greeting = format!("g{i}");
        let body = serde_json::json!({ "greeting": greeting, "repeat": 1 });
        let (status, answer) = post_json(a, "/api/core/plugins/echo/config", &body);
        assert_eq!(status, 200, "{answer}");
        let took = until_each(&others, |h| h.post("/api/plugins/echo/greet", "").1 == greeting);
        for (samples, t) in per_host.iter_mut().zip(&took) {
            samples.push(ms(*t));
        }
        every.push(ms(took.into_iter().max().unwrap_or_default()));
    }
    for (name, samples) in ["B", "C"].iter().zip(per_host.iter_mut()) {
        println!("RESULT config propagation to host {name}: {}", summary_ms(samples));
    }
    println!("RESULT config propagation to every host: {}", summary_ms(&mut every));

    // 2. Key revocations.
    let (mut per_host, mut every) = ([Vec::new(), Vec::new()], Vec::new());
    for i in 0..revocations {
        let body = serde_json::json!({ "name": format!("bench {i}"), "scopes": ["read"] });
        let (status, made) = post_json(a, "/api/plugins/apikeys/create", &body);
        assert_eq!(status, 201, "{made}");
        let made: serde_json::Value = serde_json::from_str(&made).expect("create answer");
        let (id, key) = (made["id"].as_str().unwrap(), made["key"].as_str().unwrap());
        let use_key = |h: &Host| {
            common::finish(
                common::agent()
                    .get(&format!("{}/api/core/plugins", h.base))
                    .set("Authorization", &format!("Bearer {key}"))
                    .call(),
            )
            .0
        };
        for h in others {
            assert_eq!(use_key(h), 200, "the new key is refused on another host");
        }
        let (status, answer) =
            post_json(a, "/api/plugins/apikeys/revoke", &serde_json::json!({ "id": id }));
        assert_eq!(status, 200, "{answer}");
        let took = until_each(&others, |h| use_key(h) == 401);
        for (samples, t) in per_host.iter_mut().zip(&took) {
            samples.push(ms(*t));
        }
        every.push(ms(took.into_iter().max().unwrap_or_default()));
    }
    for (name, samples) in ["B", "C"].iter().zip(per_host.iter_mut()) {
        println!("RESULT key revocation to refusal on host {name}: {}", summary_ms(samples));
    }
    println!("RESULT key revocation to refusal on every host: {}", summary_ms(&mut every));
}
