#!/usr/bin/env bash
# repoagent's incremental-update benchmark (issue 14, "Performance": after a save on a 10k-file
# repository the index is up to date within p95 < 1 s). Not part of CI; results in
# docs/benchmarks-repoagent.md. One release `bkg` host over HTTP, repoagent watching a copy of
# every crate source in the cargo registry (>= 10k files, a git repository so that the crates'
# .gitignore files apply). Then, one at a time, BENCH_EDITS saves (a line with a unique token
# appended to a random indexed .rs file, written whole the way editors save) and BENCH_NEW new
# files, each timed from the moment the write returns until the index shows it (polled every
# 5 ms; the time includes the watcher's debounce of 100 ms): for a save, `code.stats` of that
# file (counted when indexed) has its new line count (`code.search` would not do: it reads the
# file from disk, so it sees a save at once); for a new file, `code.search` for its token
# narrowed to it finds it (only indexed files are searched). Prints p50, p95 and max.
#
# Usage: scripts/bench-repoagent-incremental.sh
# Knobs (environment):
#   BENCH_THREADS   the plugin's threads (default 2)
#   BENCH_EDITS     saves of existing files (default 100)
#   BENCH_NEW       new files (default 20)
#   BENCH_TREE      the tree to copy (default: every ~/.cargo/registry/src/*/ folder, merged)
#   CARGO_TARGET_DIR  where the release build goes (default target/)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
threads=${BENCH_THREADS:-2}
edits=${BENCH_EDITS:-100}
new=${BENCH_NEW:-20}
target_dir=${CARGO_TARGET_DIR:-$root/target}
export CARGO_TARGET_DIR=$target_dir
release=$target_dir/release
work=$(mktemp -d /tmp/bkg-bench-repoagent-inc.XXXXXX)
host_pid=""
cleanup() {
  if [ -n "$host_pid" ]; then kill "$host_pid" 2>/dev/null || true; fi
  rm -rf "$work/tree"
}
trap cleanup EXIT
section() { printf '\n=== %s ===\n' "$*" >&2; }

section "release build"
cargo build --release -p bkg-host -p bkg-plugin-repoagent >&2

section "the tree"
tree=$work/tree
mkdir -p "$tree"
if [ -n "${BENCH_TREE:-}" ]; then
  cp -a "$BENCH_TREE/." "$tree/"
else
  for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do cp -a "$d." "$tree/"; done
fi
git -C "$tree" init -q
files=$(find "$tree" -type f -not -path "$tree/.git/*" | wc -l)
{
  echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu:     $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cores"
  echo "rustc:   $(rustc --version)"
  echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- plugins/repoagent || echo ' (+ uncommitted changes in plugins/repoagent)')"
  echo "tree:    $files files (every crate source in the cargo registry)"
  echo "threads: $threads; saves: $edits; new files: $new"
  echo "command: scripts/bench-repoagent-incremental.sh"
} | tee "$work/machine.txt" >&2

section "bkg: a release host watching the tree"
key=bench-admin-key-0123456789abcdef
host=$work/host
mkdir -p "$host/plugins"
cp "$release/libbkg_plugin_repoagent.so" "$host/plugins/"
BKG_ADMIN_KEY=$key RUST_LOG=warn NO_COLOR=1 "$release/bkg" --listen 127.0.0.1:0 \
  --data-dir "$host/data" --plugins-dir "$host/plugins" >"$host/stdout" 2>"$host/log" &
host_pid=$!
base=""
for _ in $(seq 200); do
  base=$(sed -n 's/^bkg listening on //p' "$host/stdout" | head -1)
  [ -n "$base" ] && break
  sleep 0.1
