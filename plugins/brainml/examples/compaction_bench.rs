//! How long queries and writes wait while brainml compacts a large collection's log (see
//! docs/benchmarks-brainml.md, section "Compaction"). Not a test: it prints one JSON line per
//! mode.
//!
//!   compaction_bench [--docs 100000] [--dim 384] [--dir /tmp/brainml-compaction]
//!
//! For each mode a collection of `--docs` one-chunk documents (seeded Gaussian vectors, ~600
//! bytes of text each) is written three times over (two thirds of the log dead, so a
//! compaction is due), then compacted while one thread runs exact top-10 dense queries back
//! to back and another upserts one document ten times a second. `locked` compacts the way brainml
//! did before: the whole rewrite under the collection's write lock (`Collection::compact`);
//! `concurrent` the way it does now (`compact_concurrently`: read lock for the snapshot, no
//! lock while writing, write lock for the tail and the rename). Each query and write records
//! how long it waited for the lock; those that overlap the compaction are reported, and the
//! queries of the second before it as the baseline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use bkg_plugin_brainml::api::Distance;
use bkg_plugin_brainml::store::collection::{
    compact_concurrently_at, ChunkRecord, Collection, DocRecord, Meta, Record,
};
use serde_json::Map;

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1).cloned())
}

/// xorshift64*: a seeded stream of numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn gauss(&mut self) -> f32 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

const WORDS: &[&str] = &[
    "the",
    "log",
    "of",
    "a",
    "collection",
    "holds",
    "every",
    "document",
    "written",
    "to",
    "it",
    "and",
    "compaction",
    "keeps",
    "only",
    "live",
    "ones",
    "query",
    "vector",
    "text",
    "index",
    "search",
    "chunk",
    "slot",
    "record",
    "durable",
    "after",
    "fsync",
    "rename",
    "folder",
];

