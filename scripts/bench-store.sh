#!/usr/bin/env bash
# Store write latency, PostgreSQL vs SQLite (issue 16; results in docs/benchmarks-scale.md).
# Not part of CI. One release build of the `bench_store` example: both backends in the same
# run and process, rounds alternating, each durable the way the host runs it (SQLite WAL with
# synchronous=FULL; a temporary PostgreSQL cluster on 127.0.0.1 with fsync on, over TCP).
# A copy of the output goes to target/bench-results/.
#
# Usage: scripts/bench-store.sh [--writes N] [--rounds N]
# Knobs (environment): BENCH_QUIET_WAIT_S  how long to wait for a quiet machine (default 300)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/bench-quiet.sh
. scripts/bench-quiet.sh
bench_log bench-store
bash scripts/deps.sh

echo "=== building (release) ==="
cargo build --release --locked -p bkg-host --example bench_store
echo "=== $(date -u +%FT%TZ) $(nproc) CPUs, $(uname -r); temp dir $(df -h --output=fstype,target "${TMPDIR:-/tmp}" | tail -1) ==="
wait_quiet
"$target_dir/release/examples/bench_store" "$@"
echo "(log: $log)"
