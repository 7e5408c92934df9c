//! Issue 15 (crash isolation): what running a plugin in a supervised child process costs,
//! both modes measured on one release host in one run, rounds alternating the order:
//!
//! 1. Round trip of the `noop` fixture's no-op capability (`POST /api/plugins/noop/noop`, one
//!    keep-alive connection, calls back to back, each timed): p50/p90/p99 per mode and the
//!    difference. Target: process mode <= +20 us at p50.
//! 2. HTTP echo throughput (`POST /api/plugins/echo/echo`, 64 bytes, wrk -t1 -c32): median
//!    requests/s per mode. Target: process mode >= 0.8x in process.
//! 3. From a crash to serving again: the crash fixture in process mode is sent `segv`; timed
//!    from sending it and from its 503 to the first 200 of `noop` (polled back to back).
//!    Target: p99 < 200 ms. Between samples the plugin is stopped and started by the operator
//!    (which resets the restart backoff: each sample is a first crash, as the target means).
//!
//! The same plugin id switches modes between rounds (`POST /api/core/plugins/{id}/isolation`).
//! Swap latency in both modes is `bench_swap [--isolation process]`.
//!
//! ```text
//! cargo build --release -p bkg-host --bin bkg --examples \
//!     -p fixture-echo -p fixture-noop -p fixture-crashy
//! target/release/examples/bench_isolation [--calls 20000] [--rounds 3] [--duration 6]
//!     [--connections 32] [--crashes 30] [--skip-wrk 0]
//! ```
//!
//! scripts/bench-isolation.sh builds and runs everything.

mod common;

use std::time::{Duration, Instant};

use common::{fixture, lib_name, median, poll_until, quantile, wrk, Flags, Host, Wrk};

const MODES: [&str; 2] = ["in_process", "process"];
const TARGET_RTT_DELTA_US: f64 = 20.0;
const TARGET_THROUGHPUT_RATIO: f64 = 0.8;
const TARGET_CRASH_P99_MS: f64 = 200.0;

