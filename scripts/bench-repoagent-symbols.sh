#!/usr/bin/env bash
# repoagent's symbol-extraction benchmark (issue 14, "Performance": files/s vs universal-ctags;
# results in docs/benchmarks-repoagent.md, section Symbols). Not part of CI. In one run, on one
# list of files (every file of the ten languages under the tree, at most 1 MiB like the
# plugin's max_file_bytes; both tools read exactly this list):
#
#   ctags        universal-ctags (Debian package), `ctags -L LIST -f /dev/null --sort=no
#                --fields=+nKSe`: single-threaded
#   bkg          plugins/repoagent/examples/bench_symbols.rs: per file one read and
#                symbols::Extractor::extract (tree-sitter parse, repoagent's query, definitions
#                with parents and signatures, references), a fresh Extractor per run (query
#                compilation counted), on a rayon pool of 1 and of 2 threads
#   bkg parse    the same files only parsed by tree-sitter (no query): the floor of any
#                tree-sitter extractor, to show where the time goes
#
# The files are read once before timing (page cache warm for every tool); each timed command
# runs BENCH_RUNS times; medians. Prints a markdown table; raw output in the work folder.
#
# Usage: scripts/bench-repoagent-symbols.sh
# Knobs (environment):
#   BENCH_RUNS   timed runs of each (default 3)
#   BENCH_TREE   the tree (default: every ~/.cargo/registry/src/*/ folder)
#   CARGO_TARGET_DIR  where the release build goes (default target/)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
runs=${BENCH_RUNS:-3}
target_dir=${CARGO_TARGET_DIR:-$root/target}
export CARGO_TARGET_DIR=$target_dir
bench=$target_dir/release/examples/bench_symbols
work=$(mktemp -d /tmp/bkg-bench-repoagent-symbols.XXXXXX)
section() { printf '\n=== %s ===\n' "$*" >&2; }

command -v ctags >/dev/null && ctags --version | grep -q "Universal Ctags" ||
  { echo "universal-ctags not found (Debian package universal-ctags)" >&2; exit 1; }

section "release build"
cargo build --release -p bkg-plugin-repoagent --example bench_symbols >&2

section "the files"
if [ -n "${BENCH_TREE:-}" ]; then
  trees=("$BENCH_TREE")
else
  trees=("${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/)
fi
find "${trees[@]}" -type f -size -1025k \( -name '*.rs' -o -name '*.py' -o -name '*.js' \
  -o -name '*.ts' -o -name '*.go' -o -name '*.java' -o -name '*.c' -o -name '*.h' -o -name '*.cc' \
  -o -name '*.cpp' -o -name '*.hpp' -o -name '*.rb' -o -name '*.cs' \) | sort >"$work/list"
files=$(wc -l <"$work/list")
bytes=$(tr '\n' '\0' <"$work/list" | du -cb --files0-from=- | tail -1 | cut -f1)
tr '\n' '\0' <"$work/list" | xargs -0 cat >/dev/null
{
  echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu:     $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "ctags:   $(ctags --version | head -1)"
  echo "rustc:   $(rustc --version)"
  echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- plugins/repoagent || echo ' (+ uncommitted changes in plugins/repoagent)')"
  echo "files:   $files, $((bytes / 1048576)) MiB ($(sed -E 's/.*\.//' "$work/list" | sort | uniq -c | sort -rn | awk '{printf "%s .%s, ", $1, $2}' | sed 's/, $//'))"
  echo "runs:    $runs (medians)"
} | tee "$work/machine.txt" >&2

: >"$work/ctags.times"
section "ctags"
for _ in $(seq "$runs"); do
  /usr/bin/time -f '%e %M' -o "$work/ctags.t" ctags -L "$work/list" -f /dev/null --sort=no \
    --fields=+nKSe 2>"$work/ctags.err"
  tail -1 "$work/ctags.t" >>"$work/ctags.times"
done
for threads in 1 2; do
  section "bkg, $threads thread(s)"
  "$bench" --list "$work/list" --threads "$threads" --runs "$runs" >"$work/bkg-$threads.out"
done
section "bkg, parse only, 1 thread"
"$bench" --list "$work/list" --threads 1 --runs "$runs" --parse-only >"$work/parse-1.out"

section "results (raw output in $work)"
cat "$work/machine.txt"
python3 - "$work" "$files" <<'EOF'
import json, statistics, sys
work, files = sys.argv[1], int(sys.argv[2])
med = statistics.median
ctags = [float(l.split()[0]) for l in open(f"{work}/ctags.times") if l.strip()]
rows = [("universal-ctags -L (1 thread)", med(ctags), "")]
for name, label in [("bkg-1", "bkg Extractor, 1 thread"), ("bkg-2", "bkg Extractor, 2 threads"),
                    ("parse-1", "tree-sitter parse only, 1 thread")]:
    runs = [json.loads(l) for l in open(f"{work}/{name}.out") if l.strip()]
    extra = f"{runs[0]['defs']} definitions, {runs[0]['refs']} references" if name != "parse-1" else ""
    rows.append((label, med(r["seconds"] for r in runs), extra))
print()
print("| tool | median s | files/s | vs ctags (files/s) | found |")
print("|---|---|---|---|---|")
for label, s, extra in rows:
    print(f"| {label} | {s:.2f} | {files / s:.0f} | {med(ctags) / s:.2f}x | {extra} |")
EOF
