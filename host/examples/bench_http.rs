//! Issue #2, measurement 2: HTTP throughput of `POST /api/plugins/echo/echo` on the release
//! host against a bare actix-web echo handler (the `bare_echo` example), with the same wrk
//! command, the same number of HTTP workers, in the same run. Rounds alternate the order of
//! the two servers; the figure is the median requests/s over the rounds.
//!
//! ```text
//! cargo build --release -p bkg-host --bin bkg --examples -p fixture-echo
//! target/release/examples/bench_http [--duration 10] [--connections 32] [--threads 1]
//!     [--workers NPROC] [--rounds 3] [--warmup 3] [--body-bytes 64] [--plugin-workers N]
//! ```
//!
//! Needs `wrk` on PATH (scripts/bench.sh installs it). Everything runs on 127.0.0.1.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{cpus, example_bin, fixture, lib_name, median, read_listen_line, Flags, Host};

const TARGET_RATIO: f64 = 0.8;
const PATH: &str = "/api/plugins/echo/echo";

/// What one wrk run reported.
#[derive(Debug, Clone, Default)]
struct WrkResult {
    requests_per_sec: f64,
    requests: u64,
    latency_avg: String,
    latency_p99: String,
    non_2xx: u64,
    socket_errors: String,
}

fn parse_wrk(text: &str) -> WrkResult {
    let mut r = WrkResult::default();
    let mut in_distribution = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.requests_per_sec = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            r.socket_errors = v.trim().to_string();
        } else if t.starts_with("Latency Distribution") {
            in_distribution = true;
        } else if let Some(v) = t.strip_prefix("Latency") {
            if !in_distribution && r.latency_avg.is_empty() {
                r.latency_avg = v.split_whitespace().next().unwrap_or("").to_string();
            }
        } else if in_distribution && t.starts_with("99%") {
            r.latency_p99 = t.split_whitespace().nth(1).unwrap_or("").to_string();
        } else if t.contains(" requests in ") {
            r.requests = t.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    r
}

fn wrk_args(
    threads: usize,
    connections: usize,
    secs: u64,
    script: &Path,
    url: &str,
) -> Vec<String> {
    vec![
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{secs}s"),
        "--latency".into(),
        "-s".into(),
        script.display().to_string(),
        url.into(),
    ]
}

fn run_wrk(args: &[String]) -> WrkResult {
    let out = Command::new("wrk")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wrk (is it installed? scripts/bench.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    let r = parse_wrk(&text);
    assert!(r.requests_per_sec > 0.0, "cannot read wrk's output:\n{text}");
    r
}

fn main() {
    let flags = Flags::parse(&[
        "duration",
        "connections",
        "threads",
        "workers",
        "rounds",
        "warmup",
        "body-bytes",
        "plugin-workers",
    ]);
    let secs: u64 = flags.get("duration", 10);
    let connections: usize = flags.get("connections", 32);
    let threads: usize = flags.get("threads", 1);
    let workers: usize = flags.get("workers", cpus());
    let rounds: usize = flags.get("rounds", 3);
    let warmup: u64 = flags.get("warmup", 3);
    let body_bytes: usize = flags.get("body-bytes", 64);
    // 0: the host's default.
    let plugin_workers: usize = flags.get("plugin-workers", 0);

    // The same Lua script for both servers: a POST with a fixed body.
    let scratch = tempfile::tempdir().expect("temp dir");
    let script = scratch.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", {body_bytes})\n\
             wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer {key}\"\n",
            key = common::BENCH_KEY
        ),
    )
    .expect("write wrk script");

    // The host, with the release echo plugin installed and running.
    let workers_arg = workers.to_string();
    let plugin_workers_arg = plugin_workers.to_string();
    let mut host_args = vec!["--http-workers", &workers_arg];
    if plugin_workers > 0 {
        host_args.extend(["--plugin-workers", &plugin_workers_arg]);
    }
    let host = Host::start(&host_args);
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running", Duration::from_millis(10));

    // The bare server, same number of workers.
    let mut bare = common::die_with_parent(&mut Command::new(example_bin("bare_echo")))
        .args(["--listen", "127.0.0.1:0", "--workers", &workers_arg])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start bare_echo");
    let bare_base = read_listen_line(bare.stdout.take().expect("stdout"), "bare_echo");

    // Both must answer the same way before they are compared.
    let body = "x".repeat(body_bytes);
    let (status, answer) = host.post(PATH, &body);
    assert!(status == 200 && answer == body, "host echo: {status} {answer}");
    let (status, answer) = common::finish(
        common::agent()
            .post(&format!("{bare_base}{PATH}"))
            .set("Content-Type", "application/octet-stream")
            .send_string(&body),
    );
    assert!(status == 200 && answer == body, "bare echo: {status} {answer}");

    let host_url = format!("{}{PATH}", host.base);
    let bare_url = format!("{bare_base}{PATH}");
    println!(
        "bench_http: {} CPUs, {workers} HTTP workers each, wrk -t{threads} -c{connections} -d{secs}s, \
         {body_bytes}-byte POST body, {rounds} rounds (+{warmup}s warm-up each)",
        cpus()
    );
    println!(
        "bench_http: wrk command: wrk {} (URL: host {} / bare {})",
        wrk_args(threads, connections, secs, Path::new("post.lua"), "URL").join(" "),
        host_url,
        bare_url
    );
    println!("bench_http: post.lua:\n{}", std::fs::read_to_string(&script).unwrap_or_default());

    if warmup > 0 {
        run_wrk(&wrk_args(threads, connections, warmup, &script, &host_url));
        run_wrk(&wrk_args(threads, connections, warmup, &script, &bare_url));
    }

    let mut host_rps = Vec::new();
    let mut bare_rps = Vec::new();
    let mut failures = 0u64;
    for round in 0..rounds {
        let order: [(&str, &str); 2] = if round % 2 == 0 {
            [("host", &host_url), ("bare", &bare_url)]
        } else {
            [("bare", &bare_url), ("host", &host_url)]
        };
        for (who, url) in order {
            let r = run_wrk(&wrk_args(threads, connections, secs, &script, url));
            println!(
                "bench_http: round {} {who:>4}: {:>10.0} req/s  ({} requests, latency avg {} p99 {}, \
                 non-2xx {}, socket errors: {})",
                round + 1,
                r.requests_per_sec,
                r.requests,
                r.latency_avg,
                r.latency_p99,
                r.non_2xx,
                if r.socket_errors.is_empty() { "none" } else { &r.socket_errors }
            );
            failures += r.non_2xx;
            if who == "host" {
                host_rps.push(r.requests_per_sec);
            } else {
                bare_rps.push(r.requests_per_sec);
            }
        }
    }
    let _ = bare.kill();
    let _ = bare.wait();

    let (h, b) = (median(&host_rps), median(&bare_rps));
    let ratio = h / b;
    println!("bench_http: host median {h:.0} req/s, bare actix-web median {b:.0} req/s");
    println!(
        "bench_http: RESULT host/bare = {ratio:.3} (target >= {TARGET_RATIO}: {}), non-2xx answers: {failures}",
        if ratio >= TARGET_RATIO { "met" } else { "NOT met" }
    );
}
