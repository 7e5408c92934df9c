//! Model download throughput and memory (issue #3): a release host downloads one large
//! git-lfs file from a hub on 127.0.0.1 (the test suite's fake hub), verifies its SHA-256 and
//! installs it; compared with a plain HTTP GET of the same file in the same run. Reports MB/s
//! and how much the host's peak RSS grew (the transfer is streamed, so it should not grow with
//! the file).
//!
//!   cargo build --release -p bkg-host --examples -p fixture-echo
//!   target/release/examples/bench_download [--mib 256] [--rounds 3]

mod common;
#[path = "../tests/it/hub.rs"]
#[allow(dead_code)]
mod hub;

use std::io::Read as _;
use std::time::{Duration, Instant};

use common::{fixture, lib_name, median, poll_until, proc_status_kib, Flags, Host};
use serde_json::Value;

fn main() {
    let flags = Flags::parse(&["mib", "rounds"]);
    let mib: usize = flags.get("mib", 256);
    let rounds: usize = flags.get("rounds", 3);
    let hub = hub::FakeHub::start();
    let data = hub::bytes(mib << 20, 11);
    for round in 0..rounds {
        hub.add(
            &format!("bench/m{round}"),
            "model.safetensors",
            hub::HubFile { data: data.clone(), lfs: true, ..Default::default() },
        );
    }

    let host = Host::start(&["--hub-endpoint", &hub.url]);
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running", Duration::from_millis(10));
    let rss_before = proc_status_kib(host.pid(), "VmRSS").unwrap_or(0);

    let (mut plain, mut via_host) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Baseline: the same bytes over a plain GET, read and dropped.
        let url = format!("{}/bench/m{round}/resolve/main/model.safetensors", hub.url);
        let started = Instant::now();
        let mut reader = ureq::get(&url).call().expect("plain GET").into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0usize;
        loop {
            let got = reader.read(&mut buf).expect("read");
            if got == 0 {
                break;
            }
            n += got;
        }
        assert_eq!(n, data.len());
        plain.push(mib as f64 / started.elapsed().as_secs_f64());

        let body = serde_json::json!({ "repo": format!("bench/m{round}"),
            "files": ["model.safetensors"] })
        .to_string();
        let started = Instant::now();
        let (status, job) = host.post("/api/core/plugins/echo/models/download", &body);
        assert_eq!(status, 202, "{job}");
        let id = serde_json::from_str::<Value>(&job).unwrap()["id"].as_str().unwrap().to_string();
        let mut state = String::new();
        let ended = poll_until(Duration::from_secs(600), Duration::from_millis(5), || {
            let (_, v) = host.get(&format!("/api/core/models/downloads/{id}"));
            let v: Value = serde_json::from_str(&v).unwrap_or(Value::Null);
            state = v["state"].as_str().unwrap_or("").to_string();
            matches!(state.as_str(), "installed" | "failed" | "cancelled")
        });
        host.check(ended && state == "installed", "the download to be installed");
        via_host.push(mib as f64 / started.elapsed().as_secs_f64());
        println!(
            "round {round}: plain GET {:.0} MiB/s, bkg download+verify+install {:.0} MiB/s",
            plain[round], via_host[round]
        );
    }
    let hwm = proc_status_kib(host.pid(), "VmHWM").unwrap_or(0);
    println!(
        "file {mib} MiB x {rounds}: plain GET median {:.0} MiB/s; through bkg median {:.0} MiB/s \
         ({:.2}x of plain; includes SHA-256 of the file and the install)",
        median(&plain),
        median(&via_host),
        median(&via_host) / median(&plain)
    );
    println!(
        "host RSS before {:.1} MiB, peak {:.1} MiB (growth {:.1} MiB for {} MiB downloaded)",
        rss_before as f64 / 1024.0,
        hwm as f64 / 1024.0,
        (hwm.saturating_sub(rss_before)) as f64 / 1024.0,
        mib * rounds
    );
}
