use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{fixture, lib_name, Host};

fn ws_json<S: std::io::Read + std::io::Write>(ws: &mut tungstenite::WebSocket<S>) -> Value {
    loop {
        if let tungstenite::Message::Text(text) = ws.read().expect("read a WebSocket message") {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

fn connect(
    host: &Host,
    path: &str,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>> {
    let url = host.ws_url(path);
    let (mut ws, _) = tungstenite::connect(url.as_str()).expect("connect WebSocket");
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = ws.get_mut() {
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    ws
}

#[test]
fn telemetry_counts_calls_errors_and_latency_and_streams_every_second() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.install(&fixture("panicky"), &lib_name("panicky"));
    host.wait_state("echo", "running");
    host.wait_state("panicky", "running");
    let mut ws = connect(&host, "/ws/core/plugins/panicky/telemetry");
    // The first sample of a plugin is the sampler's baseline; rates start from there.
    host.wait_for("a first sample", || {
        !host.get_json("/api/core/plugins/panicky/telemetry").1["current"].is_null()
    });

    for _ in 0..30 {
        assert_eq!(host.post("/api/plugins/echo/echo", "x").0, 200);
    }
    for _ in 0..2 {
        assert_eq!(host.post("/api/plugins/panicky/boom", "").0, 500);
    }
    assert_eq!(host.post("/api/plugins/panicky/ok", "").0, 200);

    let (status, t) = host.get_json("/api/core/plugins/echo/telemetry");
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["totals"]["calls"], 30);
    assert_eq!(t["totals"]["errors"], 0);

    // The sampler turns the counters into per-second figures. How the three calls fall into
    // sampler seconds depends on timing (all in one, or split over two), so check what holds
    // however they fall: once a sample has seen all three, each sample's error rate is its own
    // errors over its own calls, and the samples add up to 3 calls and 2 errors.
    host.wait_for("a sample that has seen panicky's three calls", || {
        host.get_json("/api/core/plugins/panicky/telemetry").1["current"]["calls_total"] == 3
    });
    let (_, t) = host.get_json("/api/core/plugins/panicky/telemetry");
    let mut history = t["history"].as_array().unwrap().clone();
    history.sort_by_key(|s| s["at_ms"].as_u64().unwrap());
    let total = |s: &Value, k: &str| s[k].as_u64().unwrap_or_else(|| panic!("no {k} in {s}"));
    assert_eq!(total(&history[0], "calls_total"), 0, "the baseline came before the calls");
    let (mut calls, mut errors) = (0, 0);
    for pair in history.windows(2) {
        let (prev, sample) = (&pair[0], &pair[1]);
        let dc = total(sample, "calls_total") - total(prev, "calls_total");
        let de = total(sample, "errors_total") - total(prev, "errors_total");
        let rate = sample["error_rate"].as_f64().unwrap();
        if dc > 0 {
            assert!(
                (rate - de as f64 / dc as f64).abs() < 1e-9,
                "{dc} calls, {de} errors: {sample}"
            );
            assert!(sample["calls_per_s"].as_f64().unwrap() > 0.0, "{sample}");
            assert!(sample["p50_ms"].as_f64().is_some(), "{sample}");
        } else {
            assert_eq!(rate, 0.0, "{sample}");
        }
        calls += dc;
        errors += de;
    }
    assert_eq!((calls, errors), (3, 2), "{history:?}");
    assert_eq!(t["totals"]["errors"], 2);

    // The WebSocket pushes samples of that plugin.
    let message = ws_json(&mut ws);
    assert_eq!(message["id"], "panicky");
    assert!(message["sample"]["calls_total"].as_u64().is_some(), "{message}");

    // The whole-host stream carries the process figures and every plugin.
    let mut all = connect(&host, "/ws/core/telemetry");
    let tick = ws_json(&mut all);
    assert!(tick["host"]["rss_bytes"].as_u64().unwrap() > 1_000_000, "{tick}");
    assert!(
        tick["plugins"]["echo"].is_object() && tick["plugins"]["panicky"].is_object(),
        "{tick}"
    );
    let (_, summary) = host.get_json("/api/core/telemetry");
    assert_eq!(summary["host"]["plugins_running"], 2, "{summary}");
    assert_eq!(host.get("/api/core/plugins/ghost/telemetry").0, 404);
}

fn heap_now(host: &Host) -> u64 {
    let (_, t) = host.get_json("/api/core/plugins/echo/telemetry");
    t["current"]["heap_bytes"].as_u64().unwrap_or_else(|| panic!("no heap_bytes in {t}"))
}

#[test]
fn heap_bytes_follow_what_the_plugin_allocates_and_frees_and_what_it_left_is_reported() {
    const MIB: u64 = 1 << 20;
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    host.wait_for("a first sample", || {
        !host.get_json("/api/core/plugins/echo/telemetry").1["current"].is_null()
    });
    let base = heap_now(&host);
    assert!(base > 0, "a running plugin holds some heap");
    assert!(base < 8 * MIB, "the echo fixture holds little: {base}");

    assert_eq!(host.post("/api/plugins/echo/hold", &(16 * MIB).to_string()).0, 200);
    host.wait_for("the sample to show the 16 MiB held", || heap_now(&host) >= base + 16 * MIB);
    let (_, metrics) = host.get("/metrics");
    let gauge: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bkg_plugin_heap_bytes{plugin=\"echo\"} "))
        .unwrap_or_else(|| panic!("no heap gauge in\n{metrics}"))
        .parse()
        .unwrap();
    assert!(gauge >= (base + 16 * MIB) as f64, "{gauge}");

    assert_eq!(host.post("/api/plugins/echo/release", "").0, 200);
    host.wait_for("the sample to show it freed", || heap_now(&host) < base + MIB);

    // 3 MiB leaked: still counted after the plugin object is dropped, and reported with the
    // retired generation (the library itself really leaves memory).
    assert_eq!(host.post("/api/plugins/echo/leak", &(3 * MIB).to_string()).0, 200);
    host.remove(&lib_name("echo"));
    host.wait_state("echo", "unloaded");
    let history = host.plugin("echo")["history"].clone();
    let first = &history.as_array().unwrap()[0];
    assert_eq!(first["residency"], "unloaded", "{history}");
    let left = first["heap_left_bytes"].as_u64().unwrap_or_else(|| panic!("{history}"));
    assert!((3 * MIB..3 * MIB + MIB).contains(&left), "heap left after drop: {left}");
}

/// A library that does not count its heap (`heap = untracked`, or built against bkg-abi
/// 0.1.0, which exports no counter) loads and serves as before; its heap shows as absent,
/// never as a made-up 0.
#[test]
fn a_library_without_a_heap_counter_loads_and_reports_no_heap() {
    let host = Host::start();
    // No plugin at all: the per-plugin families are empty and left out, not an error.
    let (status, metrics) = host.get("/metrics");
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("bkg_process_resident_memory_bytes"), "{metrics}");
    host.install(&fixture("uncounted"), &lib_name("uncounted"));
    host.wait_state("uncounted", "running");
    assert_eq!(host.post("/api/plugins/uncounted/echo", "hi"), (200, "hi".to_string()));
    host.wait_for("a sample", || {
        !host.get_json("/api/core/plugins/uncounted/telemetry").1["current"].is_null()
    });
    let (_, t) = host.get_json("/api/core/plugins/uncounted/telemetry");
    assert!(t["current"]["heap_bytes"].is_null(), "{t}");
    let (_, metrics) = host.get("/metrics");
    assert!(metrics.contains("bkg_plugin_up{plugin=\"uncounted\"} 1"), "{metrics}");
    assert!(!metrics.contains("bkg_plugin_heap_bytes{plugin=\"uncounted\"}"), "{metrics}");
    host.remove(&lib_name("uncounted"));
    host.wait_state("uncounted", "unloaded");
    let history = host.plugin("uncounted")["history"].clone();
    assert_eq!(history[0]["residency"], "unloaded", "{history}");
    assert!(history[0]["heap_left_bytes"].is_null(), "{history}");
}

#[test]
fn metrics_are_prometheus_text_that_promtool_accepts() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");
    for _ in 0..5 {
        assert_eq!(host.post("/api/plugins/echo/echo", "x").0, 200);
    }
    host.install(&fixture("echo-v2"), &lib_name("echo"));
    host.wait_for("v2", || host.plugin("echo")["version"] == "2.0.0");

    let (status, text) = host.get("/metrics");
    assert_eq!(status, 200);
    for line in [
        "bkg_plugin_calls_total{plugin=\"echo\"} 5",
        "bkg_plugin_generation{plugin=\"echo\"} 2",
        "bkg_plugin_up{plugin=\"echo\"} 1",
        "bkg_library_unloads_total{residency=\"unloaded\"} 1",
        "bkg_plugin_loads_total 2",
        "bkg_plugin_call_duration_seconds_count{plugin=\"echo\"} 5",
        "bkg_plugins{state=\"running\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing '{line}' in\n{text}");
    }

    // promtool (Debian package `prometheus`; scripts/test.sh installs it) must accept it.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool is needed for this test: apt-get install prometheus (scripts/test.sh does)",
        );
    use std::io::Write;
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
