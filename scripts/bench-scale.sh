#!/usr/bin/env bash
# Change propagation between 3 hosts on one PostgreSQL (issue 16; results in
# docs/benchmarks-scale.md). Not part of CI. One release build: the `bench_scale` example starts
# a temporary PostgreSQL cluster on 127.0.0.1 and three `bkg` hosts on one database of it, then
# measures, from host A's answer to a change, the time until hosts B and C serve it:
#   1. a config change (echo's greeting), p50/p99 over --changes (default 200)
#   2. a key revocation to refusal (apikeys), p50/p99 over --revocations (default 100)
# A copy of the output goes to target/bench-results/.
#
# Usage: scripts/bench-scale.sh [--changes N] [--revocations N]
# Knobs (environment): BENCH_QUIET_WAIT_S  how long to wait for a quiet machine (default 300)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/bench-quiet.sh
. scripts/bench-quiet.sh
bench_log bench-scale
bash scripts/deps.sh

echo "=== building (release) ==="
cargo build --release --locked -p bkg-host --bin bkg --example bench_scale \
  -p fixture-echo -p bkg-plugin-apikeys
echo "=== $(date -u +%FT%TZ) $(nproc) CPUs, $(uname -r); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown) ==="
wait_quiet
timeout 1800 "$target_dir/release/examples/bench_scale" "$@"
echo "(log: $log)"
