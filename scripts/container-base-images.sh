#!/usr/bin/env bash
# Local stand-ins for the base images the Dockerfile and compose.yml name, for machines that
# cannot pull from Docker Hub (podman, as root). Each is made only when it is missing:
#
#   localhost/debian:bookworm-slim   mmdebstrap --variant=minbase bookworm, imported (Dockerfile's DEBIAN_IMAGE)
#   localhost/debian:trixie-slim     the same for trixie (Dockerfile's UI_BUILD_IMAGE: Node.js 20.19)
#   localhost/bkg-postgres:15        Debian bookworm's postgresql-15 with a small entrypoint that
#                                    honours the official image's POSTGRES_USER/_PASSWORD/_DB,
#                                    PGDATA and PGPORT (compose.yml's BKG_POSTGRES_IMAGE)
#
# These are not the official images: the Debian ones come from deb.debian.org through
# mmdebstrap (minbase, not the slim images' exact package set), and the PostgreSQL one is
# Debian's package (15), not the postgres:15-bookworm image's build. Needs podman and mmdebstrap
# (apt-get install podman mmdebstrap).
set -euo pipefail
cd "$(dirname "$0")/.."
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

debian() { # suite
  local tag=localhost/debian:$1-slim
  if podman image exists "$tag"; then echo "have $tag"; return; fi
  echo "making $tag (mmdebstrap $1 minbase)"
  mmdebstrap --variant=minbase --quiet \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$1" - "$mirror" | podman import --change 'CMD ["bash"]' - "$tag" >/dev/null
  echo "made $tag"
}

postgres() {
  local tag=localhost/bkg-postgres:15
  if podman image exists "$tag"; then echo "have $tag"; return; fi
  local dir
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
  cat >"$dir/Containerfile" <<'CONTAINERFILE'
FROM localhost/debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 postgresql-client-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY entrypoint /usr/local/bin/docker-entrypoint.sh
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
CONTAINERFILE
  cat >"$dir/entrypoint" <<'ENTRYPOINT'
#!/bin/bash
# A small stand-in for the official image's entrypoint: initialise PGDATA on first start with
# POSTGRES_USER (superuser, password POSTGRES_PASSWORD, scram-sha-256 over TCP) and create
# POSTGRES_DB, then run postgres as the postgres user with the given arguments.
set -euo pipefail
[ "${1:-}" = postgres ] && shift
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
mkdir -p "$PGDATA"; chown postgres:postgres "$PGDATA"; chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -n "${POSTGRES_PASSWORD:-}" ] || { echo "POSTGRES_PASSWORD is required" >&2; exit 1; }
  pw=$(mktemp); printf '%s' "$POSTGRES_PASSWORD" >"$pw"; chown postgres "$pw"
  runuser -u postgres -- initdb -D "$PGDATA" -U "$user" --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    echo "CREATE DATABASE \"$db\" OWNER \"$user\";" | runuser -u postgres -- postgres --single -D "$PGDATA" -j postgres >/dev/null
  fi
  echo "initialised $PGDATA (user $user, database $db)"
fi
# setpriv execs postgres itself (runuser would stay its parent and not pass on SIGINT, the
# image's stop signal: a stop would wait for the SIGKILL).
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c listen_addresses='*' "$@"
ENTRYPOINT
  chmod +x "$dir/entrypoint"
  # chroot isolation: no OCI runtime for the build steps (works where crun/runc cannot make
  # containers with their default cgroup and rlimit settings, as in some sandboxes).
  podman build --isolation chroot --network host --pull=never -q -t "$tag" "$dir" >/dev/null
  rm -rf "$dir"
  echo "made $tag"
}

debian bookworm &
b=$!
debian trixie &
t=$!
wait $b
wait $t
postgres
