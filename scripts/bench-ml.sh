#!/usr/bin/env bash
# The ML benchmarks of issues 4 and 17 (see docs/benchmarks-ml.md). Not part of CI: embed and
# http need a Python venv with PyTorch (~6 GB, reused); the chat sections build llama.cpp once
# (llama-server and the libllama of llama-cpp-python, from the llama-cpp-python sdist on PyPI,
# cached under target/llama-cpp and target/venv-llama; ~15 min on 2 cores the first time).
#
#   embed  embedding throughput, batch 32 and batch 1, 2 threads, on the same 512 sentences:
#          PyTorch sentence-transformers vs the candle plugin in process (examples/bench_embed),
#          interleaved, with the worst cosine between the two stacks' vectors
#   http   the same through the full HTTP path: POST /v1/embeddings on a release `bkg` host with
#          the candle and llmserver plugins, vs in process
#   chat   SmolLM2-135M Q4_1 generation tokens/s (128 tokens, greedy) and time to first token,
#          in process (examples/bench_chat), through POST /v1/chat/completions, and llama.cpp
#          (llama-cpp-python) on the same GGUF and the same prompt text
#   ttft   time to first token for a 20-token and a ~500-token prompt (scripts/bench-ml-chat.py
#          names the text), each side counting the tokens with its own tokenizer, no prompt
#          reuse: candle in process, bkg over HTTP, llama-cpp-python, llama-server
#   parallel  aggregate tokens/s and per-request latency with 4 concurrent clients: bkg's
#          /v1/chat/completions at each max_parallel_generations in BENCH_PARALLEL_VALUES vs
#          llama-server -np 4 -cb (4 slots, continuous batching)
#   memory host RSS with both models loaded, and the delta of a second load of the same model;
#          then the chat model alone: bkg's host vs llama-server vs llama-cpp-python
#   gap    the worst gap between two streamed tokens of 3 clients while a ~1,300-token prompt
#          arrives (chunked prefill): candle in process with the prefill budget at 256 (the
#          default) and at 4096 (the whole prompt in one step, as before), then bkg's
#          /v1/chat/completions vs llama-server -np 4 -cb; and a short question's time to
#          first token when it is sent 100 ms after the long prompt, alone (nothing streaming)
#   greedy the greedy answers (48 tokens) to the 9 prompts of plugins/candle/tests/chat_reference.rs:
#          bkg now (model.infer on a release host) vs llama.cpp (llama-cpp-python, same prompt
#          tokens) vs the pinned pre-issue-17 reference (scripts/bench-ml-greedy.py)
#
# Usage: scripts/bench-ml.sh [embed] [http] [chat] [ttft] [parallel] [memory] [gap] [greedy]
#        (default: all)
# Knobs (environment):
#   BENCH_VENV    the PyTorch venv of embed and http (default target/venv-embed, which
#                 scripts/reference-embeddings.sh makes too)
#   BENCH_ROUNDS  timed rounds per batch size per process (default 5)
#   BENCH_PAIRS   how many times the PyTorch / candle pair of processes runs (default 2)
#   BENCH_THREADS threads on both sides (default 2)
#   BENCH_PARALLEL_ROUNDS  timed rounds of the 4 concurrent clients per setting (default 3)
#   BENCH_PARALLEL_VALUES  bkg's max_parallel_generations values tried (default "1 2 4")
#   BENCH_QUIET_WAIT_S     how long each section waits for a quiet machine (default 120)
#   BENCH_GAP_ROUNDS       timed rounds per side in gap (default 5)
#   CARGO_TARGET_DIR  where the release build, the venvs and llama.cpp go (default target/)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
venv=${BENCH_VENV:-$target_dir/venv-embed}
export CARGO_TARGET_DIR=$target_dir
release=$target_dir/release
rounds=${BENCH_ROUNDS:-5}
pairs=${BENCH_PAIRS:-2}
threads=${BENCH_THREADS:-2}
work=$(mktemp -d /tmp/bkg-bench-ml.XXXXXX)
models=$root/models
sections=${*:-embed http chat ttft parallel memory gap greedy}
for s in $sections; do
  case $s in
    embed | http | chat | ttft | parallel | memory | gap | greedy) ;;
    *) echo "unknown section $s (embed http chat ttft parallel memory gap greedy)" >&2; exit 2 ;;
  esac
