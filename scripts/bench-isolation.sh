#!/usr/bin/env bash
# Crash isolation benchmark (issue 15; results in docs/benchmarks.md, "Issue 15"). Not part of
# CI. One release host, both isolation modes in the same run, rounds alternating the order:
#   1. round trip of the `noop` fixture's no-op capability, p50/p99 per mode  (bench_isolation)
#   2. HTTP echo throughput per mode, wrk -t1 -c32                           (bench_isolation)
#   3. from a crash (SIGSEGV in a call) to serving again, p99                (bench_isolation)
#   4. hot-swap latency under load, in process and in process mode          (bench_swap)
# A copy of the output goes to target/bench-results/.
#
# Usage: scripts/bench-isolation.sh
# Knobs (environment):
#   BENCH_ISOLATION_ARGS  extra flags for bench_isolation (e.g. "--calls 5000 --rounds 1")
#   BENCH_SWAP_ARGS       extra flags for bench_swap      (default "--swaps 100")
#   BENCH_QUIET_WAIT_S    how long each step waits for other processes to go quiet (default 300)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
release=$target_dir/release
results_dir=$target_dir/bench-results
mkdir -p "$results_dir"
log=$results_dir/bench-isolation-$(date -u +%Y%m%dT%H%M%SZ).txt
exec > >(tee "$log") 2>&1

section() { printf '\n=== %s ===\n' "$*"; }

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
echo "kernel:    $(uname -sr)"
echo "rustc:     $(rustc --version)"
echo "commit:    $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"

section "build (release)"
cargo build --release -p bkg-host --bin bkg \
  -p fixture-echo -p fixture-echo-v2 -p fixture-noop -p fixture-crashy
cargo build --release -p bkg-host --example bench_isolation --example bench_swap

# cpu_busy and wait_quiet: wait until other processes leave the CPUs alone.
source "$root/scripts/bench-quiet.sh"
summary=$(mktemp)
step_out=$(mktemp)
trap 'rm -f "$summary" "$step_out"' EXIT
failed=0
measure() {
  wait_quiet
  if "$@" 2>&1 | tee "$step_out"; then
    grep -h 'RESULT' "$step_out" >>"$summary" || true
  else
    echo "FAILED: $*" | tee -a "$summary"
    failed=$((failed + 1))
  fi
}

section "1-3. round trip, echo throughput, crash to serving (both modes, one host)"
# shellcheck disable=SC2086
measure timeout 1800 "$release/examples/bench_isolation" ${BENCH_ISOLATION_ARGS:-}

section "4a. hot-swap latency under load, in process"
# shellcheck disable=SC2086
measure timeout 900 "$release/examples/bench_swap" ${BENCH_SWAP_ARGS:---swaps 100}

section "4b. hot-swap latency under load, in process mode (a child per generation)"
# shellcheck disable=SC2086
measure timeout 900 "$release/examples/bench_swap" ${BENCH_SWAP_ARGS:---swaps 100} --isolation process

section "summary"
cat "$summary"
echo "full output: $log"
exit $((failed > 0))
