#!/usr/bin/env bash
# repoagent's code RAG: MRR@10 of code.semantic_search on doc-comment pairs of a real crate
# (walkdir from the cargo registry, at the version Cargo.lock pins), semantic (hybrid and
# dense) against brainml's BM25 over the same chunks, in one run (results in
# docs/benchmarks-repoagent.md, "Code RAG"). Not part of CI (the integration test it runs is;
# this prints its figures).
#
#   The query is the first sentence of a documented function's doc comment; the target is that
#   function's chunk, indexed with the doc comments removed (code.index {docs: false}). The
#   test host/tests/it/repoagent_rag.rs builds the pairs, indexes, and prints the three MRRs.
#
# Needs the models of scripts/fetch-models.sh. Usage: scripts/bench-repoagent-rag.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "nproc $(nproc)" >&2
cargo test --quiet -p bkg-host --test it -- repoagent_rag --nocapture 2>&1 \
    | grep -E '^(MRR@10|code.ask answered)|test result'