done
has() { [[ " $sections " == *" $1 "* ]]; }
section() { printf '\n=== %s ===\n' "$*"; }
host_pid=""
server_pid=""
cleanup() {
  if [ -n "$host_pid" ]; then kill "$host_pid" 2>/dev/null || true; fi
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# bench_log: a copy of the output in target/bench-results/bench-ml-<time>.txt; wait_quiet.
source "$root/scripts/bench-quiet.sh"
export BENCH_QUIET_WAIT_S=${BENCH_QUIET_WAIT_S:-120}
bench_log bench-ml
started=$(date +%s)

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

if has embed || has http; then
  section "python venv ($venv)"
  if ! "$venv/bin/python" -c "import torch, sentence_transformers" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --upgrade pip
    # From PyPI: the default torch wheel pulls the CUDA libraries too (~5 GB); only its CPU path runs.
    "$venv/bin/pip" install torch sentence-transformers
  fi
  py=$venv/bin/python
  "$py" -c "import torch, sentence_transformers as st; print('torch', torch.__version__, '| sentence-transformers', st.__version__)"
fi

# llama.cpp, the reference of the chat sections: llama-cpp-python at a pinned version, and the
# llama.cpp source vendored in its sdist built once with cmake into llama-server and the shared
# libllama that the Python package loads (LLAMA_CPP_LIB_PATH; the package is installed with
# LLAMA_BUILD=OFF, so the two sides run the same build of the same source).
llama_version=0.3.36
llama_sdist_sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
llama_dir=$target_dir/llama-cpp
lvenv=$target_dir/venv-llama
lpy=$lvenv/bin/python
llama_server=$llama_dir/build/bin/llama-server
export LLAMA_CPP_LIB_PATH=$llama_dir/build/bin
setup_llama() {
  if [ -x "$llama_server" ] && [ -f "$llama_dir/build/bin/libllama.so" ] &&
    grep -q "llama_cpp_python-$llama_version/vendor" "$llama_dir/build/CMakeCache.txt" &&
    "$lpy" -c "import sys, llama_cpp; sys.exit(llama_cpp.__version__ != '$llama_version')" 2>/dev/null; then
    return
  fi
  section "llama.cpp (llama-cpp-python $llama_version sdist) into $llama_dir"
  [ -x "$lpy" ] || python3 -m venv "$lvenv"
  # cmake and ninja from PyPI (wheels); g++ from the system (apt-get install g++ if missing).
  # Only llama-cpp-python itself is fetched as source: `--no-binary :all:` would also build
  # cmake from source to read the sdist's metadata.
  "$lvenv/bin/pip" install -q cmake ninja
  mkdir -p "$llama_dir"
  local sdist=$llama_dir/llama_cpp_python-$llama_version.tar.gz
  local src=$llama_dir/llama_cpp_python-$llama_version
  [ -f "$sdist" ] || (cd "$llama_dir" && "$lvenv/bin/pip" download --no-binary llama-cpp-python \
    --no-deps "llama-cpp-python==$llama_version" -d .)
  echo "$llama_sdist_sha256  $sdist" | sha256sum -c -
  [ -d "$src" ] || tar xzf "$sdist" -C "$llama_dir"
  PATH=$lvenv/bin:$PATH cmake -S "$src/vendor/llama.cpp" -B "$llama_dir/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMON=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF >/dev/null
  PATH=$lvenv/bin:$PATH cmake --build "$llama_dir/build" -j2 --target llama-server llama
  local no_build="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF"
  CMAKE_ARGS=$no_build "$lvenv/bin/pip" install -q --force-reinstall --no-deps "$sdist"
  CMAKE_ARGS=$no_build "$lvenv/bin/pip" install -q "$sdist" # its dependencies (numpy, jinja2, ...)
}
if has chat || has ttft || has parallel || has memory || has gap || has greedy; then
  setup_llama
  echo "llama.cpp: llama-cpp-python $("$lpy" -c 'import llama_cpp; print(llama_cpp.__version__)')," \
    "$("$llama_server" --version 2>&1 | grep -m1 version)"
fi
chat_py=$root/scripts/bench-ml-chat.py
gguf=$(ls "$models"/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/*.gguf | head -1)

section "build (release)"
cargo build --release -p bkg-plugin-candle --examples
if has http || has memory || has chat || has ttft || has parallel || has gap || has greedy; then
  cargo build --release -p bkg-host -p bkg-plugin-candle -p bkg-plugin-llmserver
fi

# What this run measures, linked (or copied) out of the target folder now: another build into
# the same target folder during the run would otherwise swap the binaries under it.
mkdir -p "$work/bin/examples"
for f in examples/bench_embed examples/bench_chat bkg libbkg_plugin_candle.so \
  libbkg_plugin_llmserver.so; do
  if [ -f "$release/$f" ]; then
    cp -l "$release/$f" "$work/bin/$f" 2>/dev/null || cp "$release/$f" "$work/bin/$f"
  fi
done
release=$work/bin

if has embed || has http; then
  "$release/examples/bench_embed" --write-sentences "$work/sentences.txt" >/dev/null
fi

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
  wait_quiet
  : >"$work/embed-results.jsonl"
  for pair in $(seq "$pairs"); do
    "$py" "$work/pt_embed.py" "$models/sentence-transformers/all-MiniLM-L6-v2" \
      "$work/sentences.txt" "$rounds" "$threads" "$work" | tee -a "$work/embed-results.jsonl"
    "$release/examples/bench_embed" --sentences "$work/sentences.txt" --rounds "$rounds" \
      --threads "$threads" --vectors-out "$work" --json | tee -a "$work/embed-results.jsonl"
  done
  "$py" "$work/summary.py" "$work"
fi

# ---------------------------------------------------------------------------------------------
# A release host with the candle and llmserver plugins on our models folder.
key=bench-admin-key-0123456789abcdef
base=""
start_host() { # [plugin ...] (default: candle llmserver)
  local dir=$work/host plugins=${*:-candle llmserver}
  rm -rf "$dir"
  mkdir -p "$dir/plugins"
  for p in $plugins; do cp "$release/libbkg_plugin_$p.so" "$dir/plugins/"; done
  # A generous call timeout: a generation of 128 tokens on a busy machine may take 30 s.
  BKG_ADMIN_KEY=$key RUST_LOG=warn NO_COLOR=1 "$release/bkg" --listen 127.0.0.1:0 \
    --data-dir "$dir/data" --plugins-dir "$dir/plugins" --models-dir "$models" \
    --call-timeout-ms 600000 \
    >"$dir/stdout" 2>"$dir/log" &
  host_pid=$!
  for _ in $(seq 200); do
    base=$(sed -n 's/^bkg listening on //p' "$dir/stdout" | head -1)
    [ -n "$base" ] && break
    sleep 0.1
  done
  [ -n "$base" ] || { cat "$dir/log"; echo "the host did not start"; exit 1; }
  for _ in $(seq 300); do
    if curl -sf -H "Authorization: Bearer $key" "$base/api/core/plugins/candle/status" |
      grep -q '"running"'; then break; fi
    sleep 0.2
  done
  admin_post /api/core/plugins/candle/config "{\"threads\": $threads}" >/dev/null
  echo "host pid $host_pid at $base (candle: $threads threads)"
}
stop_host() {
  kill "$host_pid" 2>/dev/null || true
  wait "$host_pid" 2>/dev/null || true
  host_pid=""
}
admin_post() { # PATH JSON: a POST to the host with the admin key; fails on an error status
  curl -sSf -X POST -H "Authorization: Bearer $key" -H "Content-Type: application/json" \
    -d "$2" "$base$1"
}

# llama.cpp's own server on the same GGUF (and the same threads) on a free loopback port.
server_base=""
start_llama_server() { # SLOTS CONTEXT [more flags]
  local slots=$1 ctx=$2 port
  shift 2
  port=$("$lpy" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$llama_server" -m "$gguf" --host 127.0.0.1 --port "$port" -t "$threads" -tb "$threads" \
    -np "$slots" -c "$ctx" --cache-ram 0 --no-webui "$@" >"$work/llama-server.log" 2>&1 &
  server_pid=$!
  server_base=http://127.0.0.1:$port
  for _ in $(seq 600); do
    curl -sf "$server_base/health" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { tail -20 "$work/llama-server.log"; exit 1; }
    sleep 0.1
  done
  curl -sf "$server_base/health" >/dev/null || { tail -20 "$work/llama-server.log"; exit 1; }
  echo "llama-server pid $server_pid at $server_base: -np $slots -c $ctx -t $threads $*;" \
    "$(grep -m1 -o 'n_slots = .*' "$work/llama-server.log" || true)"
}
stop_llama_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

cat >"$work/client.py" <<'EOF'
# HTTP side: /v1/embeddings, /v1/chat/completions and the host's RSS, stdlib only.
import http.client, json, statistics, sys, time, urllib.parse

base, key, mode = sys.argv[1], sys.argv[2], sys.argv[3]
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
H = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

def post(path, body):
    conn.request("POST", path, json.dumps(body), H)
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise SystemExit(f"{path}: {r.status} {data[:500]!r}")
    return json.loads(data)

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

if mode == "embed":
    sentences, rounds, out = sys.argv[4], int(sys.argv[5]), sys.argv[6]
    # float: JSON numbers; base64: little-endian f32, what the official OpenAI Python client asks for.
    encoding = sys.argv[7] if len(sys.argv) > 7 else "float"
    import base64
    import numpy as np
    def vector(d):
        if encoding == "base64":
            return np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
        return d["embedding"]
    texts = [l.rstrip("\n") for l in open(sentences, encoding="utf-8") if l.strip()]
    model = "all-MiniLM-L6-v2"
    rates = {32: [], 1: []}
    for b in rates:  # warm-up (and the model's first load)
        for i in range(0, 64, b):
            post("/v1/embeddings", {"model": model, "input": texts[i:i + b], "encoding_format": encoding})
    vecs = {}
    for _ in range(rounds):
        for b in rates:
            t = time.perf_counter()
            got = []
            for i in range(0, len(texts), b):
                body = {"model": model, "input": texts[i:i + b], "encoding_format": encoding}
                got += [vector(d) for d in post("/v1/embeddings", body)["data"]]
            rates[b].append(len(texts) / (time.perf_counter() - t))
            vecs[b] = got
    side = "http" if encoding == "float" else f"http-{encoding}"
    for b in rates:
        np.asarray(vecs[b], dtype="<f4").tofile(f"{out}/{side}-b{b}.f32")
    print(json.dumps({"side": side, "rates": rates}))

elif mode == "chat":
    prompt, rounds, max_tokens = sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
    body = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": prompt}],
            "temperature": 0, "max_tokens": max_tokens}
    post("/v1/chat/completions", body)  # warm-up (and the model's first load)
    ttft, tps, tokens = [], [], []
    for _ in range(rounds):
        # Streaming: time to the first content chunk, then chunks until [DONE].
        t = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", json.dumps(dict(body, stream=True)), H)
        r = conn.getresponse()
        first, last, chunks = None, None, 0
        for line in r:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            d = json.loads(payload)
            if d.get("choices") and d["choices"][0].get("delta", {}).get("content"):
                chunks += 1
                now = time.perf_counter()
                first = first or now
                last = now
        r.read()
        # Non-streaming: the token count (the same greedy answer).
        t2 = time.perf_counter()
        a = post("/v1/chat/completions", body)
        total = time.perf_counter() - t2
        n = a["usage"]["completion_tokens"]
        ttft.append(first - t)
        tps.append((n - 1) / (total - (first - t)) if n > 1 else 0.0)
        tokens.append(n)
    print(json.dumps({"side": "http", "ttft_s": ttft, "tokens_per_s": tps, "tokens": tokens}))

elif mode == "memory":
    # A host with the candle plugin only (llmserver would load its models at start).
    pid = int(sys.argv[4])
    def cap(name, body):
        return post(f"/api/plugins/candle/{name}", body)
    embed, chat = "sentence-transformers/all-MiniLM-L6-v2", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
    r = [("host with the candle plugin running, no model", rss(pid))]
    def step(what):
        r.append((what, rss(pid)))
        print(f"RSS {r[-1][1] / 1024:7.1f} MiB ({(r[-1][1] - r[-2][1]) / 1024:+7.2f}): {what}")
    print(f"RSS {r[0][1] / 1024:7.1f} MiB: {r[0][0]}")
    cap("model.load", {"name": "minilm", "path": embed}); step("load all-MiniLM-L6-v2 as minilm")
    cap("model.infer", {"model": "minilm", "input": ["warm up the embedding model"] * 32}); step("embed 32 sentences")
    cap("model.load", {"name": "smol", "path": chat}); step("load SmolLM2-135M-Instruct Q4_1 as smol")
    cap("model.infer", {"model": "smol", "prompt": "Hello", "max_tokens": 16, "temperature": 0}); step("generate 16 tokens")
    both = r[-1][1]
    a = cap("model.load", {"name": "minilm-again", "path": embed}); step(f"load the same MiniLM again as minilm-again (shared_by {a.get('shared_by')})")
    b = cap("model.load", {"name": "smol-again", "path": chat}); step(f"load the same SmolLM2 again as smol-again (shared_by {b.get('shared_by')})")
    print(f"RESULT memory: host RSS with both models loaded and used {both / 1024:.1f} MiB "
          f"({(both - r[0][1]) / 1024:+.1f} MiB over the idle host)")
    print(f"RESULT memory: second loads of both models under other names: {(r[-1][1] - both) / 1024:+.2f} MiB "
          f"(first loads: {(r[1][1] - r[0][1] + r[3][1] - r[2][1]) / 1024:+.1f} MiB)")
EOF

cat >"$work/http_summary.py" <<'EOF'
import json, statistics, sys
import numpy as np
work = sys.argv[1]
runs = [json.loads(l) for l in open(f"{work}/http-results.jsonl")]
med = {}
sides = [s for s in ("candle", "http", "http-base64") if any(r["side"] == s for r in runs)]
for side in sides:
    for b in ("32", "1"):
        xs = [x for r in runs if r["side"] == side for x in r["rates"][b]]
        med[(side, b)] = statistics.median(xs)
        print(f"{side:11} batch {b:>2}: median {med[(side, b)]:7.1f} sentences/s over {len(xs)} rounds")
def load(n):
    return np.fromfile(f"{work}/{n}.f32", dtype="<f4").astype(np.float64).reshape(-1, 384)
for side in sides[1:]:
    for b in ("32", "1"):
        r = med[(side, b)] / med[("candle", b)]
        print(f"RESULT {side} batch {b}: /v1/embeddings {med[(side, b)]:.1f} vs in process "
              f"{med[('candle', b)]:.1f} sentences/s = {r:.3f}x ({(1 - r) * 100:+.1f}% slower)")
    w = min(float((load(f"{side}-b{b}") * load(f"candle-b{b}")).sum(axis=1).min()) for b in (32, 1))
    print(f"RESULT {side} worst cosine /v1/embeddings vs in process: {w:.9f}")
EOF

if has http; then
  section "embeddings through HTTP (/v1/embeddings) vs in process ($pairs x $rounds rounds)"
  wait_quiet
  start_host
  : >"$work/http-results.jsonl"
  for pair in $(seq "$pairs"); do
    for encoding in float base64; do
      "$py" "$work/client.py" "$base" "$key" embed "$work/sentences.txt" "$rounds" "$work" "$encoding" |
        tee -a "$work/http-results.jsonl"
    done
    "$release/examples/bench_embed" --sentences "$work/sentences.txt" --rounds "$rounds" \
      --threads "$threads" --vectors-out "$work" --json | tee -a "$work/http-results.jsonl"
  done
  stop_host
  "$py" "$work/http_summary.py" "$work"
fi

cat >"$work/chat_summary.py" <<'EOF'
import json, statistics, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(f"RESULT chat {r['side']:9}: time to first token median {statistics.median(r['ttft_s']) * 1e3:.1f} ms, "
          f"generation median {statistics.median(r['tokens_per_s']):.1f} tokens/s "
          f"({r['tokens'][0]} tokens generated, {len(r['ttft_s'])} rounds)")
EOF

if has chat; then
  section "chat: SmolLM2-135M-Instruct Q4_1, greedy, max_tokens 128, $threads threads"
  wait_quiet
  "$lpy" "$chat_py" prompts "$work/prompts"
  : >"$work/chat-results.jsonl"
  "$release/examples/bench_chat" --rounds "$rounds" --threads "$threads" --max-tokens 128 --json |
    tee -a "$work/chat-results.jsonl"
  start_host
  "$lpy" "$work/client.py" "$base" "$key" chat "$(cat "$work/prompts/short.txt")" "$rounds" 128 |
    tee -a "$work/chat-results.jsonl"
  stop_host
  # The same text as candle's: the ChatML user turn without a system message, as a raw prompt.
  "$lpy" "$chat_py" llama "$gguf" "$work/prompts/short.txt" "$rounds" 128 "$threads" short |
    tee -a "$work/chat-results.jsonl"
  "$lpy" "$work/chat_summary.py" "$work/chat-results.jsonl"
fi

if has ttft; then
  section "time to first token: 20-token and ~500-token prompts, $threads threads, $rounds rounds"
  wait_quiet
  "$lpy" "$chat_py" prompts "$work/prompts"
  : >"$work/ttft-results.jsonl"
  for p in short long; do
    "$release/examples/bench_chat" --rounds "$rounds" --threads "$threads" --max-tokens 16 \
      --prompt-file "$work/prompts/$p.txt" --tag "$p" --json | tee -a "$work/ttft-results.jsonl"
  done
  start_host
  for p in short long; do
    "$lpy" "$chat_py" http bkg "$base" "$key" "$work/prompts/$p.txt" "$rounds" 16 "$p" |
      tee -a "$work/ttft-results.jsonl"
  done
  stop_host
  for p in short long; do
    "$lpy" "$chat_py" llama "$gguf" "$work/prompts/$p.txt" "$rounds" 16 "$threads" "$p" |
      tee -a "$work/ttft-results.jsonl"
  done
  start_llama_server 1 2048
  for p in short long; do
    "$lpy" "$chat_py" http llama-server "$server_base" "" "$work/prompts/$p.txt" "$rounds" 16 "$p" |
      tee -a "$work/ttft-results.jsonl"
  done
  stop_llama_server
  "$lpy" "$chat_py" summary "$work/ttft-results.jsonl"
fi

if has parallel; then
  clients=4
  prounds=${BENCH_PARALLEL_ROUNDS:-3}
  section "$clients concurrent clients, 128 tokens each, greedy, $threads threads, $prounds rounds"
  wait_quiet
  : >"$work/parallel-results.jsonl"
  start_host
  for n in ${BENCH_PARALLEL_VALUES:-1 2 4}; do
    admin_post /api/core/plugins/llmserver/config "{\"max_parallel_generations\": $n}" >/dev/null
    "$lpy" "$chat_py" parallel bkg "$base" "$key" "$clients" "$prounds" 128 \
      "max_parallel_generations $n" | tee -a "$work/parallel-results.jsonl"
  done
  stop_host
  start_llama_server "$clients" $((clients * 2048)) -cb
  "$lpy" "$chat_py" parallel llama-server "$server_base" "" "$clients" "$prounds" 128 \
    "-np $clients -cb -c $((clients * 2048))" | tee -a "$work/parallel-results.jsonl"
  stop_llama_server
  "$lpy" "$chat_py" summary "$work/parallel-results.jsonl"
fi

if has memory; then
  section "memory: host RSS with both models, and a second load of each"
  wait_quiet
  start_host candle
  "$lpy" "$work/client.py" "$base" "$key" memory "$host_pid"
  stop_host
  section "memory: the chat model alone (bkg host, llama-server, llama-cpp-python)"
  : >"$work/memory-results.jsonl"
  start_host candle
  "$lpy" "$chat_py" bkg-rss "$base" "$key" "$host_pid" | tee -a "$work/memory-results.jsonl"
  stop_host
  start_llama_server 1 2048
  "$lpy" "$chat_py" server-rss "$server_base" "$server_pid" | tee -a "$work/memory-results.jsonl"
  stop_llama_server
  "$lpy" "$chat_py" llama-rss "$gguf" "$threads" | tee -a "$work/memory-results.jsonl"
  "$lpy" "$chat_py" summary "$work/memory-results.jsonl"
fi

cat >"$work/gap.py" <<'EOF'
"""gap: 3 streaming clients, then a long prompt; the worst gap between two of their chunks.

  long OUT WORDS                       write the long user message (CPython's own prose: the
                                       first WORDS words of the "assignment" topic of
                                       pydoc_data.topics, the text of help("assignment"))
  http CHAT_PY KIND BASE KEY LONG ROUNDS LABEL
                                       KIND bkg or llama-server, through bench-ml-chat.py's
                                       client (the same text and sampling on both sides)
  summary FILE                         RESULT lines
"""
import importlib.util, json, statistics, sys, threading, time

SHORT = "What is the capital of France?"


def long_message(words):
    import pydoc_data.topics

    w = pydoc_data.topics.topics["assignment"].split()[:words]
    return "Summarize the following text in one paragraph.\n\n" + " ".join(w)


def http(chat_py, kind, base, key, long_file, rounds, label):
    spec = importlib.util.spec_from_file_location("bench_ml_chat", chat_py)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    long = open(long_file, encoding="utf-8").read()
    clients = [m.Client(base, key) for _ in range(4)]
    path, body = m.request(kind, long, 1)
    prompt_tokens = clients[3].post(path, body)["usage"]["prompt_tokens"]  # warm-up, the count

    def one_round():
        times = [[] for _ in range(3)]

        def streamer(i):
            path, body = m.request(kind, m.STORIES[i], 256, stream=True)
            for chunk in clients[i].stream(path, body):
                if m.content(kind, chunk):
                    times[i].append(time.perf_counter())

        ths = [threading.Thread(target=streamer, args=(i,)) for i in range(3)]
        for th in ths:
            th.start()
        deadline = time.perf_counter() + 600
        while any(len(t) < 8 for t in times):
            if time.perf_counter() > deadline or not all(th.is_alive() for th in ths):
                raise SystemExit("the streaming clients did not get 8 chunks each")
            time.sleep(0.001)
        sent = time.perf_counter()
        first = None
        path, body = m.request(kind, long, 8, stream=True)
        for chunk in clients[3].stream(path, body):
            if m.content(kind, chunk):
                first = first or time.perf_counter()
        for th in ths:
            th.join()
        worst, before = 0.0, []
        for t in times:
            if first is None or not t or t[-1] <= first:
                raise SystemExit("a client ended before the long prompt's first token")
            for a, b in zip(t, t[1:]):
                if b <= sent:
                    before.append(b - a)
                elif a < first:
                    worst = max(worst, b - a)
        return worst, statistics.median(before), first - sent

    def behind_round():
        # The long prompt alone, then (100 ms later, while it is being read) a short question:
        # the short one's time to first token.
        def long_request():
            path, body = m.request(kind, long, 8, stream=True)
            for _ in clients[3].stream(path, body):
                pass

        th = threading.Thread(target=long_request)
        th.start()
        time.sleep(0.1)
        sent, first = time.perf_counter(), None
        path, body = m.request(kind, SHORT, 8, stream=True)
        for chunk in clients[0].stream(path, body):
            if m.content(kind, chunk):
                first = first or time.perf_counter()
        long_first = not th.is_alive()  # the long answer (8 tokens) was out before it
        th.join()
        return first - sent, long_first

    one_round()  # warm-up
    rows = [one_round() for _ in range(rounds)]
    behind = [behind_round() for _ in range(rounds)]
    print(json.dumps({"side": f"gap http {kind}", "label": label, "prompt_tokens": prompt_tokens,
                      "worst_gap_s": [r[0] for r in rows], "usual_gap_s": [r[1] for r in rows],
                      "long_ttft_s": [r[2] for r in rows],
                      "short_behind_ttft_s": [b[0] for b in behind],
                      "short_behind_after_long": sum(b[1] for b in behind)}))


def summary(path):
    med = statistics.median
    for line in open(path):
        if not line.strip().startswith("{"):
            continue
        r = json.loads(line)
        print(f"RESULT {r['side']} ({r['label']}): 3 streaming clients while a "
              f"{r['prompt_tokens']}-token prompt arrives: worst gap between two tokens median "
              f"{med(r['worst_gap_s']) * 1e3:.0f} ms (max {max(r['worst_gap_s']) * 1e3:.0f}), "
              f"usual gap median {med(r['usual_gap_s']) * 1e3:.1f} ms, the long prompt's first "
              f"token after {med(r['long_ttft_s']) * 1e3:.0f} ms ({len(r['worst_gap_s'])} rounds)")
        if r.get("short_behind_ttft_s"):
            b = r["short_behind_ttft_s"]
            print(f"RESULT {r['side']} ({r['label']}): a short question sent 100 ms after the "
                  f"{r['prompt_tokens']}-token prompt: its first token after {med(b) * 1e3:.0f} ms "
                  f"median (max {max(b) * 1e3:.0f}, {len(b)} rounds; in "
                  f"{r['short_behind_after_long']} the long answer was done before it)")


mode, a = sys.argv[1], sys.argv[2:]
if mode == "long":
    open(a[0], "w", encoding="utf-8").write(long_message(int(a[1])))
elif mode == "http":
    http(a[0], a[1], a[2], a[3] or None, a[4], int(a[5]), a[6])
elif mode == "summary":
    summary(a[0])
else:
    raise SystemExit(__doc__)
EOF

if has gap; then
  grounds=${BENCH_GAP_ROUNDS:-5}
  section "gap: 3 streaming clients while a long prompt arrives, $threads threads, $grounds rounds"
  wait_quiet
  "$lpy" "$work/gap.py" long "$work/gap-long.txt" 1000
  : >"$work/gap-results.jsonl"
  for b in 256 4096; do
    "$release/examples/bench_chat" --gap "$work/gap-long.txt" --prefill-budget "$b" \
      --rounds "$grounds" --threads "$threads" --json | tee -a "$work/gap-results.jsonl"
  done
  start_host
  admin_post /api/core/plugins/llmserver/config '{"max_parallel_generations": 4}' >/dev/null
  "$lpy" "$work/gap.py" http "$chat_py" bkg "$base" "$key" "$work/gap-long.txt" "$grounds" \
    "max_parallel_generations 4" | tee -a "$work/gap-results.jsonl"
  stop_host
  start_llama_server 4 $((4 * 2048)) -cb
  "$lpy" "$work/gap.py" http "$chat_py" llama-server "$server_base" "" "$work/gap-long.txt" \
    "$grounds" "-np 4 -cb -c $((4 * 2048))" | tee -a "$work/gap-results.jsonl"
  stop_llama_server
  "$lpy" "$work/gap.py" summary "$work/gap-results.jsonl"
fi

if has greedy; then
  section "greedy answers: bkg vs llama.cpp vs the pinned pre-issue-17 reference, $threads threads"
  start_host candle
  "$lpy" "$root/scripts/bench-ml-greedy.py" "$base" "$key" "$gguf" \
    "$root/plugins/candle/tests/chat_reference.rs" "$threads"
  stop_host
fi

section "done"
echo "took $(($(date +%s) - started)) s; log: $log"
