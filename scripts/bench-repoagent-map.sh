#!/usr/bin/env bash
# repoagent's repository map (code.map) on a large tree: a cold map vs the map after a one-file
# edit (results in docs/benchmarks-repoagent.md, "Repository map"). Not part of CI.
#
#   plugins/repoagent/examples/bench_map.rs (release), on BENCH_TREE (default: the cargo
#   registry's crate sources, ~/.cargo/registry/src/<index>/, >= 10k files), a rayon pool of
#   BENCH_THREADS threads for the index build: the index built as repo.add builds it, then the
#   cold map (every file's contribution, PageRank, fit), then BENCH_EDITS one-file edits
#   (a function appended to a Rust file, its symbols extracted again, the generation bumped)
#   each followed by the next map, and three maps built from scratch after an edit.
#
# Usage: scripts/bench-repoagent-map.sh   (BENCH_THREADS, default 2; BENCH_TOKENS, default
#        1024; BENCH_EDITS, default 20; BENCH_TREE)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
threads=${BENCH_THREADS:-2}
tokens=${BENCH_TOKENS:-1024}
edits=${BENCH_EDITS:-20}
tree=${BENCH_TREE:-$(ls -d "$HOME"/.cargo/registry/src/*/ | head -n1)}
cargo build --quiet --release -p bkg-plugin-repoagent --example bench_map
echo "tree: $tree ($(find "$tree" -type f | wc -l) files), threads $threads, nproc $(nproc)" >&2
target/release/examples/bench_map --root "$tree" --threads "$threads" --tokens "$tokens" \
    --edits "$edits"
