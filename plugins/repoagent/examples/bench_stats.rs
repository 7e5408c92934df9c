//! The counting half of repoagent's index on its own, for scripts/bench-repoagent.sh: the
//! plugin's walk (`walk::walk`: gitignore, hidden, size limit), then per file one read, the
//! binary probe, `stats::language_of` and `stats::Counter::count`, on a rayon pool of `--threads`
//! threads (the plugin's own pool is one like it). No symbols: this is the part of `repo.add`
//! that scc and tokei's CLI also do. Prints one JSON line per run.
//!
//! Usage: bench_stats --root DIR [--threads 2] [--runs 3] [--max-file-bytes 1048576]
//!        [--slowest N] (also list the N files counting took longest on, to stderr)
//!        bench_stats --verify --root DIR [--root DIR ...] [--threads 2] [--show N]
//!
//! `--verify` times nothing: it counts every file under each root (the same walk, every size)
//! with `stats::Counter::count` and with tokei's library (`stats::tokei_counts`, after the same BOM
//! transcoding) and prints the number of files compared and of those that differ, listing the
//! first N differing files with both counts (default 20); it exits 1 when any differ.

use std::path::PathBuf;
use std::time::Instant;

use bkg_plugin_repoagent::{stats, walk};
use rayon::prelude::*;

fn main() {
    if std::env::args().any(|a| a == "--verify") {
        return verify();
    }
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
    // One counter for all runs, as the plugin keeps one (its rules are built on first use).
    let counter = stats::Counter::default();
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
                    let counts = counter.count(lang, &bytes);
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

/// `--verify`: `stats::Counter::count` against tokei's library on every file of the roots.
fn verify() {
    let mut roots = Vec::new();
    let mut threads = 2usize;
    let mut show = 20usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--verify" => {}
            "--root" => roots.push(PathBuf::from(value())),
            "--threads" => threads = value().parse().expect("--threads N"),
            "--show" => show = value().parse().expect("--show N"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!roots.is_empty(), "--verify needs at least one --root DIR");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let counter = stats::Counter::default();
    let (mut compared, mut differing) = (0usize, 0usize);
    for root in roots {
        let root = root.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", root.display()));
        let walked = walk::walk(&root, &root, u64::MAX, &|| false).expect("walk");
        type Diff = (String, tokei::LanguageType, stats::Counts, stats::Counts);
        let results: Vec<Option<Option<Diff>>> = pool.install(|| {
            walked
                .files
                .par_iter()
                .map(|f| {
                    let lang = stats::language_of(&f.abs)?;
                    let bytes = std::fs::read(&f.abs).ok()?;
                    let ours = counter.count(lang, &bytes);
                    let text = transcoded(&bytes);
                    let theirs = stats::tokei_counts(lang, &text);
                    Some((ours != theirs).then(|| (f.rel.clone(), lang, ours, theirs)))
                })
                .collect()
        });
        let files = results.iter().flatten().count();
        let diffs: Vec<&Diff> = results.iter().flatten().flatten().collect();
        for (rel, lang, ours, theirs) in diffs.iter().take(show) {
            eprintln!("differs: {rel} ({lang}): ours {ours:?}, tokei {theirs:?}");
        }
        println!(
            "{}",
            serde_json::json!({
                "root": root.display().to_string(),
                "files_compared": files,
                "files_differing": diffs.len(),
            })
        );
        compared += files;
        differing += diffs.len();
    }
    println!("{}", serde_json::json!({"files_compared": compared, "files_differing": differing}));
    if differing > 0 {
        std::process::exit(1);
    }
}

/// The text tokei reads for a file: transcoded when it starts with a byte order mark.
fn transcoded(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut text = Vec::with_capacity(bytes.len());
    let mut reader = encoding_rs_io::DecodeReaderBytesBuilder::new().build(bytes);
    reader.read_to_end(&mut text).expect("reading from memory");
    text
}
