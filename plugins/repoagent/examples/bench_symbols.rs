//! The symbol half of repoagent's index on its own, for scripts/bench-repoagent.sh: per file
//! one read and `Extractor::extract` (parse, our query, definitions with parents and
//! signatures, references), on a rayon pool of `--threads` threads (the plugin's own pool is
//! one like it). The files come from a list (one path a line), the same list
//! `ctags -L` reads, so both tools see the same files. Prints one JSON line per run.
//!
//! Usage: bench_symbols --list FILE [--threads 2] [--runs 3]

use std::path::PathBuf;
use std::time::Instant;

use bkg_plugin_repoagent::lang::Lang;
use bkg_plugin_repoagent::symbols::Extractor;
use rayon::prelude::*;

fn main() {
    let mut list = None;
    let mut threads = 2usize;
    let mut runs = 3usize;
    let mut parse_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--list" => list = Some(PathBuf::from(value())),
            "--threads" => threads = value().parse().expect("--threads N"),
            "--runs" => runs = value().parse().expect("--runs N"),
            "--parse-only" => parse_only = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let list = std::fs::read_to_string(list.expect("--list FILE")).expect("the list reads");
    let files: Vec<(PathBuf, Lang)> = list
        .lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let p = PathBuf::from(l);
            Lang::of_path(&p).map(|lang| (p, lang))
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    for run in 0..runs {
        // A fresh extractor each run: query compilation is part of the cost.
        let extractor = Extractor::new();
        let started = Instant::now();
        let (bytes, defs, refs, failed) = pool.install(|| {
            files
                .par_iter()
                .map(|(path, lang)| match std::fs::read(path) {
                    Ok(b) if parse_only => {
                        let mut p = tree_sitter::Parser::new();
                        p.set_language(&lang.grammar()).unwrap();
                        let t = p.parse(&b, None).unwrap();
                        (b.len(), t.root_node().child_count(), 0, 0)
                    }
                    Ok(b) => match extractor.extract(*lang, &b) {
                        Ok(fs) => (b.len(), fs.defs.len(), fs.refs.len(), 0),
                        Err(_) => (b.len(), 0, 0, 1),
                    },
                    Err(_) => (0, 0, 0, 1),
                })
                .reduce(|| (0, 0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3))
        });
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{{\"run\":{run},\"threads\":{threads},\"files\":{},\"bytes\":{bytes},\"defs\":{defs},\"refs\":{refs},\"failed\":{failed},\"seconds\":{seconds:.3},\"files_per_s\":{:.0}}}",
            files.len(),
            files.len() as f64 / seconds
        );
    }
}
