//! A plugin library's heap counter is read (by `/metrics` on every scrape, by the telemetry
//! sampler every second) from memory inside the library: no read may overlap its `dlclose`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::support::{fixture, lib_name, Host, StopOnDrop};

const CYCLES: u64 = 200;

#[test]
fn heap_reads_never_overlap_a_library_close_over_200_load_unload_cycles() {
    let host = Host::start_with(&["--settle-ms", "100"]);
    let echo = fixture("echo");
    let name = lib_name("echo");

    let stop = AtomicBool::new(false);
    // Scrapes done by each scraper, and how many of the /metrics ones showed echo's heap.
    let done = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let heap_seen = AtomicUsize::new(0);
    let failures = std::thread::scope(|s| {
        let scrapers: Vec<_> = ["/metrics", "/api/core/telemetry"]
            .into_iter()
            .enumerate()
            .map(|(i, path)| {
                let (host, stop, done, heap_seen) = (&host, &stop, &done, &heap_seen);
                s.spawn(move || {
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let (status, body) = host.get(path);
                        if status != 200 {
                            failures.push(format!("{path}: {status} {body}"));
                        } else if body.contains("bkg_plugin_heap_bytes{plugin=\"echo\"}") {
                            heap_seen.fetch_add(1, Ordering::SeqCst);
                        }
                        done[i].fetch_add(1, Ordering::SeqCst);
                    }
                    failures
                })
            })
            .collect();

        let guard = StopOnDrop(&stop);
        for cycle in 1..=CYCLES {
            host.install(&echo, &name);
            host.wait_for(&format!("generation {cycle} to run"), || {
                let p = host.plugin("echo");
                p["generation"] == cycle && p["state"] == "running"
            });
            // Both scrapers finish a scrape while this generation is loaded, so each
            // generation is read before it is closed (and maybe while it is closed).
            let marks: Vec<usize> = done.iter().map(|d| d.load(Ordering::SeqCst)).collect();
            host.wait_for(&format!("scrapes of generation {cycle}"), || {
                done.iter().zip(&marks).all(|(d, m)| d.load(Ordering::SeqCst) > *m + 1)
            });
            host.remove(&name);
            host.wait_state("echo", "unloaded");
            let p = host.plugin("echo");
            let last = p["history"].as_array().unwrap().last().cloned().unwrap_or_default();
            assert_eq!(last["generation"], cycle, "{p}");
            assert_eq!(last["reason"], "removed", "{last}");
            assert_eq!(
                last["residency"], "unloaded",
                "generation {cycle} stayed in memory: {last}"
            );
        }
        drop(guard);
        scrapers.into_iter().flat_map(|t| t.join().expect("a scraper panicked")).collect::<Vec<_>>()
    });

    assert!(failures.is_empty(), "{} scrapes failed, first: {}", failures.len(), failures[0]);
    assert!(
        heap_seen.load(Ordering::SeqCst) > 0,
        "/metrics never showed echo's heap: the read under test never ran"
    );
    // The host is alive and counted every generation as unloaded.
    assert_eq!(host.get("/healthz").0, 200);
    let (status, metrics) = host.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!("bkg_library_unloads_total{{residency=\"unloaded\"}} {CYCLES}")),
        "expected {CYCLES} unloads:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("bkg_library_unloads_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(metrics.contains("bkg_library_unloads_total{residency=\"pinned\"} 0"));
}