fn doc(n: usize, round: usize, dim: usize) -> DocRecord {
    let mut rng = Rng((n as u64 + 1) * 0x9e37_79b9 + round as u64 * 0x85eb_ca6b + 7);
    let vector: Vec<f32> = (0..dim).map(|_| rng.gauss()).collect();
    let mut text = String::with_capacity(640);
    while text.len() < 600 {
        text.push_str(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
        text.push(' ');
    }
    DocRecord {
        id: format!("d{n}"),
        metadata: Map::new(),
        chunks: vec![ChunkRecord { text: Some(text), vector }],
    }
}

/// (started at, waited for the lock, whole call) of each call.
type Samples = Mutex<Vec<(Instant, Duration, Duration)>>;

/// The calls that were running at some moment between `from` and `to`.
fn summary(samples: &Samples, from: Instant, to: Instant) -> serde_json::Value {
    let during: Vec<(Duration, Duration)> = samples
        .lock()
        .unwrap()
        .iter()
        .filter(|&&(at, _, total)| at <= to && at + total >= from)
        .map(|&(_, wait, total)| (wait, total))
        .collect();
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    let quantile = |mut v: Vec<Duration>, q: f64| {
        v.sort();
        v.get(((v.len().max(1) - 1) as f64 * q).round() as usize).copied().map_or(0.0, ms)
    };
    let waits: Vec<Duration> = during.iter().map(|x| x.0).collect();
    let totals: Vec<Duration> = during.iter().map(|x| x.1).collect();
    serde_json::json!({
        "calls": during.len(),
        "wait_max_ms": waits.iter().max().copied().map_or(0.0, ms),
        "wait_p50_ms": quantile(waits.clone(), 0.5),
        "wait_p99_ms": quantile(waits, 0.99),
        "latency_p50_ms": quantile(totals.clone(), 0.5),
        "latency_max_ms": totals.iter().max().copied().map_or(0.0, ms),
    })
}

fn run(mode: &str, root: &std::path::Path, docs: usize, dim: usize) -> serde_json::Value {
    let dir = root.join(mode);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let meta = Meta { name: mode.into(), model: None, dim, distance: Distance::Dot };
    let mut c = Collection::open(&dir, meta, &|m| eprintln!("{m}")).unwrap();
    let built = Instant::now();
    for round in 0..3 {
        for start in (0..docs).step_by(1000) {
            let batch = (start..(start + 1000).min(docs)).map(|n| doc(n, round, dim)).collect();
            c.write(Record::Upsert { docs: batch }).unwrap();
        }
    }
    let log_before = c.log_bytes();
    eprintln!("{mode}: {docs} documents x3 written in {:.1?}", built.elapsed());
    let c = RwLock::new(c);
    let (queries, writes): (Samples, Samples) = Default::default();
    let stop = AtomicBool::new(false);
    let mut q = Rng(42);
    let query: Vec<f32> = (0..dim).map(|_| q.gauss()).collect();
    let (mut from, mut to, mut compacted) = (Instant::now(), Instant::now(), false);
    let mut stages = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                let g = c.read().unwrap();
                let wait = at.elapsed();
                let hits = g.dense_k(&query, 10, &g.allowed(None), 0);
                assert_eq!(hits.len(), 10);
                drop(g);
                queries.lock().unwrap().push((at, wait, at.elapsed()));
            }
        });
        s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                let mut g = c.write().unwrap();
                let wait = at.elapsed();
                g.write(Record::Upsert { docs: vec![doc(docs + n, 0, dim)] }).unwrap();
                drop(g);
                writes.lock().unwrap().push((at, wait, at.elapsed()));
                n += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // A second of calls without a compaction first (the baseline), then the compaction.
        std::thread::sleep(Duration::from_secs(1));
        from = Instant::now();
        compacted = match mode {
            "locked" => c.write().unwrap().compact().map(|_| true).unwrap(),
            _ => compact_concurrently_at(&c, &|| false, None, &mut |_| stages.push(Instant::now()))
                .unwrap(),
        };
        to = Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
    });
    assert!(compacted, "{mode}: the compaction ran");
    let c = c.into_inner().unwrap();
    let baseline_from = from - Duration::from_secs(1);
    let out = serde_json::json!({
        "mode": mode,
        "docs": docs,
        "dim": dim,
        "log_mib_before": log_before as f64 / (1 << 20) as f64,
        "log_mib_after": c.log_bytes() as f64 / (1 << 20) as f64,
        "compaction_s": (to - from).as_secs_f64(),
        // concurrent, stage by stage: the snapshot (read lock), the writing (no lock), the last
        // step (write lock), closing the old file (no lock); the calls that overlap each.
        "stages": match stages[..] {
            [frozen, written, switched] => {
                let stage = |name: &str, a: Instant, b: Instant| {
                    serde_json::json!({
                        "stage": name,
                        "s": (b - a).as_secs_f64(),
                        "queries": summary(&queries, a, b),
                        "writes": summary(&writes, a, b),
                    })
                };
                serde_json::json!([
                    stage("snapshot", from, frozen),
                    stage("write", frozen, written),
                    stage("last step", written, switched),
                    stage("close old", switched, to),
                ])
            }
            _ => serde_json::Value::Null,
        },
        "queries_during": summary(&queries, from, to),
        "writes_during": summary(&writes, from, to),
        "queries_baseline": summary(&queries, baseline_from, from),
    });
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn main() {
    let docs: usize = arg("--docs").map_or(100_000, |s| s.parse().expect("--docs N"));
    let dim: usize = arg("--dim").map_or(384, |s| s.parse().expect("--dim N"));
    let root = std::path::PathBuf::from(
        arg("--dir").unwrap_or_else(|| "/tmp/brainml-compaction".to_string()),
    );
    for mode in ["locked", "concurrent"] {
        println!("{}", run(mode, &root, docs, dim));
    }
    let _ = std::fs::remove_dir_all(&root);
}
