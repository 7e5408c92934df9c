#!/usr/bin/env bash
# brainml's ingestion and query-latency benchmarks of issue 12 (see docs/benchmarks-brainml.md,
# sections "Ingestion" and "Query latency"). Not part of CI: release builds, ~10k paragraphs
# embedded twice, a 100k-chunk collection; about half an hour on 2 cores.
#
#   ingest   ~10k real paragraphs (gensim 4.4.0's lee_background.cor from PyPI, Debian's
#            /usr/share/common-licenses, the package descriptions in /var/lib/dpkg/status and
#            the prose under /usr/share/doc) indexed through brainml's `index`, and the very
#            same texts embedded by candle's `model.infer` through the same HTTP API with the
#            same batch size, interleaved round by round in one host: brainml's overhead
#   latency  a 100k-chunk collection of 384-d vectors (the 10k paragraphs with their own
#            vectors, 90k more real paragraphs whose vectors mix two of those), then p50/p99
#            over HTTP at concurrency 1 of dense, bm25 and hybrid queries, of the query's
#            embedding alone (candle `model.infer`) and of dense search with the vector given;
#            exact search, then again after `train` when brainml has that capability
#
# Usage: scripts/bench-brainml.sh [ingest] [latency]     (default: both; latency needs the
#        vectors ingest wrote, kept in BENCH_WORK)
# Knobs (environment):
#   BENCH_VENV      the venv with numpy (default target/venv-quality)
#   BENCH_WORK      where the corpus and vectors go (default target/bench-brainml)
#   BENCH_N         paragraphs ingested (default 10000)      BENCH_FILL  more chunks (90000)
#   BENCH_ROUNDS    ingestion rounds, each side in turn (default 40: one call per side each)
#   BENCH_PER_CALL  documents per `index` / `model.infer` call (default 250)
#   BENCH_BATCH     embedding batch size on both sides (default 32, brainml's embed_batch)
#   BENCH_QUERIES   measured queries per mode (default 500)   BENCH_WARMUP (default 25)
#   BENCH_CPUS      the cores the host may use (default 0,1; taskset)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
venv=${BENCH_VENV:-$root/target/venv-quality}
work=${BENCH_WORK:-$root/target/bench-brainml}
n=${BENCH_N:-10000}
fill=${BENCH_FILL:-90000}
rounds=${BENCH_ROUNDS:-40}
per_call=${BENCH_PER_CALL:-250}
batch=${BENCH_BATCH:-32}
queries=${BENCH_QUERIES:-500}
warmup=${BENCH_WARMUP:-25}
cpus=${BENCH_CPUS:-0,1}
release=${CARGO_TARGET_DIR:-$root/target}/release
models=$root/models
sections=${*:-ingest latency}
has() { [[ " $sections " == *" $1 "* ]]; }
section() { printf '\n=== %s ===\n' "$*"; }
host_pid=""
cleanup() { if [ -n "$host_pid" ]; then kill "$host_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
mkdir -p "$work"

section "machine"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "cpu:     $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cores; host on cpus $cpus"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (other processes share these cores)"
echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- plugins/brainml plugins/candle host/src 2>/dev/null || echo ' (+ uncommitted changes in plugins/brainml, plugins/candle or host/src)')"

if [ ! -f "$models/sentence-transformers/all-MiniLM-L6-v2/model.safetensors" ]; then
  section "models"
  bash scripts/fetch-models.sh
fi

section "python venv ($venv) and corpus ($work)"
if ! "$venv/bin/python" -c "import numpy" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install numpy
fi
py=$venv/bin/python
client="$py $root/scripts/bench-brainml.py"
if [ ! -f "$work/lee_background.cor" ]; then
  # gensim's wheel carries the Lee corpus as test data: fetch the wheel, take that one file.
  "$venv/bin/pip" download gensim==4.4.0 --no-deps --only-binary=:all: -d "$work/dl"
  unzip -o -j -q "$work"/dl/gensim-4.4.0-*.whl gensim/test/test_data/lee_background.cor -d "$work"
fi
$client corpus "$work" "$work/lee_background.cor" "$n" "$fill"

section "build (release)"
cargo build --release -p bkg-host -p bkg-plugin-candle -p bkg-plugin-brainml

key=bench-admin-key-0123456789abcdef
base=""
start_host() {
  local dir=$work/host
  rm -rf "$dir"
  mkdir -p "$dir/plugins"
  for p in candle brainml; do cp "$release/libbkg_plugin_$p.so" "$dir/plugins/"; done
  BKG_ADMIN_KEY=$key RUST_LOG=warn NO_COLOR=1 taskset -c "$cpus" "$release/bkg" \
    --listen 127.0.0.1:0 --data-dir "$dir/data" --plugins-dir "$dir/plugins" \
    --models-dir "$models" >"$dir/stdout" 2>"$dir/log" &
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

start_host
section "selecting the paragraphs brainml indexes as one chunk (candle's model.tokenize)"
$client select "$base" "$key" "$work" "$n" "$fill"
if has ingest; then
  section "ingestion: brainml index vs candle model.infer, $n paragraphs, $rounds rounds, $per_call per call, batch $batch"
  $client ingest "$base" "$key" "$work" "$host_pid" "$rounds" "$per_call" "$batch" | tee "$work/ingest.jsonl"
fi
if has latency; then
  [ -f "$work/vectors.f32" ] || { echo "no $work/vectors.f32: run the ingest section first"; exit 1; }
  section "latency: filling a collection to $((n + fill)) chunks"
  $client fill "$base" "$key" "$work" lat "$per_call" | tee "$work/fill-result.jsonl"
  section "latency: exact search, $queries queries per mode, concurrency 1"
  $client latency "$base" "$key" "$work" lat exact "$queries" "$warmup" | tee "$work/latency.jsonl"
  if curl -sf -H "Authorization: Bearer $key" "$base/api/core/plugins/brainml" | grep -q '"train"'; then
    section "latency: train, then the same queries"
    $client train "$base" "$key" lat | tee -a "$work/latency.jsonl"
    $client latency "$base" "$key" "$work" lat trained "$queries" "$warmup" | tee -a "$work/latency.jsonl"
  else
    echo "(brainml has no train capability in this build: exact search only)"
  fi
  echo "host RSS: $(ps -o rss= -p "$host_pid") KiB"
fi
stop_host
