//! `stats::Counter::count` (repoagent's own counter, `stats/tokei_rules.rs`, for most languages) gives
//! every file exactly the counts tokei's library gives it, on real code nobody here wrote: crate
//! sources of this workspace's Cargo.lock in the cargo registry (always there after the build)
//! and CPython's standard library (which scripts/test.sh relies on; its `site-packages` left
//! out, as what is installed there differs between machines). Per file: code, comments, blanks.
//! The first differing files are printed with both counts.
//!
//! `bench_stats --verify` (plugins/repoagent/examples/bench_stats.rs) does the same on a whole
//! tree outside CI.

mod common;

use std::path::{Path, PathBuf};

use bkg_plugin_repoagent::stats;
use common::{python_stdlib, registry_crate};
use rayon::prelude::*;

/// Every regular file under `dir` tokei has a language for (symbolic links and
/// `site-packages` left out).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            if p.file_name().is_some_and(|n| n != "site-packages") {
                files(&p, out);
            }
        } else if meta.is_file() && stats::language_of(&p).is_some() {
            out.push(p);
        }
    }
}

/// The text tokei reads for a file: transcoded when it starts with a byte order mark (as
/// `stats::Counter::count` does).
fn transcoded(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut text = Vec::new();
    encoding_rs_io::DecodeReaderBytesBuilder::new()
        .build(bytes)
        .read_to_end(&mut text)
        .expect("reading from memory");
    text
}

#[test]
fn counts_equal_tokei_file_by_file_on_registry_crates_and_cpython() {
    let mut roots: Vec<PathBuf> =
        ["serde_json", "regex-syntax", "tokei", "candle-core", "tree-sitter", "notify"]
            .iter()
            .map(|c| registry_crate(c))
            .collect();
    roots.push(python_stdlib());
    let mut all = Vec::new();
    for root in &roots {
        files(root, &mut all);
    }
    // Both counters on the plugin's kind of pool (tokei splits files across rayon tasks).
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let counter = stats::Counter::default();
    let results: Vec<(PathBuf, tokei::LanguageType, u64, stats::Counts, stats::Counts)> = pool
        .install(|| {
            all.par_iter()
                .map(|p| {
                    let lang = stats::language_of(p).unwrap();
                    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                    let ours = counter.count(lang, &bytes);
                    let theirs = stats::tokei_counts(lang, &transcoded(&bytes));
                    let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
                    (p.clone(), lang, lines, ours, theirs)
                })
                .collect()
        });
    let differing: Vec<_> = results.iter().filter(|r| r.3 != r.4).collect();
    for (p, lang, _, ours, theirs) in differing.iter().take(20) {
        eprintln!("differs: {} ({lang}): ours {ours:?}, tokei {theirs:?}", p.display());
    }
    let langs: std::collections::BTreeSet<&str> = results.iter().map(|r| r.1.name()).collect();
    let total: u64 = results.iter().map(|r| r.3.lines).sum();
    let newlines: u64 = results.iter().map(|r| r.2).sum();
    eprintln!(
        "{} files, {} languages ({langs:?}), {total} lines counted ({newlines} newlines)",
        results.len(),
        langs.len()
    );
    // The comparison covered real work: Rust with its doc comments, Python, C, Markdown.
    assert!(results.len() > 1000, "only {} files under {roots:?}", results.len());
    for needed in ["Rust", "Python", "C", "Markdown", "TOML"] {
        assert!(langs.contains(needed), "no {needed} file under {roots:?}");
    }
    assert!(
        differing.is_empty(),
        "{} of {} files counted otherwise than tokei (the first above)",
        differing.len(),
        results.len()
    );
}
