//! The counting half of repoagent's index on its own, for scripts/bench-repoagent.sh: the
//! plugin's walk (`walk::walk`: gitignore, hidden, size limit), then per file one read, the
//! binary probe, `stats::language_of` and `stats::count`, on a rayon pool of `--threads`
//! threads (the plugin's own pool is one like it). No symbols: this is the part of `repo.add`
//! that scc and tokei's CLI also do. Prints one JSON line per run.
//!
//! Usage: bench_stats --root DIR [--threads 2] [--runs 3] [--max-file-bytes 1048576]
//!        [--slowest N] (also list the N files tokei took longest on, to stderr)

use std::path::PathBuf;
use std::time::Instant;

use bkg_plugin_repoagent::{stats, walk};
use rayon::prelude::*;

fn main() {
    let mut root = None;
    let mut threads = 2usize;
    let mut runs = 3usize;
    let mut max_file_bytes = 1u64 << 20;
    let mut slowest = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--root" => root = Some(PathBuf::from(value())),
            "--threads" => threads = value().parse().expect("--threads N"),
            "--runs" => runs = value().parse().expect("--runs N"),
            "--max-file-bytes" => max_file_bytes = value().parse().expect("--max-file-bytes N"),
            "--slowest" => slowest = value().parse().expect("--slowest N"),
            other => panic!("unknown argument {other}"),
        }
    }
    let root = root.expect("--root DIR").canonicalize().expect("root exists");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    for run in 0..runs {
        let started = Instant::now();
        let walked = walk::walk(&root, &root, max_file_bytes, &|| false).expect("walk");
        let walk_s = started.elapsed().as_secs_f64();
        type Counted = (tokei::LanguageType, stats::Counts, f64, usize);
        let per_file: Vec<Option<Counted>> = pool.install(|| {
            walked
                .files
                .par_iter()
                .map(|f| {
                    let lang = stats::language_of(&f.abs)?;
                    let bytes = std::fs::read(&f.abs).ok()?;
                    if bytes[..bytes.len().min(8192)].contains(&0) {
                        return None;
                    }
                    let t = Instant::now();
                    let counts = stats::count(lang, &bytes);
                    Some((lang, counts, t.elapsed().as_secs_f64(), bytes.len()))
                })
                .collect()
        });
        let (languages, totals) = stats::by_language(
            per_file.iter().flatten().map(|(lang, counts, _, _)| ("", *lang, *counts)),
        );
        let secs = started.elapsed().as_secs_f64();
        let counting_s: f64 = per_file.iter().flatten().map(|c| c.2).sum();
        if slowest > 0 {
            let mut by_time: Vec<(f64, usize, &str)> = walked
                .files
                .iter()
                .zip(&per_file)
                .filter_map(|(f, c)| c.as_ref().map(|c| (c.2, c.3, f.rel.as_str())))
                .collect();
            by_time.sort_by(|a, b| b.0.total_cmp(&a.0));
            for (s, bytes, rel) in by_time.iter().take(slowest) {
                eprintln!("{s:8.3} s {:>10} bytes  {rel}", bytes);
            }
        }
        println!(
            "{}",
            serde_json::json!({
                "run": run,
                "threads": threads,
                "files_walked": walked.files.len(),
                "files_counted": totals.files,
                "lines": totals.counts.lines,
                "code": totals.counts.code,
                "comments": totals.counts.comments,
                "blanks": totals.counts.blanks,
                "walk_s": walk_s,
                "secs": secs,
                "counting_cpu_s": counting_s,
                "languages": languages,
            })
        );
    }
}
