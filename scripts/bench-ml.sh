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

# ---------------------------------------------------------------------------------------------
# A release host with the candle and llmserver plugins on our models folder.
key=bench-admin-key-0123456789abcdef
base=""
start_host() { # [plugin ...] (default: candle llmserver)
  local dir=$work/host plugins=${*:-candle llmserver}
  rm -rf "$dir"
  mkdir -p "$dir/plugins"
  for p in $plugins; do cp "$release/libbkg_plugin_$p.so" "$dir/plugins/"; done
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
  for _ in $(seq 300); do
    if curl -sf -H "Authorization: Bearer $key" "$base/api/core/plugins/candle/status" |
      grep -q '"running"'; then break; fi
    sleep 0.2
  done
  echo "host pid $host_pid at $base"
}
stop_host() {
  kill "$host_pid" 2>/dev/null || true
  wait "$host_pid" 2>/dev/null || true
  host_pid=""
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

cat >"$work/llama.py" <<'EOF'
# llama.cpp (llama-cpp-python) on the same GGUF: streaming, greedy, same prompt.
import json, statistics, sys, time
from llama_cpp import Llama
path, prompt, rounds, max_tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=2048, verbose=False)
msgs = [{"role": "user", "content": prompt}]
llm.create_chat_completion(messages=msgs, temperature=0, max_tokens=max_tokens)
ttft, tps, tokens = [], [], []
for _ in range(rounds):
    llm.reset()  # no reuse of the previous round's prompt in the KV cache
    t = time.perf_counter(); first = None; n = 0
    for chunk in llm.create_chat_completion(messages=msgs, temperature=0, max_tokens=max_tokens, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            n += 1
            now = time.perf_counter()
            first = first or now
    end = time.perf_counter()
    ttft.append(first - t); tps.append((n - 1) / (end - first)); tokens.append(n)
print(json.dumps({"side": "llama.cpp", "ttft_s": ttft, "tokens_per_s": tps, "tokens": tokens}))
EOF

cat >"$work/chat_summary.py" <<'EOF'
import json, statistics, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(f"RESULT chat {r['side']:9}: time to first token median {statistics.median(r['ttft_s']) * 1e3:.1f} ms, "
          f"generation median {statistics.median(r['tokens_per_s']):.1f} tokens/s "
          f"({r['tokens'][0]} tokens generated, {len(r['ttft_s'])} rounds)")
EOF

prompt="Write a short story about a robot who learns to paint."
if has chat; then
  section "chat: SmolLM2-135M-Instruct Q4_1, greedy, max_tokens 128, $threads threads"
  : >"$work/chat-results.jsonl"
  "$release/examples/bench_chat" --rounds "$rounds" --threads "$threads" --max-tokens 128 --json |
    tee -a "$work/chat-results.jsonl"
  start_host
  "$py" "$work/client.py" "$base" "$key" chat "$prompt" "$rounds" 128 | tee -a "$work/chat-results.jsonl"
  stop_host
  if "$py" -c "import llama_cpp" 2>/dev/null; then
    "$py" "$work/llama.py" "$(ls "$models"/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/*.gguf | head -1)" \
      "$prompt" "$rounds" 128 "$threads" | tee -a "$work/chat-results.jsonl"
  else
    echo "llama-cpp-python is not in the venv (BENCH_LLAMA=1 builds it): no llama.cpp figure"
  fi
  "$py" "$work/chat_summary.py" "$work/chat-results.jsonl"
fi

if has memory; then
  section "memory: host RSS with both models, and a second load of each"
  start_host candle
  "$py" "$work/client.py" "$base" "$key" memory "$host_pid"
  stop_host
fi
