#!/usr/bin/env bash
# Several hosts on one PostgreSQL (issue 16; results in docs/benchmarks-scale.md). Not part of
# CI. One release build: the `bench_scale_failover` example starts a temporary PostgreSQL
# cluster on 127.0.0.1 and three `bkg` hosts on one database of it (echo fixture), then
#   1. invoke throughput of 3 hosts vs 1 (wrk against each host at once, summed, vs wrk
#      against one host; same total connections and wrk threads), alternating for --rounds
#   2. kill -9 of one host under a client that retries on the next host: failures, retries,
#      the longest request with its retries
# A copy of the output goes to target/bench-results/.
#
# Usage: scripts/bench-scale-failover.sh [--duration 10] [--connections 30] [--rounds 3]
#                                        [--clients 4] [--kill-after 2] [--down-for 4]
# Knobs (environment): BENCH_QUIET_WAIT_S  how long to wait for a quiet machine (default 300)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/bench-quiet.sh
. scripts/bench-quiet.sh
bench_log bench-scale-failover
bash scripts/deps.sh

if ! command -v wrk >/dev/null 2>&1; then
  echo "=== installing wrk ==="
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk
fi

echo "=== building (release) ==="
cargo build --release --locked -p bkg-host --bin bkg --example bench_scale_failover -p fixture-echo
echo "=== $(date -u +%FT%TZ) $(nproc) CPUs, $(uname -r); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown) ==="
wait_quiet
timeout 1800 "$target_dir/release/examples/bench_scale_failover" "$@"
echo "(log: $log)"
