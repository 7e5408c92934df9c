#!/usr/bin/env bash
# Run every test of the project: unit tests, the host's integration tests (real hosts on
# ephemeral ports, real plugin libraries copied into real folders, real SQLite) and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi

# promtool checks the /metrics output (Debian/Ubuntu package `prometheus`).
if ! command -v promtool >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing promtool (apt package prometheus)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "promtool not found: install the 'prometheus' package (it provides promtool)" >&2
    exit 1
  fi
fi

cargo test --workspace --locked
