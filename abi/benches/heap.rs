//! The price of per-plugin heap accounting: allocation + free pairs through the system
//! allocator directly and through `bkg_abi::heap::CountingAlloc` (what `export_plugin!`
//! installs), on one thread and on two threads at once (the counter is one shared atomic).
//!
//! ```text
//! cargo bench -p bkg-abi --bench heap
//! ```
//!
//! `BKG_BENCH_ITERS` (pairs per thread and run, default 4,000,000) and `BKG_BENCH_RUNS` (runs
//! per variant, default 7) tune it; the figure is the median of the runs, in ns per pair.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Instant;

use bkg_abi::heap::CountingAlloc;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// ns per alloc+free pair on each of `threads` threads running at once.
fn pairs<A: GlobalAlloc + Sync>(alloc: &A, size: usize, threads: usize, iters: usize) -> f64 {
    let layout = Layout::from_size_align(size, 8).unwrap();
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..iters {
                    // SAFETY: a non-zero-sized layout; freed with the same layout right away.
                    unsafe {
                        let p = alloc.alloc(black_box(layout));
                        assert!(!p.is_null());
                        p.write(1);
                        alloc.dealloc(black_box(p), layout);
                    }
                }
            });
        }
    });
    start.elapsed().as_nanos() as f64 / iters as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let iters = env_or("BKG_BENCH_ITERS", 4_000_000);
    let runs = env_or("BKG_BENCH_RUNS", 7);
    let counting = CountingAlloc::system();
    println!("alloc+free pairs, {iters} per thread and run, median of {runs} runs (ns per pair)");
    println!("{:>7} {:>7} {:>9} {:>9} {:>8}", "size", "threads", "system", "counting", "extra");
    for threads in [1, 2] {
        for size in [16, 256, 4096, 65536] {
            let (mut sys, mut cnt) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                // Interleaved, so drift on a noisy machine hits both alike.
                sys.push(pairs(&System, size, threads, iters));
                cnt.push(pairs(&counting, size, threads, iters));
            }
            let (s, c) = (median(sys), median(cnt));
            println!("{size:>7} {threads:>7} {s:>9.2} {c:>9.2} {:>8.2}", c - s);
            println!("RESULT heap_alloc size={size} threads={threads} system_ns={s:.2} counting_ns={c:.2}");
        }
    }
}
