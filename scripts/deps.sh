#!/usr/bin/env bash
# System packages the build and the tests need, installed with apt when missing (as root on
# Debian/Ubuntu); elsewhere it says what to install. Run by .ci/run before the first cargo
# command (the build links libpq) and by scripts/test.sh.
#   libpq-dev:  PostgreSQL's client library, linked by diesel's postgres backend (the store).
#   postgresql: initdb, pg_ctl and postgres for the temporary clusters of the store's tests and
#               the host's PostgreSQL integration tests (host/src/store/test_pg.rs).
set -euo pipefail

missing=()
pkg-config --exists libpq 2>/dev/null || [ -e /usr/include/postgresql/libpq-fe.h ] || missing+=(libpq-dev)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)

if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing ${missing[*]} (apt)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing system packages: ${missing[*]} (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