/// Put plugin `id` into `mode` and wait until it serves there (a child pid in process mode,
/// none in process) and answers `probe`.
fn set_mode(host: &Host, id: &str, mode: &str, probe: &str) {
    let (status, body) = common::finish(
        common::agent()
            .post(&format!("{}/api/core/plugins/{id}/isolation", host.base))
            .set("Authorization", &common::bearer())
            .set("Content-Type", "application/json")
            .send_string(&format!(r#"{{"mode":"{mode}"}}"#)),
    );
    assert_eq!(status, 200, "setting {id} to {mode}: {body}");
    let ok = poll_until(Duration::from_secs(30), Duration::from_millis(5), || {
        let p = host.plugin(id);
        p["isolation"] == mode
            && p["state"] == "running"
            && (mode == "process") == p["process"]["pid"].is_u64()
            && host.post(probe, "").0 == 200
    });
    host.check(ok, &format!("{id} to serve in {mode} mode"));
}

/// `calls` sequential calls of `path`, each timed (microseconds).
fn round_trips(host: &Host, path: &str, calls: usize) -> Vec<f64> {
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t0 = Instant::now();
        let (status, body) = host.post(path, "");
        let us = t0.elapsed().as_secs_f64() * 1e6;
        assert_eq!(status, 200, "{path}: {body}");
        samples.push(us);
    }
    samples
}

fn summary(sorted: &[f64]) -> String {
    format!(
        "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        quantile(sorted, 0.5),
        quantile(sorted, 0.9),
        quantile(sorted, 0.99),
        sorted.last().copied().unwrap_or(f64::NAN)
    )
}

fn main() {
    let flags =
        Flags::parse(&["calls", "rounds", "duration", "connections", "crashes", "skip-wrk"]);
    let calls: usize = flags.get("calls", 20_000);
    let rounds: usize = flags.get("rounds", 3);
    let secs: u64 = flags.get("duration", 6);
    let connections: usize = flags.get("connections", 32);
    let crashes: usize = flags.get("crashes", 30);
    let skip_wrk: u8 = flags.get("skip-wrk", 0);

    let host = Host::start(&[]);
    for id in ["noop", "echo", "crashy"] {
        host.install(&fixture(id), &lib_name(id));
    }
    for id in ["noop", "echo", "crashy"] {
        host.wait_state(id, "running", Duration::from_millis(10));
    }
    println!(
        "bench_isolation: {} CPUs; host pid {}; {rounds} rounds, order alternating",
        common::cpus(),
        host.pid()
    );

    // 1. Round trip of the no-op capability.
    let noop = "/api/plugins/noop/noop";
    let mut rtt: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for m in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            set_mode(&host, "noop", MODES[m], noop);
            round_trips(&host, noop, calls / 10); // warm-up
            let mut samples = round_trips(&host, noop, calls);
            samples.sort_by(f64::total_cmp);
            println!(
                "bench_isolation: round {} noop round trip {:>10} (us): {}",
                round + 1,
                MODES[m],
                summary(&samples)
            );
            rtt[m].extend(samples);
        }
    }
    for samples in rtt.iter_mut() {
        samples.sort_by(f64::total_cmp);
    }
    let delta_p50 = quantile(&rtt[1], 0.5) - quantile(&rtt[0], 0.5);
    let delta_p99 = quantile(&rtt[1], 0.99) - quantile(&rtt[0], 0.99);
    for m in 0..2 {
        println!(
            "bench_isolation: noop round trip {:>10}, all rounds ({} calls, us): {}",
            MODES[m],
            rtt[m].len(),
            summary(&rtt[m])
        );
    }
    println!(
        "bench_isolation: RESULT noop round trip process - in_process: p50 {delta_p50:+.1} us \
         (target <= +{TARGET_RTT_DELTA_US} us: {}), p99 {delta_p99:+.1} us",
        if delta_p50 <= TARGET_RTT_DELTA_US { "met" } else { "NOT met" }
    );

    // 2. HTTP echo throughput.
    if skip_wrk == 0 {
        let scratch = tempfile::tempdir().expect("temp dir");
        let script = scratch.path().join("post.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", 64)\n\
                 wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n\
                 wrk.headers[\"Authorization\"] = \"Bearer {}\"\n",
                common::BENCH_KEY
            ),
        )
        .expect("write wrk script");
        let echo = "/api/plugins/echo/echo";
        let url = format!("{}{echo}", host.base);
        println!(
            "bench_isolation: wrk -t1 -c{connections} -d{secs}s -s post.lua {url} (64 B body)"
        );
        let mut rps: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut non_2xx = 0;
        for round in 0..rounds {
            for m in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                set_mode(&host, "echo", MODES[m], echo);
                wrk(1, connections, 2, &script, &url); // warm-up
                let Wrk { rps: r, non_2xx: bad, .. } = wrk(1, connections, secs, &script, &url);
                println!(
                    "bench_isolation: round {} echo throughput {:>10}: {r:>10.0} req/s, non-2xx {bad}",
                    round + 1,
                    MODES[m]
                );
                rps[m].push(r);
                non_2xx += bad;
            }
        }
        let (a, b) = (median(&rps[0]), median(&rps[1]));
        let ratio = b / a;
        println!(
            "bench_isolation: RESULT echo throughput process/in_process = {ratio:.3} \
             ({b:.0} / {a:.0} req/s, medians; target >= {TARGET_THROUGHPUT_RATIO}: {}), \
             non-2xx answers: {non_2xx}",
            if ratio >= TARGET_THROUGHPUT_RATIO { "met" } else { "NOT met" }
        );
    }

    // 3. From a crash to serving again.
    set_mode(&host, "crashy", "process", "/api/plugins/crashy/noop");
    let (mut from_send, mut from_503) = (Vec::new(), Vec::new());
    for i in 0..crashes {
        let pid = host.plugin("crashy")["process"]["pid"].as_u64();
        let t0 = Instant::now();
        let (status, body) = host.post("/api/plugins/crashy/segv", "");
        let t503 = Instant::now();
        assert_eq!(status, 503, "crash {}: {body}", i + 1);
        let serving = poll_until(Duration::from_secs(30), Duration::ZERO, || {
            host.post("/api/plugins/crashy/noop", "").0 == 200
        });
        let t_serving = Instant::now();
        host.check(serving, &format!("crashy to serve again after crash {}", i + 1));
        let new_pid = host.plugin("crashy")["process"]["pid"].as_u64();
        assert!(new_pid.is_some() && new_pid != pid, "no new child: {pid:?} -> {new_pid:?}");
        from_send.push((t_serving - t0).as_secs_f64() * 1e3);
        from_503.push((t_serving - t503).as_secs_f64() * 1e3);
        // An operator's stop and start: the next crash is a first one again (no backoff
        // carried over, no crash loop).
        assert_eq!(host.post("/api/core/plugins/crashy/stop", "").0, 200);
        assert_eq!(host.post("/api/core/plugins/crashy/start", "").0, 200);
        let ok = poll_until(Duration::from_secs(30), Duration::from_millis(2), || {
            host.post("/api/plugins/crashy/noop", "").0 == 200
        });
        host.check(ok, "crashy to serve after the operator's start");
    }
    from_send.sort_by(f64::total_cmp);
    from_503.sort_by(f64::total_cmp);
    println!(
        "bench_isolation: crash -> serving again, {crashes} crashes (ms), from sending the \
         crashing call: {}",
        summary(&from_send)
    );
    println!("bench_isolation: crash -> serving again, from its 503 (ms): {}", summary(&from_503));
    let p99 = quantile(&from_send, 0.99);
    println!(
        "bench_isolation: RESULT crash -> serving again p99 {p99:.1} ms from the crashing call \
         (target < {TARGET_CRASH_P99_MS} ms: {})",
        if p99 < TARGET_CRASH_P99_MS { "met" } else { "NOT met" }
    );
}
