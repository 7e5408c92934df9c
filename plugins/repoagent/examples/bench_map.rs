//! `code.map`'s cost on a large tree, for scripts/bench-repoagent-map.sh: the plugin's walk and
//! index build (symbols included) on a rayon pool of `--threads` threads, then
//! - cold: a new graph from every file (`Graph::sync` on an empty graph), ranked and fitted to
//!   `--tokens` (what the first `code.map` of a repository does);
//! - after a one-file edit, `--edits` times: one file's symbols extracted again (a new entry,
//!   as the watcher makes it, a function added to it), the generation bumped, and the next map
//!   (the graph brought up to date with that one file, ranked, fitted), as `code.map` does
//!   after a save; and, for comparison, a map built from scratch on the edited index.
//!
//! Prints one JSON line. Usage: bench_map --root DIR [--threads 2] [--tokens 1024] [--edits 20] [--print]

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use bkg_plugin_repoagent::lang::Lang;
use bkg_plugin_repoagent::{index, map, walk};

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn main() {
    let mut root = None;
    let mut threads = 2usize;
    let mut tokens = 1024usize;
    let mut edits = 20usize;
    let mut print = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--root" => root = Some(PathBuf::from(value())),
            "--threads" => threads = value().parse().expect("--threads N"),
            "--tokens" => tokens = value().parse().expect("--tokens N"),
            "--edits" => edits = value().parse().expect("--edits N"),
            "--print" => print = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let root = root.expect("--root DIR").canonicalize().expect("root exists");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let reader = index::Reader::default();
    let started = Instant::now();
    let walked = walk::walk(&root, &root, 1 << 20, &|| false).expect("walk");
    let done = AtomicUsize::new(0);
    let mut idx = pool
        .install(|| index::build("bench", &root, walked, 1 << 20, &reader, &done, &|| false))
        .expect("index");
    let index_s = started.elapsed().as_secs_f64();
    let files = idx.files.len();
    let with_symbols = idx.files.values().filter(|e| !e.symbols.defs.is_empty()).count();
    let defs: usize = idx.files.values().map(|e| e.symbols.defs.len()).sum();
    let refs: usize = idx.files.values().map(|e| e.symbols.refs.len()).sum();

    let t = Instant::now();
    let mut graph = map::Graph::default();
    let synced = graph.sync(&idx);
    let sync_s = t.elapsed().as_secs_f64();
    let cold = graph.map(&[], tokens).unwrap();
    let cold_s = t.elapsed().as_secs_f64();
    if print {
        eprintln!("{}", cold.text);
        for t in graph.top(&[], 40).unwrap() {
            eprintln!("{}", serde_json::to_string(&t).unwrap());
        }
    }

    // The files edited: Rust files with definitions, spread over the tree.
    let rust: Vec<String> = idx
        .files
        .iter()
        .filter(|(_, e)| e.lang == Some(Lang::Rust) && !e.symbols.defs.is_empty())
        .map(|(p, _)| p.clone())
        .collect();
    let step = (rust.len() / edits.max(1)).max(1);
    let (mut edit_s, mut edit_sync_s, mut scratch_s) = (Vec::new(), Vec::new(), Vec::new());
    let mut updated_total = 0;
    for (i, path) in rust.iter().step_by(step).take(edits).enumerate() {
        let mut src = std::fs::read(root.join(path)).unwrap();
        src.extend_from_slice(format!("\npub fn bench_map_edit_{i}() {{}}\n").as_bytes());
        let fresh = reader.extractor.extract(Lang::Rust, &src).unwrap();
        let mut edited = idx.clone();
        edited.files.get_mut(path).unwrap().symbols = Arc::new(fresh);
        edited.generation += 1;
        idx = edited;
        let t = Instant::now();
        updated_total += graph.sync(&idx);
        edit_sync_s.push(t.elapsed().as_secs_f64());
        graph.map(&[], tokens).unwrap();
        edit_s.push(t.elapsed().as_secs_f64());
        if i < 3 {
            let t = Instant::now();
            let mut g = map::Graph::default();
            g.sync(&idx);
            g.map(&[], tokens).unwrap();
            scratch_s.push(t.elapsed().as_secs_f64());
        }
    }
    let n = edit_s.len();
    println!(
        "{}",
        serde_json::json!({
            "root": root, "threads": threads, "tokens": tokens,
            "files": files, "files_with_definitions": with_symbols, "defs": defs, "refs": refs,
            "index_s": index_s,
            "cold": {"graph_files": synced, "sync_s": sync_s, "map_s": cold_s,
                     "tokens": cold.tokens, "included": cold.included, "ranked": cold.ranked,
                     "pagerank_iterations": cold.iterations},
            "after_one_file_edit": {"edits": n, "files_updated": updated_total,
                "sync_p50_s": pct(&mut edit_sync_s.clone(), 0.5),
                "sync_max_s": pct(&mut edit_sync_s, 1.0),
                "map_p50_s": pct(&mut edit_s.clone(), 0.5),
                "map_p95_s": pct(&mut edit_s, 0.95)},
            "from_scratch_after_edit_s": scratch_s,
        })
    );
}
