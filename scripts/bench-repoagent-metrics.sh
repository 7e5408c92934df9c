#!/usr/bin/env bash
# repoagent's metrics against lizard (PyPI), in one run, on the same files, the same threads
# (results in docs/benchmarks-repoagent.md, "Metrics"). Not part of CI. The files: every .py
# file of CPython's standard library (the python3 on PATH), the .rs files of serde_json,
# regex-syntax, globset and semver and the .c files of tree-sitter's runtime (the versions in
# Cargo.lock, from the cargo registry).
#
#   bkg     plugins/repoagent/examples/bench_metrics.rs (release): per file one read and
#           metrics::analyze on a rayon pool of BENCH_THREADS threads
#   lizard  lizard 1.24.3 (target/venv-lizard, as scripts/metrics-reference.sh installs it),
#           `lizard --csv -t BENCH_THREADS`
#
# Wall times, each tool after one untimed warm-up (the files in the page cache); then the
# functions both found, matched by file and first line, and how many have the same cyclomatic
# complexity, per language.
#
# Usage: scripts/bench-repoagent-metrics.sh   (BENCH_THREADS, default 2; BENCH_RUNS, default 3)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
threads=${BENCH_THREADS:-2}
runs=${BENCH_RUNS:-3}
venv=$root/target/venv-lizard
work=$(mktemp -d /tmp/bkg-bench-metrics.XXXXXX)

if ! "$venv/bin/lizard" --version 2>/dev/null | grep -qx 1.24.3; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet lizard==1.24.3
fi
cargo build --quiet --release -p bkg-plugin-repoagent --example bench_metrics

stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
registry=$(ls -d "$HOME"/.cargo/registry/src/*/ | head -n1)
ver() { awk -v n="$1" '$0 == "name = \"" n "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock; }
{
    find "$stdlib" -name '*.py' -not -path '*/site-packages/*'
    for c in serde_json regex-syntax globset semver; do
        find "$registry/$c-$(ver "$c")" -name '*.rs'
    done
    find "$registry/tree-sitter-$(ver tree-sitter)/src" -maxdepth 1 -name '*.c'
} | sort >"$work/files"
echo "files: $(wc -l <"$work/files") ($(cat "$work/files" | xargs cat | wc -l) lines); threads: $threads; work folder: $work"

"$root/target/release/examples/bench_metrics" --list "$work/files" --threads "$threads" \
    --runs $((runs + 1)) --out "$work/bkg.tsv" | tail -n "$runs" | tee "$work/bkg.json"

for i in $(seq 0 "$runs"); do
    start=$(date +%s.%N)
    "$venv/bin/lizard" --csv -t "$threads" -f "$work/files" >"$work/lizard.csv" 2>"$work/lizard.err" || true
    end=$(date +%s.%N)
    [ "$i" = 0 ] || echo "{\"tool\":\"lizard\",\"run\":$i,\"threads\":$threads,\"seconds\":$(echo "$end - $start" | bc)}"
done | tee "$work/lizard.json"

"$venv/bin/python" - "$work" <<'PY'
import csv, sys, collections
work = sys.argv[1]
ours = {}
for line in open(f"{work}/bkg.tsv", encoding="utf-8"):
    path, ln, name, ccn = line.rstrip("\n").split("\t")
    ours[(path, int(ln))] = int(ccn)
lang = lambda p: {"py": "python", "rs": "rust", "c": "c"}[p.rsplit(".", 1)[1]]
stats = collections.defaultdict(lambda: [0, 0, 0])  # lizard's functions, matched, same
for row in csv.reader(open(f"{work}/lizard.csv", encoding="utf-8", errors="replace")):
    try:
        ccn, path, start = int(row[1]), row[6], int(row[9])
    except (ValueError, IndexError):
        continue
    s = stats[lang(path)]
    s[0] += 1
    if (path, start) in ours:
        s[1] += 1
        s[2] += ours[(path, start)] == ccn
print("| language | functions (lizard) | found by both | same cyclomatic |")
print("|---|---:|---:|---:|")
for l, (n, both, same) in sorted(stats.items()):
    print(f"| {l} | {n} | {both} | {same} ({100 * same / max(both, 1):.1f} %) |")
PY