done
[ -n "$base" ] || { cat "$host/log" >&2; echo "the host did not start" >&2; exit 1; }
python3 - "$base" "$key" "$threads" "$edits" "$new" "$work" "$tree" <<'EOF'
# stdlib only.
import http.client, json, os, random, statistics, sys, time, urllib.parse
base, key, threads, edits, new, work, tree = sys.argv[1:8]
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=3600)
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    conn.request(method, path, data, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()
def wait_running():
    deadline = time.time() + 120
    while True:
        status, data = call("GET", "/api/core/plugins/repoagent")
        if status == 200 and json.loads(data).get("state") == "running":
            return
        if time.time() > deadline:
            sys.exit(f"repoagent did not start: {status} {data[:300]!r}")
        time.sleep(0.2)
wait_running()
status, data = call("POST", "/api/core/plugins/repoagent/config", {"roots": [work], "threads": int(threads)})
if status >= 300:
    sys.exit(f"config: {status} {data[:300]!r}")
wait_running()
t = time.perf_counter()
# Streamed: a whole answer would have to come within the host's call timeout.
status, data = call("POST", "/api/plugins/repoagent/repo.add", {"path": tree, "name": "tree", "stream": True})
added = json.loads(data.decode().strip().splitlines()[-1])
if status != 200 or "files" not in added:
    sys.exit(f"repo.add: {status} {data[-500:]!r}")
print(f"repo.add: {added['files']} files indexed in {time.perf_counter() - t:.1f} s", file=sys.stderr)
status, data = call("POST", "/api/plugins/repoagent/code.stats", {"repo": "tree", "by": "file"})
rs = sorted(f["path"] for f in json.loads(data)["files"] if f["path"].endswith(".rs"))
rng = random.Random(14)

def lines(rel):
    status, data = call("POST", "/api/plugins/repoagent/code.stats", {"repo": "tree", "by": "file", "path": rel})
    return json.loads(data)["files"][0]["lines"] if status == 200 else None

def counted(rel, before, deadline_s=10.0):
    start = time.perf_counter()
    while True:
        now = lines(rel)
        if now is not None and now != before:
            return time.perf_counter() - start
        if time.perf_counter() - start > deadline_s:
            sys.exit(f"the save of {rel} not indexed after {deadline_s} s ({before} lines)")
        time.sleep(0.005)

def visible(rel, token, deadline_s=10.0):
    start = time.perf_counter()
    while True:
        status, data = call("POST", "/api/plugins/repoagent/code.search",
                            {"repo": "tree", "pattern": token, "path": rel})
        if status == 200 and json.loads(data)["hits"]:
            return time.perf_counter() - start
        if time.perf_counter() - start > deadline_s:
            sys.exit(f"{token} in {rel} not visible after {deadline_s} s: {status} {data[:300]!r}")
        time.sleep(0.005)

def save(path, text):
    # Whole, through a temp file renamed over it, as most editors save.
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.bkgtmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)

lat = {"save": [], "new": []}
for i in range(int(edits)):
    rel = rng.choice(rs)
    path = os.path.join(tree, rel)
    token = f"bkgprobe_edit_{i}_x"
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    before = lines(rel)
    save(path, text + f"\n// {token}\n")
    lat["save"].append(counted(rel, before))
    time.sleep(0.2)
dirs = sorted({os.path.dirname(r) for r in rs})
for i in range(int(new)):
    rel = os.path.join(rng.choice(dirs), f"bkgprobe_new_{i}.rs")
    token = f"bkgprobe_new_{i}_x"
    with open(os.path.join(tree, rel), "w") as f:
        f.write(f"pub fn {token}() {{}}\n")
    lat["new"].append(visible(rel, token))
    time.sleep(0.2)
print("\n| change | n | p50 (ms) | p95 (ms) | max (ms) |")
print("|---|---:|---:|---:|---:|")
for k, v in lat.items():
    v = sorted(v)
    p = lambda q: v[min(len(v) - 1, int(round(q * (len(v) - 1))))] * 1000
    print(f"| {k} | {len(v)} | {p(0.5):.0f} | {p(0.95):.0f} | {v[-1] * 1000:.0f} |")
EOF
kill "$host_pid"
wait "$host_pid" 2>/dev/null || true
host_pid=""
