//! repoagent's metrics on their own, for scripts/bench-repoagent-metrics.sh: per file one read
//! and `metrics::analyze` (parse + the walk over the tree), on a rayon pool of `--threads`
//! threads (the plugin's own pool is one like it). Prints one JSON line per run; with `--out`,
//! writes `path<TAB>line<TAB>name<TAB>cyclomatic` for every function of the last run.
//!
//! With `--parse-only`, the files are only parsed (the share of the time tree-sitter takes).
//!
//! Usage: bench_metrics --list FILE (one path a line) [--threads 2] [--runs 3] [--out TSV]
//!        [--parse-only]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bkg_plugin_repoagent::lang::Lang;
use bkg_plugin_repoagent::metrics;
use rayon::prelude::*;

fn main() {
    let (mut list, mut out) = (None, None);
    let (mut threads, mut runs) = (2usize, 3usize);
    let mut parse_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--list" => list = Some(PathBuf::from(value())),
            "--out" => out = Some(PathBuf::from(value())),
            "--threads" => threads = value().parse().expect("--threads N"),
            "--runs" => runs = value().parse().expect("--runs N"),
            "--parse-only" => parse_only = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let list = std::fs::read_to_string(list.expect("--list FILE")).expect("the list");
    let files: Vec<(PathBuf, Lang)> = list
        .lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| Some((PathBuf::from(l), Lang::of_path(Path::new(l))?)))
        .collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let mut last = Vec::new();
    for run in 0..runs {
        let started = Instant::now();
        let measured: Vec<(&Path, metrics::FileMetrics)> = pool.install(|| {
            files
                .par_iter()
                .filter_map(|(p, lang)| {
                    let bytes = std::fs::read(p).ok()?;
                    if parse_only {
                        let mut parser = tree_sitter::Parser::new();
                        parser.set_language(&lang.grammar()).ok()?;
                        parser.parse(&bytes, None)?;
                        return Some((p.as_path(), metrics::FileMetrics::default()));
                    }
                    Some((p.as_path(), metrics::analyze(*lang, &bytes).ok()?))
                })
                .collect()
        });
        let seconds = started.elapsed().as_secs_f64();
        let functions: usize = measured.iter().map(|(_, m)| m.functions.len()).sum();
        println!(
            "{{\"run\":{run},\"parse_only\":{parse_only},\"threads\":{threads},\"files\":{},\"functions\":{functions},\"seconds\":{seconds:.3},\"files_per_s\":{:.0}}}",
            measured.len(),
            measured.len() as f64 / seconds
        );
        last = measured;
    }
    if let Some(out) = out {
        let mut w = std::io::BufWriter::new(std::fs::File::create(out).expect("--out"));
        for (p, m) in &last {
            for f in &m.functions {
                writeln!(w, "{}\t{}\t{}\t{}", p.display(), f.line, f.name, f.cyclomatic).unwrap();
            }
        }
    }
}
