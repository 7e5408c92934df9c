//! Issue #2, measurement 4: memory across load/unload cycles. Each cycle installs the release
//! echo plugin (copy to a hidden temp name, rename), waits until `GET /api/core/plugins/echo`
//! says `running`, deletes the file and waits until it says `unloaded`. The host's VmRSS (from
//! /proc/PID/status) after the first cycle is compared with the figure after the last one,
//! and the plugin's history is counted by residency (`unloaded` vs `pinned`; the host keeps
//! the last 50 generations).
//!
//! ```text
//! cargo build --release -p bkg-host --bin bkg --examples -p fixture-echo
//! target/release/examples/bench_cycles [--cycles 1000] [--settle-ms 300] [--label TEXT]
//! ```

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{fixture, lib_name, proc_status_kib, proc_threads, Flags, Host};

const TARGET_GROWTH_KIB: i64 = 2 * 1024;

struct Sample {
    cycle: usize,
    rss_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    threads: u64,
    mapped_shadows: usize,
}

/// How many shadow copies of plugin libraries the process still maps.
fn mapped_shadows(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut paths: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.contains("/shadow/"))
        .collect();
    paths.sort_unstable();
    paths.dedup();
    paths.len()
}

fn sample(host: &Host, cycle: usize, settle: Duration) -> Sample {
    std::thread::sleep(settle);
    let pid = host.pid();
    Sample {
        cycle,
        rss_kib: proc_status_kib(pid, "VmRSS").expect("VmRSS"),
        anon_kib: proc_status_kib(pid, "RssAnon").unwrap_or(0),
        file_kib: proc_status_kib(pid, "RssFile").unwrap_or(0),
        threads: proc_threads(pid).unwrap_or(0),
        mapped_shadows: mapped_shadows(pid),
    }
}

fn main() {
    let flags = Flags::parse(&["cycles", "settle-ms", "label"]);
    // A label for the output lines, e.g. to tell a diagnostic run from the plain one.
    let label: String = flags.get("label", String::new());
    let tag = if label.is_empty() {
        "bench_cycles".to_string()
    } else {
        format!("bench_cycles ({label})")
    };
    let cycles: usize = flags.get("cycles", 1000);
    let settle = Duration::from_millis(flags.get("settle-ms", 300));
    let checkpoints: Vec<usize> =
        [1, 10, 50, 100, 250, 500, 750, cycles].into_iter().filter(|&c| c <= cycles).collect();

    let source = fixture("echo");
    let name = lib_name("echo");
    let host = Host::start(&[]);
    let every = Duration::from_millis(2);
    let before = sample(&host, 0, settle);

    let mut samples = vec![before];
    let started = Instant::now();
    for cycle in 1..=cycles {
        host.install(&source, &name);
        host.wait_state("echo", "running", every);
        host.remove(&name);
        host.wait_state("echo", "unloaded", every);
        if checkpoints.contains(&cycle) {
            samples.push(sample(&host, cycle, settle));
        }
    }
    let elapsed = started.elapsed();

    let view = host.plugin("echo");
    let history = view["history"].as_array().cloned().unwrap_or_default();
    let mut by_residency: BTreeMap<String, usize> = BTreeMap::new();
    for entry in &history {
        let r = entry["residency"].as_str().unwrap_or("(none)").to_string();
        *by_residency.entry(r).or_default() += 1;
    }
    let last_generation = history.last().and_then(|e| e["generation"].as_u64()).unwrap_or(0);

    println!(
        "{tag}: {cycles} load/unload cycles in {:.1} s ({:.1} ms per cycle)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / cycles.max(1) as f64
    );
    println!(
        "{tag}: {:>6} {:>10} {:>10} {:>10} {:>8} {:>14}",
        "cycle", "VmRSS KiB", "RssAnon", "RssFile", "threads", "mapped shadows"
    );
    for s in &samples {
        println!(
            "{tag}: {:>6} {:>10} {:>10} {:>10} {:>8} {:>14}",
            s.cycle, s.rss_kib, s.anon_kib, s.file_kib, s.threads, s.mapped_shadows
        );
    }
    let first = samples.iter().find(|s| s.cycle == 1).expect("cycle 1 sample");
    let last = samples.last().expect("a sample");
    let growth = last.rss_kib as i64 - first.rss_kib as i64;
    println!(
        "{tag}: history keeps {} generations (last generation {last_generation}): {:?}",
        history.len(),
        by_residency
    );
    println!(
        "{tag}: RESULT VmRSS after cycle 1: {} KiB, after cycle {}: {} KiB, growth {} KiB = {:.2} MiB \
         (target < 2 MiB: {})",
        first.rss_kib,
        last.cycle,
        last.rss_kib,
        growth,
        growth as f64 / 1024.0,
        if growth < TARGET_GROWTH_KIB { "met" } else { "NOT met" }
    );
}
