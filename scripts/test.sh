#!/usr/bin/env bash
# Run every test of the project: unit tests, the host's integration tests (real hosts on
# ephemeral ports, real plugin libraries copied into real folders) and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi

cargo test --workspace --locked
