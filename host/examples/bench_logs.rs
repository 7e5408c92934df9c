//! Logging under load (issue #3): invoke throughput of `POST /api/plugins/echo/noop` on a real
//! release host, (a) quiet, (b) while the plugin logs ~10k lines/s through its host handle,
//! (c) the same with 10 WebSocket log subscribers reading every line. Same clients, same run.
//!
//! `cargo build --release -p bkg-host --examples -p fixture-echo`
//! `target/release/examples/bench_logs [--duration 8] [--rounds 3] [--clients 4] [--subscribers 10]`

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{bearer, fixture, lib_name, median, Flags, Host, BENCH_KEY};

/// Calls per second the clients completed in `secs`.
fn throughput(host: &Host, clients: usize, secs: u64) -> f64 {
    let done = AtomicU64::new(0);
    let until = Instant::now() + Duration::from_secs(secs);
    let url = format!("{}/api/plugins/echo/noop", host.base);
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                let agent = common::agent();
                while Instant::now() < until {
                    let r = agent.post(&url).set("Authorization", &bearer()).send_string("");
                    assert!(r.is_ok_and(|r| r.status() == 200), "a call failed");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / secs as f64
}

/// Log lines/s through the plugin: 100 lines per `spam` call, paced at 100 calls/s.
fn spam(host: &Host, stop: &AtomicBool, lines: &AtomicU64) {
    let agent = common::agent();
    let url = format!("{}/api/plugins/echo/spam", host.base);
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let r = agent.post(&url).set("Authorization", &bearer()).send_string("100");
        if let Err(e) = &r {
            panic!("spam failed: {e}");
        }
        lines.fetch_add(100, Ordering::Relaxed);
        next += Duration::from_millis(10);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// A WebSocket subscriber that reads until `stop`; returns (lines, dropped).
fn subscribe(host: &Host, stop: &AtomicBool) -> (u64, u64) {
    let url = format!(
        "{}/ws/core/plugins/echo/logs?tail=0&access_token={BENCH_KEY}",
        host.base.replace("http://", "ws://")
    );
    let (mut ws, _) = tungstenite::connect(url.as_str()).expect("connect");
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = ws.get_mut() {
        tcp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    }
    let (mut lines, mut dropped) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                if let Some(n) = t.as_str().strip_prefix("{\"dropped\":") {
                    dropped += n.trim_end_matches('}').parse::<u64>().unwrap_or(0);
                } else {
                    lines += 1;
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("subscriber: {e}"),
        }
    }
    (lines, dropped)
}

fn main() {
    let flags = Flags::parse(&["duration", "rounds", "clients", "subscribers"]);
    let secs: u64 = flags.get("duration", 8);
    let rounds: usize = flags.get("rounds", 3);
    let clients: usize = flags.get("clients", 4);
    let subscribers: usize = flags.get("subscribers", 10);

    let host = Host::start(&[]);
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running", Duration::from_millis(10));
    throughput(&host, clients, 2); // warm-up

    let (mut quiet, mut logging, mut watched) = (Vec::new(), Vec::new(), Vec::new());
    let (mut line_rates, mut received, mut lost) = (Vec::new(), 0u64, 0u64);
    for round in 0..rounds {
        quiet.push(throughput(&host, clients, secs));
        for with_subscribers in [false, true] {
            let stop = AtomicBool::new(false);
            let lines = AtomicU64::new(0);
            let (rate, stats) = std::thread::scope(|s| {
                let readers: Vec<_> = (0..if with_subscribers { subscribers } else { 0 })
                    .map(|_| s.spawn(|| subscribe(&host, &stop)))
                    .collect();
                let spammer = s.spawn(|| spam(&host, &stop, &lines));
                std::thread::sleep(Duration::from_millis(500));
                let started = Instant::now();
                let before = lines.load(Ordering::Relaxed);
                let rate = throughput(&host, clients, secs);
                let line_rate = (lines.load(Ordering::Relaxed) - before) as f64
                    / started.elapsed().as_secs_f64();
                stop.store(true, Ordering::Relaxed);
                spammer.join().unwrap();
                let stats: Vec<(u64, u64)> =
                    readers.into_iter().map(|r| r.join().unwrap()).collect();
                ((rate, line_rate), stats)
            });
            line_rates.push(rate.1);
            if with_subscribers {
                watched.push(rate.0);
                received += stats.iter().map(|s| s.0).sum::<u64>();
                lost += stats.iter().map(|s| s.1).sum::<u64>();
            } else {
                logging.push(rate.0);
            }
        }
        println!(
            "bench_logs: round {}: quiet {:.0}/s, logging {:.0}/s, logging + {subscribers} subscribers {:.0}/s",
            round + 1,
            quiet[round],
            logging[round],
            watched[round]
        );
    }
    let (q, l, w) = (median(&quiet), median(&logging), median(&watched));
    println!(
        "bench_logs: {clients} client threads, {secs}s per measurement, medians of {rounds} rounds"
    );
    println!(
        "bench_logs: plugin log rate while measuring: {:.0} lines/s (median)",
        median(&line_rates)
    );
    println!("bench_logs: quiet                          {q:8.0} calls/s");
    println!(
        "bench_logs: plugin logging                 {l:8.0} calls/s ({:+.1}% vs quiet)",
        (l / q - 1.0) * 100.0
    );
    println!(
        "bench_logs: logging + {subscribers} WebSocket subscribers {w:8.0} calls/s ({:+.1}% vs logging, {:+.1}% vs quiet)",
        (w / l - 1.0) * 100.0,
        (w / q - 1.0) * 100.0
    );
    println!("bench_logs: subscribers received {received} lines, were told of {lost} dropped");
    println!(
        "bench_logs: RESULT with 10k log lines/s and {subscribers} subscribers: {:+.1}% vs logging alone (target drop < 10%: {})",
        (w / l - 1.0) * 100.0,
        if w >= 0.9 * l { "met" } else { "NOT met" }
    );
}
