//! brainml's HNSW in process on GloVe 6B 50-d (see scripts/bench-brainml-ann.sh and
//! docs/benchmarks-brainml.md, section ANN). Not a test: it prints one JSON line per ef_search.
//!
//!   ann_bench --npy glove_6B_50d_emb.npy [--threads 2] [--m 16] [--efc 200]
//!             [--write-queries q.f32]  (the held-out queries, for the HTTP run)
//!
//! Split: every 400th row (1000 rows) is a query, the rest (399,000) the base; all rows are
//! normalised (cosine as inner product). The ground truth is brute force over the base.

use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use bkg_plugin_brainml::ann::hnsw::{Hnsw, Params, Scratch};
use bkg_plugin_brainml::ann::space::{dot, FlatSpace, Metric};

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1).cloned())
}

/// A float32 .npy of two dimensions, as rows (Fortran order transposed).
fn load_npy(path: &str) -> (Vec<f32>, usize, usize) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(&b[..6], b"\x93NUMPY", "{path} is not .npy");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(header.contains("'<f4'"), "not float32: {header}");
    let fortran = header.contains("'fortran_order': True");
    let shape = &header[header.find("'shape': (").unwrap() + 10..];
    let shape = &shape[..shape.find(')').unwrap()];
    let dims: Vec<usize> = shape.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    let (n, d) = (dims[0], dims[1]);
    let raw: Vec<f32> =
        b[10 + hlen..].chunks_exact(4).map(|x| f32::from_le_bytes(x.try_into().unwrap())).collect();
    assert_eq!(raw.len(), n * d);
    let rows = if fortran {
        let mut r = vec![0f32; n * d];
        for j in 0..d {
            for i in 0..n {
                r[i * d + j] = raw[j * n + i];
            }
        }
        r
    } else {
        raw
    };
    (rows, n, d)
}

/// CPU seconds this process has used (user + system), from /proc/self/stat.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn parallel<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let mut parts: Vec<Vec<(usize, T)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return out;
                        }
                        out.push((i, f(i)));
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<(usize, T)> = parts.drain(..).flatten().collect();
    all.sort_by_key(|x| x.0);
    all.into_iter().map(|x| x.1).collect()
}

fn main() {
    let npy = arg("--npy").expect("--npy path");
    let threads: usize = arg("--threads").map_or(2, |s| s.parse().unwrap());
    let m: usize = arg("--m").map_or(16, |s| s.parse().unwrap());
    let efc: usize = arg("--efc").map_or(200, |s| s.parse().unwrap());
    let (rows, n, d) = load_npy(&npy);
    let (mut base, mut queries) = (Vec::new(), Vec::new());
    for (i, r) in rows.chunks_exact(d).enumerate() {
        let mut r = r.to_vec();
        let norm = dot(&r, &r).sqrt();
        if norm > 0.0 {
            r.iter_mut().for_each(|x| *x /= norm);
        }
        if i % 400 == 0 {
            queries.extend(r)
        } else {
            base.extend(r)
        }
    }
    let (nb, nq) = (base.len() / d, queries.len() / d);
    eprintln!("{n} x {d}: base {nb}, queries {nq}, threads {threads}");
    if let Some(p) = arg("--write-queries") {
        let bytes: Vec<u8> = queries.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(&p, bytes).unwrap();
    }
    let t = Instant::now();
    let truth: Vec<Vec<u32>> = parallel(nq, threads, |qi| {
        let q = &queries[qi * d..(qi + 1) * d];
        let mut s: Vec<(f32, u32)> =
            base.chunks_exact(d).enumerate().map(|(i, x)| (dot(q, x), i as u32)).collect();
        s.select_nth_unstable_by(9, |a, b| b.0.total_cmp(&a.0));
        s.truncate(10);
        s.into_iter().map(|x| x.1).collect()
    });
    eprintln!("ground truth in {:.1} s", t.elapsed().as_secs_f64());

    let space = FlatSpace { vectors: &base, dim: d, metric: Metric::Dot };
    // --graph FILE: reuse a graph saved by an earlier run (search-only runs while tuning).
    let saved = arg("--graph");
    let loaded = saved.as_ref().and_then(|p| std::fs::read(p).ok());
    let (h, build_s) = match loaded {
        Some(b) => (Hnsw::from_bytes(&mut b.as_slice()).expect("a saved graph"), f64::NAN),
        None => {
            let mut h = Hnsw::new(Params { m, ef_construction: efc }, 42);
            let ids: Vec<u32> = (0..nb as u32).collect();
            let (t, c) = (Instant::now(), cpu_s());
            h.build(&space, &ids, threads, &AtomicUsize::new(0), &|| false);
            let build_s = t.elapsed().as_secs_f64();
            eprintln!("build: {build_s:.1} s wall, {:.1} s cpu", cpu_s() - c);
            if let Some(p) = &saved {
                let mut b = Vec::new();
                h.to_bytes(&mut b);
                std::fs::write(p, b).unwrap();
            }
            (h, build_s)
        }
    };
    let graph_bytes = h.bytes();
    println!(
        "{{\"impl\":\"bkg\",\"what\":\"build\",\"n\":{nb},\"dim\":{d},\"m\":{m},\"ef_construction\":{efc},\
         \"threads\":{threads},\"build_s\":{build_s:.2},\"bytes_per_vector\":{:.1},\"graph_bytes_per_vector\":{:.1}}}",
        (graph_bytes + base.len() * 4) as f64 / nb as f64,
        graph_bytes as f64 / nb as f64
    );
    for ef in [10, 16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256] {
        // Best of three passes over the queries, each pass spread over `threads` threads.
        let mut best = f64::INFINITY;
        let mut cpu = 0.0;
        let mut found = 0;
        for _ in 0..3 {
            let (t, c) = (Instant::now(), cpu_s());
            let res: Vec<Vec<u32>> = parallel(nq, threads, |qi| {
                thread_local!(static S: std::cell::RefCell<Scratch> = Default::default());
                let q = &queries[qi * d..(qi + 1) * d];
                S.with(|s| h.search(&space, q, 10, ef, &|_| true, &mut s.borrow_mut()))
                    .into_iter()
                    .map(|c| c.id)
                    .collect()
            });
            best = best.min(t.elapsed().as_secs_f64());
            cpu += cpu_s() - c;
            found = res
                .iter()
                .zip(&truth)
                .map(|(r, t)| r.iter().filter(|x| t.contains(x)).count())
                .sum();
        }
        println!(
            "{{\"impl\":\"bkg\",\"what\":\"search\",\"ef_search\":{ef},\"recall_at_10\":{:.4},\"qps\":{:.0},\"qps_per_cpu_s\":{:.0}}}",
            found as f64 / (nq * 10) as f64,
            nq as f64 / best,
            3.0 * nq as f64 / cpu.max(0.01)
        );
    }
}
