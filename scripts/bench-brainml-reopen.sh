#!/usr/bin/env bash
# brainml's reopen time after a crash (docs/benchmarks-brainml.md, section "Storage"). Not part
# of CI. A release host and brainml; one collection of 100k chunks of 384-d vectors (given by
# the caller: seeded Gaussian noise, brainml normalizes them) with real prose as their texts
# (the paragraphs of /usr/share/common-licenses and /usr/share/doc/*/copyright, cycled), so
# that the BM25 index is rebuilt from real words at every reopen. Then, twice:
#   fresh      every chunk written once;
#   rewritten  every document indexed twice more (new vectors, other texts): two thirds of
#              what was written is dead (brainml compacts a log over 8 MiB that is more than
#              half dead; a build without compaction replays all of it);
# each followed by BENCH_RUNS rounds of `kill -9` + restart, timed from the new process's
# spawn until `collection.get` answers with every document (host start included).
#
# Usage: scripts/bench-brainml-reopen.sh [brainml library]
#        (default: this tree's target/release/libbkg_plugin_brainml.so, built first unless
#        BENCH_NO_BUILD=1; give another build's library to measure it with the same host)
# Knobs: BENCH_CHUNKS (100000)  BENCH_DIM (384)  BENCH_RUNS (3)  BENCH_PER_CALL (250)
#        BENCH_KEEP=1 keeps the data folder (its path is printed)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cargo build --release -p bkg-host -p bkg-plugin-brainml
fi
lib="${1:-target/release/libbkg_plugin_brainml.so}"
[ -f "$lib" ] || { echo "no brainml library at $lib" >&2; exit 1; }

exec python3 - "$lib" <<'PY'
import glob, json, os, random, re, shutil, statistics, subprocess, sys, tempfile, time
import urllib.request, urllib.error

LIB = sys.argv[1]
N = int(os.environ.get("BENCH_CHUNKS", "100000"))
DIM = int(os.environ.get("BENCH_DIM", "384"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
PER_CALL = int(os.environ.get("BENCH_PER_CALL", "250"))
KEY = "bench-admin-key-0123456789abcdef"

work = tempfile.mkdtemp(prefix="bench-brainml-reopen-")
data, plugins = os.path.join(work, "data"), os.path.join(work, "plugins")
os.makedirs(plugins)
shutil.copy(LIB, os.path.join(plugins, ".brainml.tmp"))
os.rename(os.path.join(plugins, ".brainml.tmp"), os.path.join(plugins, os.path.basename(LIB)))

def start():
    log = open(os.path.join(work, "host.log"), "a")
    p = subprocess.Popen(
        ["target/release/bkg", "--listen", "127.0.0.1:0", "--data-dir", data, "--plugins-dir", plugins],
        stdout=subprocess.PIPE, stderr=log, env=dict(os.environ, BKG_ADMIN_KEY=KEY, NO_COLOR="1"), text=True)
    for line in p.stdout:
        if line.startswith("bkg listening on "):
            return p, line.split()[-1]
    raise SystemExit("bkg exited before listening; see " + work)

def call(base, capability, body, timeout=600):
    req = urllib.request.Request(base + "/api/plugins/brainml/" + capability, data=json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        return 0, str(e)

def wait_all(base, n, deadline):
    while time.monotonic() < deadline:
        s, v = call(base, "collection.get", {"name": "bench"}, timeout=5)
        if s == 200 and v["documents"] == n:
            return
        time.sleep(0.02)
    raise SystemExit("brainml did not answer with %d documents; see %s" % (n, work))

paras = []
for path in sorted(glob.glob("/usr/share/common-licenses/*") + glob.glob("/usr/share/doc/*/copyright")):
    try:
        text = open(path, encoding="utf-8").read()
    except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
        continue
    for p in re.split(r"\n\s*\n", text):
        p = " ".join(p.split())
        if len(p.split()) >= 12:
            paras.append(p)
paras = sorted(set(paras))
rng = random.Random(12)

def index_all(base, version):
    t = time.monotonic()
    for lo in range(0, N, PER_CALL):
        docs = [{"id": "d%d" % i, "text": paras[(i + version) % len(paras)],
                 "vector": [round(rng.gauss(0, 1), 5) for _ in range(DIM)]}
                for i in range(lo, min(N, lo + PER_CALL))]
        s, v = call(base, "index", {"collection": "bench", "documents": docs})
        if s != 200:
            raise SystemExit("index: %s %s" % (s, v))
    return time.monotonic() - t

def log_bytes():
    return sum(os.path.getsize(f) for f in glob.glob(os.path.join(data, "plugin-data", "brainml", "collections", "bench", "*")))

print("library: %s; %d chunks of %d-d, %d distinct real paragraphs as texts" % (LIB, N, DIM, len(paras)))
host, base = start()
wait_all_deadline = lambda: time.monotonic() + 3600
deadline = time.monotonic() + 60
while call(base, "collection.list", {}, timeout=5)[0] != 200:
    if time.monotonic() > deadline:
        raise SystemExit("brainml did not start; see " + work)
    time.sleep(0.05)
s, v = call(base, "collection.create", {"name": "bench", "dim": DIM})
assert s == 201, (s, v)
rows = []
for scenario, versions in [("fresh", [0]), ("rewritten", [1, 2])]:
    for version in versions:
        took = index_all(base, version)
        print("%s: indexed %d chunks in %.1f s" % (scenario, N, took), flush=True)
    times = []
    for _ in range(RUNS):
        host.kill(); host.wait()            # kill -9: nothing is flushed or closed
        t = time.monotonic()
        host, base = start()
        wait_all(base, N, wait_all_deadline())
        times.append(time.monotonic() - t)
        print("  reopen after kill -9: %.2f s (collection folder %d bytes)" % (times[-1], log_bytes()), flush=True)
    rows.append((scenario, log_bytes(), statistics.median(times), times))
host.kill(); host.wait()
print()
print("| scenario | collection folder after the reopens | reopen, median of %d | runs |" % RUNS)
print("|---|---|---|---|")
for scenario, size, med, times in rows:
    print("| %s | %.0f MiB | **%.2f s** | %s |" % (scenario, size / 2**20, med, ", ".join("%.2f" % t for t in times)))
if os.environ.get("BENCH_KEEP"):
    print("kept: " + work)
else:
    shutil.rmtree(work)
PY
