#!/usr/bin/env bash
# The ML benchmarks of issue 4 (see docs/benchmarks-ml.md). Not part of CI: it sets up a
# Python venv with PyTorch (~6 GB, kept outside the repo and reused) and takes minutes.
#
#   embed  embedding throughput, batch 32 and batch 1, 2 threads, on the same 512 sentences:
#          PyTorch sentence-transformers vs the candle plugin in process (examples/bench_embed),
#          interleaved, with the worst cosine between the two stacks' vectors
#   http   the same through the full HTTP path: POST /v1/embeddings on a release `bkg` host with
#          the candle and llmserver plugins, vs in process
#   chat   SmolLM2-135M Q4_1 generation tokens/s and time to first token, in process
#          (examples/bench_chat) and through POST /v1/chat/completions; llama.cpp on the same
#          GGUF when llama-cpp-python is installed in the venv (BENCH_LLAMA=1 installs it)
#   memory host RSS with both models loaded, and the delta of a second load of the same model
#
# Usage: scripts/bench-ml.sh [embed] [http] [chat] [memory]     (default: all)
# Knobs (environment):
#   BENCH_VENV    the venv (default ~/.cache/bkg-bench-venv)
#   BENCH_ROUNDS  timed rounds per batch size per process (default 5)
#   BENCH_PAIRS   how many times the PyTorch / candle pair of processes runs (default 2)
#   BENCH_THREADS threads on both sides (default 2)
#   BENCH_LLAMA=1 pip-install llama-cpp-python (builds llama.cpp with cmake) if missing
#   CARGO_TARGET_DIR  where the release build goes (default target/)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
venv=${BENCH_VENV:-$HOME/.cache/bkg-bench-venv}
target_dir=${CARGO_TARGET_DIR:-$root/target}
export CARGO_TARGET_DIR=$target_dir
release=$target_dir/release
rounds=${BENCH_ROUNDS:-5}
pairs=${BENCH_PAIRS:-2}
threads=${BENCH_THREADS:-2}
work=$(mktemp -d /tmp/bkg-bench-ml.XXXXXX)
models=$root/models
sections=${*:-embed http chat memory}
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
echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- plugins/candle 2>/dev/null || echo ' (+ uncommitted changes in plugins/candle)')"

if [ ! -f "$models/sentence-transformers/all-MiniLM-L6-v2/model.safetensors" ] ||
  ! ls "$models"/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/*.gguf >/dev/null 2>&1; then
  section "models"
  bash scripts/fetch-models.sh
fi

section "python venv ($venv)"
if ! "$venv/bin/python" -c "import torch, sentence_transformers" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --upgrade pip
  # From PyPI: the default torch wheel pulls the CUDA libraries too (~5 GB); only its CPU path runs.
  "$venv/bin/pip" install torch sentence-transformers
fi
if [ "${BENCH_LLAMA:-0}" = 1 ] && ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
  # Builds llama.cpp from the sdist with cmake (cmake comes from PyPI as a build dependency).
  CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF" "$venv/bin/pip" install llama-cpp-python
fi
py=$venv/bin/python
"$py" -c "import torch, sentence_transformers as st; print('torch', torch.__version__, '| sentence-transformers', st.__version__)"

section "build (release)"
cargo build --release -p bkg-plugin-candle --examples
if has http || has memory || has chat; then
  cargo build --release -p bkg-host -p bkg-plugin-candle -p bkg-plugin-llmserver
fi

"$release/examples/bench_embed" --write-sentences "$work/sentences.txt" >/dev/null

# ---------------------------------------------------------------------------------------------
cat >"$work/pt_embed.py" <<'EOF'
# PyTorch side: sentence-transformers with all-MiniLM-L6-v2 from our models folder, offline.
import json, os, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
import warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
from sentence_transformers import SentenceTransformer, models

path, sentences, rounds, threads, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
texts = [l.rstrip("\n") for l in open(sentences, encoding="utf-8") if l.strip()]
# The folder has no modules.json: build the model's pipeline (mean pooling + normalize) by hand.
tr = models.Transformer(path)
model = SentenceTransformer(
    modules=[tr, models.Pooling(tr.get_word_embedding_dimension(), "mean"), models.Normalize()],
    device="cpu",
)
model.eval()
rates = {32: [], 1: []}
for b in rates:
    model.encode(texts[:64], batch_size=b)
for _ in range(rounds):
    for b in rates:
        t = time.perf_counter()
        v = model.encode(texts, batch_size=b, convert_to_numpy=True)
        rates[b].append(len(texts) / (time.perf_counter() - t))
        np.asarray(v, dtype="<f4").tofile(f"{out}/torch-b{b}.f32")
print(json.dumps({"side": "pytorch", "rates": rates}))
EOF

cat >"$work/summary.py" <<'EOF'
# Medians over every round of every pair, ratios, and the worst cosine between the stacks.
import json, statistics, sys
import numpy as np
work, dim = sys.argv[1], 384
runs = [json.loads(l) for l in open(f"{work}/embed-results.jsonl")]
med = {}
for side in ("pytorch", "candle"):
    for b in ("32", "1"):
        xs = [x for r in runs if r["side"] == side for x in r["rates"][b]]
        med[(side, b)] = statistics.median(xs)
        print(f"{side:8} batch {b:>2}: median {med[(side, b)]:7.1f} sentences/s over {len(xs)} rounds "
              f"(min {min(xs):.1f}, max {max(xs):.1f})")
for b in ("32", "1"):
    print(f"RESULT embed batch {b}: candle {med[('candle', b)]:.1f} vs pytorch {med[('pytorch', b)]:.1f} "
          f"sentences/s = {med[('candle', b)] / med[('pytorch', b)]:.2f}x")
def load(name):
    v = np.fromfile(f"{work}/{name}.f32", dtype="<f4").astype(np.float64)
    return v.reshape(-1, dim)
def worst(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())
pairs = [("torch-b32", "candle-b32"), ("torch-b1", "candle-b1"), ("torch-b32", "candle-b1"),
         ("torch-b1", "candle-b32")]
w = min(worst(load(x), load(y)) for x, y in pairs)
print(f"RESULT embed worst cosine pytorch vs candle over 512 sentences, both batch sizes: {w:.9f}"
      f" ({'ok' if w >= 0.9999 else 'BELOW 0.9999'})")
EOF

if has embed; then
  section "embeddings: PyTorch vs candle in process ($threads threads, $pairs x $rounds rounds)"
  : >"$work/embed-results.jsonl"
  for pair in $(seq "$pairs"); do
    "$py" "$work/pt_embed.py" "$models/sentence-transformers/all-MiniLM-L6-v2" \
      "$work/sentences.txt" "$rounds" "$threads" "$work" | tee -a "$work/embed-results.jsonl"
    "$release/examples/bench_embed" --sentences "$work/sentences.txt" --rounds "$rounds" \
      --threads "$threads" --vectors-out "$work" --json | tee -a "$work/embed-results.jsonl"
  done
  "$py" "$work/summary.py" "$work"
fi
