#!/usr/bin/env bash
# rustyface's benchmarks (issue 13, "Performance"; results in docs/benchmarks-rustyface.md). Not
# part of CI. In one run, on the same photos (the face_recognition portraits and face-api's demo
# group photos, laid out by scripts/fetch-models.sh), each tool in its own process:
#
#   rustyface  in process through the crate's rlib (plugins/rustyface/examples/bench.rs) on the
#              plugin's own pool, BENCH_THREADS threads and 1 thread: the networks are what is
#              compared, so no HTTP in these figures; the HTTP path is measured on its own after
#              (a release `bkg` host, POST face.embed with the raw JPEG) and reported as overhead
#   face-api   @vladmandic/face-api@1.7.15 under Node (scripts/bench-rustyface-faceapi.mjs) on
#              tfjs's wasm backend (SIMD; single-threaded: tfjs turns wasm threads off under Node)
#              and on its CPU backend (slow: two photos, four chips, one timed run); npm @tensorflow/tfjs-backend-wasm@4.22.0 (the tfjs version
#              inside face-api's bundle) installed into the cache folder
#   dlib       the face_recognition package (scripts/bench-rustyface-dlib.py): HOG and CNN
#              detectors, face_encodings; `pip install --no-deps dlib-bin face_recognition_models
#              face_recognition` (+ numpy, pillow) into a venv in the cache folder, no compile.
#              OMP_NUM_THREADS / OPENBLAS_NUM_THREADS are set to BENCH_THREADS, but dlib-bin is
#              built without BLAS and OpenMP: its networks run on one thread
#
# Every timing excludes image decoding and warm-up runs (BENCH_WARMUP per photo and chip, not
# recorded). Peak RSS per process from /usr/bin/time -v. Prints markdown tables
# (scripts/bench-rustyface-summary.py); raw JSON stays in the work folder it names.
#
# Usage: scripts/bench-rustyface.sh
# Knobs (environment):
#   BENCH_THREADS   rustyface's threads (default 2; also OMP/OPENBLAS threads for dlib)
#   BENCH_RUNS      timed runs per photo / chip (default 5)
#   BENCH_CNN_RUNS  timed runs per photo of dlib's CNN detector and pipeline (default 1: ~4 s
#                   for a portrait, ~10 s for a 1920x1280 group photo)
#   BENCH_WARMUP    untimed runs first (default 1)
#   BENCH_QUIET_WAIT_S  how long each tool waits for the load average to fall (default 300)
#   BENCH_NICE      niceness of every measured process and the host (default -10 as root, so
#                   that other work on a shared machine yields to all tools alike; else 0)
#   BENCH_CACHE     venv and npm packages (default ~/.cache/bkg-bench/rustyface)
#   CARGO_TARGET_DIR  where the release build goes (default target/)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
threads=${BENCH_THREADS:-2}
runs=${BENCH_RUNS:-5}
cnn_runs=${BENCH_CNN_RUNS:-1}
warmup=${BENCH_WARMUP:-1}
quiet_wait=${BENCH_QUIET_WAIT_S:-300}
if [ "$(id -u)" -eq 0 ]; then nice=${BENCH_NICE:--10}; else nice=${BENCH_NICE:-0}; fi
cache=${BENCH_CACHE:-$HOME/.cache/bkg-bench/rustyface}
target_dir=${CARGO_TARGET_DIR:-$root/target}
export CARGO_TARGET_DIR=$target_dir
release=$target_dir/release
models=$root/models
work=$(mktemp -d /tmp/bkg-bench-rustyface.XXXXXX)
host_pid=""
cleanup() { if [ -n "$host_pid" ]; then kill "$host_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
section() { printf '\n=== %s ===\n' "$*" >&2; }

photos=()
for f in obama obama2 obama3 biden; do photos+=("$models/test-images/face_recognition/$f.jpg"); done
for i in 1 2 3 4 5 6; do photos+=("$models/test-images/face-api-demo/sample$i.jpg"); done
if ! [ -f "${photos[0]}" ] || ! [ -f "${photos[-1]}" ] || ! [ -d "$models/vladmandic/face-api" ]; then
  section "fetching models and photos"
  bash scripts/fetch-models.sh >&2
fi

section "machine"
{
  echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu:     $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cores"
  echo "memory:  $(free -m | awk '/^Mem:/ {print $2 " MiB"}')"
  echo "rustc:   $(rustc --version)"
  echo "node:    $(node --version)"
  echo "python:  $(python3 --version 2>&1)"
  echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- plugins/rustyface || echo ' (+ uncommitted changes in plugins/rustyface)')"
  echo "threads: $threads; runs: $runs (dlib CNN: $cnn_runs); warm-up runs (not timed): $warmup; nice: $nice"
} | tee "$work/machine.txt" >&2

section "release build"
cargo build --release -p bkg-host -p bkg-plugin-rustyface --example bench >&2

section "face-api and dlib (cached in $cache)"
mkdir -p "$cache/npm"
if ! [ -f "$cache/npm/node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm" ]; then
  npm install --silent --no-audit --no-fund --prefix "$cache/npm" @tensorflow/tfjs-backend-wasm@4.22.0 >&2
fi
venv=$cache/venv
if ! "$venv/bin/python" -c 'import face_recognition, dlib' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --no-deps dlib-bin==20.0.1.post1 face_recognition_models==0.3.0 \
    face_recognition==1.3.0 numpy==1.26.4 pillow==10.4.0 >&2
fi
wasm_dir=$cache/npm/node_modules/@tensorflow/tfjs-backend-wasm/dist

