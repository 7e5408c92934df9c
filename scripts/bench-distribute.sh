#!/usr/bin/env bash
# Plugin distribution between 3 hosts on one PostgreSQL (issue 16; results in
# docs/benchmarks-scale.md). Not part of CI. One release build: the `bench_distribute` example
# starts a temporary PostgreSQL cluster on 127.0.0.1 and three `bkg` hosts on one database of
# it, then measures the time from a new build renamed into host A's folder until hosts B and C
# serve it (p50/p99 over --uploads, default 20), and with --big-library PATH the time until a
# large library is in place, checked, in B's and C's folders. A copy of the output goes to
# target/bench-results/.
#
# Usage: scripts/bench-distribute.sh [--uploads N] [--big-library PATH [--big-uploads N]]
# Knobs (environment): BENCH_QUIET_WAIT_S  how long to wait for a quiet machine (default 300)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/bench-quiet.sh
. scripts/bench-quiet.sh
bench_log bench-distribute
bash scripts/deps.sh

echo "=== building (release) ==="
cargo build --release --locked -p bkg-host --bin bkg --example bench_distribute \
  -p fixture-echo -p fixture-echo-v2
echo "=== $(date -u +%FT%TZ) $(nproc) CPUs, $(uname -r); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown) ==="
wait_quiet
timeout 1800 "$target_dir/release/examples/bench_distribute" "$@"
echo "(log: $log)"
