#!/usr/bin/env bash
# The benchmarks of issues #2 and #3, end to end: builds everything in release once, then measures
#   1. ABI call overhead        (cargo bench --bench abi_call)
#   2. HTTP throughput vs bare  (examples/bench_http, with wrk)
#   3. hot-swap latency         (examples/bench_swap)
#   4. memory over load/unload  (examples/bench_cycles)
#   5. auth overhead            (examples/bench_auth)
#   6. logging under load       (examples/bench_logs)
# and prints every figure plus a summary of the RESULT lines. A copy of the output goes to
# target/bench-results/. See docs/benchmarks.md for what each figure means.
#
# Usage: scripts/bench.sh
# Knobs (environment):
#   BENCH_HTTP_ARGS    extra flags for bench_http   (default: none; e.g. "--duration 5 --rounds 1")
#   BENCH_SWAP_ARGS    extra flags for bench_swap   (default: none; e.g. "--swaps 20")
#   BENCH_CYCLES_ARGS  extra flags for bench_cycles (default: none; e.g. "--cycles 100")
#   BENCH_DIAG=0       skip the diagnostic re-run of bench_cycles with a fixed glibc mmap threshold
#   BENCH_QUIET_WAIT_S how long each step waits for other processes to go quiet (default 300)
#   BKG_BENCH_ITERS / BKG_BENCH_RUNS   calls per run / runs of the ABI bench
# Everything listens on 127.0.0.1 only; every step is bounded by `timeout`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
release=$target_dir/release
results_dir=$target_dir/bench-results
mkdir -p "$results_dir"
log=$results_dir/bench-$(date -u +%Y%m%dT%H%M%SZ).txt
exec > >(tee "$log") 2>&1

section() { printf '\n=== %s ===\n' "$*"; }

# wrk, from the distribution's packages when missing.
if ! command -v wrk >/dev/null 2>&1; then
  section "installing wrk"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk
fi

section "machine"
echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "nproc:     $(nproc)"
echo "cpu:       $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
echo "memory:    $(free -m | awk '/^Mem:/ {print $2 " MiB"}')"
echo "kernel:    $(uname -sr)"
echo "rustc:     $(rustc --version)"
echo "wrk:       $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "commit:    $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"

section "build (release)"
cargo build --release -p bkg-host -p fixture-echo -p fixture-echo-v2 -p fixture-noop -p bkg-plugin-apikeys --lib --bins
cargo build --release -p bkg-host --examples
cargo bench -p bkg-host --bench abi_call --no-run

# cpu_busy and wait_quiet: wait until other processes leave the CPUs alone.
source "$root/scripts/bench-quiet.sh"
summary=$(mktemp)
step_out=$(mktemp)
trap 'rm -f "$summary" "$step_out"' EXIT
failed=0
# Run one measurement: wait for a quiet machine, run it, keep its RESULT lines.
measure() {
  wait_quiet
  if "$@" 2>&1 | tee "$step_out"; then
    grep -h 'RESULT' "$step_out" >>"$summary" || true
  else
    echo "FAILED: $*" | tee -a "$summary"
    failed=$((failed + 1))
  fi
}

section "1. ABI call overhead"
measure timeout 600 cargo bench -p bkg-host --bench abi_call

section "2. HTTP throughput: host vs bare actix-web"
# shellcheck disable=SC2086
measure timeout 900 "$release/examples/bench_http" ${BENCH_HTTP_ARGS:-}

section "3. hot-swap latency under load"
# shellcheck disable=SC2086
measure timeout 900 "$release/examples/bench_swap" ${BENCH_SWAP_ARGS:-}

section "4. memory over load/unload cycles"
# shellcheck disable=SC2086
measure timeout 1200 "$release/examples/bench_cycles" ${BENCH_CYCLES_ARGS:-}

if [ "${BENCH_DIAG:-1}" != "0" ]; then
  section "4b. diagnostic: the same cycles with glibc's dynamic mmap threshold disabled"
  echo "(MALLOC_MMAP_THRESHOLD_=131072 keeps large buffers out of the heap; see docs/benchmarks.md)"
  # shellcheck disable=SC2086
  measure env MALLOC_MMAP_THRESHOLD_=131072 timeout 1200 "$release/examples/bench_cycles" \
    --label "fixed mmap threshold" ${BENCH_CYCLES_ARGS:-}
fi

section "5. auth overhead (issue #3)"
measure timeout 600 "$release/examples/bench_auth"

section "6. invoke throughput while a plugin logs 10k lines/s, 10 WebSocket subscribers (issue #3)"
measure timeout 900 "$release/examples/bench_logs"

section "7. model download from a hub on 127.0.0.1 (issue #3)"
measure timeout 900 "$release/examples/bench_download"

section "summary"
cat "$summary"
echo "full output: $log"
exit $((failed > 0))