# Each tool in its own process under /usr/bin/time -v: its JSON to $work/<name>.json, its peak
# RSS into $work/rss.json.
echo '{}' >"$work/rss.json"
# Other processes skew every figure: before each tool, wait (up to BENCH_QUIET_WAIT_S) for the
# 1-minute load average to fall under 0.7, and record it.
quiet() {
  local waited=0
  while awk '{exit !($1 >= 0.7)}' /proc/loadavg && [ "$waited" -lt "$quiet_wait" ]; do
    sleep 5
    waited=$((waited + 5))
  done
  echo "load before $1: $(cut -d' ' -f1-3 /proc/loadavg) (waited ${waited} s)" | tee -a "$work/machine.txt" >&2
}
measure() { # name command...
  local name=$1
  shift
  section "$name"
  quiet "$name"
  nice -n "$nice" /usr/bin/time -v -o "$work/$name.time" "$@" >"$work/$name.json" 2>"$work/$name.err" ||
    { tail -20 "$work/$name.err" >&2; echo "$name failed" >&2; exit 1; }
  python3 - "$work/rss.json" "$name" "$work/$name.time" <<'EOF'
import json, re, sys
path, name, time_file = sys.argv[1:]
rss = json.load(open(path))
rss[name] = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(time_file).read()).group(1))
json.dump(rss, open(path, "w"))
EOF
}

rm -rf "$work/chips"
measure rustyface-$threads "$release/examples/bench" --threads "$threads" --runs "$runs" \
  --warmup "$warmup" --models "$models" --chips-out "$work/chips" "${photos[@]}"
if [ "$threads" != 1 ]; then
  measure rustyface-1 "$release/examples/bench" --threads 1 --runs "$runs" --warmup "$warmup" \
    --models "$models" "${photos[@]}"
fi
measure faceapi-wasm node scripts/bench-rustyface-faceapi.mjs --backend wasm --wasm-dir "$wasm_dir" \
  --runs "$runs" --warmup "$warmup" --chips "$work/chips" "${photos[@]}"
# tfjs's CPU backend takes ~5-10 s per SSD detection here: two photos and four chips, 1 run.
measure faceapi-cpu node scripts/bench-rustyface-faceapi.mjs --backend cpu --runs 1 \
  --warmup "$warmup" --chips "$work/chips" --chip-limit 4 "${photos[0]}" "${photos[4]}"
OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads measure dlib "$venv/bin/python" \
  scripts/bench-rustyface-dlib.py --runs "$runs" --cnn-runs "$cnn_runs" --warmup "$warmup" \
  --chips "$work/chips" "${photos[@]}"
if [ "$threads" != 2 ]; then cp "$work/rustyface-$threads.json" "$work/rustyface-2.json"; fi

section "HTTP: a release host, POST /api/plugins/rustyface/face.embed"
key=bench-admin-key-0123456789abcdef
host=$work/host
mkdir -p "$host/plugins"
cp "$release/libbkg_plugin_rustyface.so" "$host/plugins/"
BKG_ADMIN_KEY=$key RUST_LOG=warn NO_COLOR=1 nice -n "$nice" "$release/bkg" --listen 127.0.0.1:0 \
  --data-dir "$host/data" --plugins-dir "$host/plugins" --models-dir "$models" \
  >"$host/stdout" 2>"$host/log" &
host_pid=$!
base=""
for _ in $(seq 200); do
  base=$(sed -n 's/^bkg listening on //p' "$host/stdout" | head -1)
  [ -n "$base" ] && break
  sleep 0.1
done
[ -n "$base" ] || { cat "$host/log" >&2; echo "the host did not start" >&2; exit 1; }
python3 - "$base" "$key" "$threads" "$runs" "$warmup" "$host_pid" "${photos[@]}" >"$work/http.json" <<'EOF'
# stdlib only: configure the plugin's threads, then time face.embed per photo from the client.
import http.client, json, os, sys, time, urllib.parse
base, key, threads, runs, warmup, pid = sys.argv[1:7]
photos = sys.argv[7:]
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
def call(method, path, body=b"", ctype="application/json"):
    conn.request(method, path, body, {"Authorization": f"Bearer {key}", "Content-Type": ctype})
    r = conn.getresponse()
    data = r.read()
    return r.status, data
deadline = time.time() + 120
while True:
    status, data = call("GET", "/api/core/plugins/rustyface/status")
    if status == 200 and b'"running"' in data:
        break
    if time.time() > deadline:
        sys.exit(f"rustyface did not start: {status} {data[:300]!r}")
    time.sleep(0.2)
status, data = call("POST", "/api/core/plugins/rustyface/config", json.dumps({"threads": int(threads)}))
if status >= 300:
    sys.exit(f"config: {status} {data[:300]!r}")
out = []
for p in photos:
    body = open(p, "rb").read()
    client, took = [], []
    for r in range(int(warmup) + int(runs)):
        t = time.perf_counter()
        status, data = call("POST", "/api/plugins/rustyface/face.embed", body, "image/jpeg")
        ms = (time.perf_counter() - t) * 1000
        if status != 200:
            sys.exit(f"{p}: {status} {data[:300]!r}")
        if r >= int(warmup):
            client.append(ms)
            took.append(json.loads(data)["took_ms"])
    out.append({"name": os.path.basename(p), "client_ms": client, "took_ms": took})
print(json.dumps({"photos": out}))
EOF
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$host_pid/status")
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); r['host']=int(sys.argv[2]); json.dump(r, open(sys.argv[1],'w'))" \
  "$work/rss.json" "$hwm"
kill "$host_pid"
wait "$host_pid" 2>/dev/null || true
host_pid=""

section "results (raw JSON in $work)"
cat "$work/machine.txt"
python3 scripts/bench-rustyface-summary.py "$work"
