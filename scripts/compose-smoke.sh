#!/usr/bin/env bash
# Build the bkg image and check the compose deployment end to end (issue 16; not run by CI: the
# image build takes 20-40 minutes on 2 cores). As root with podman and docker-compose
# (apt-get install podman docker-compose mmdebstrap), on host networking:
#
#   1. base images: pulled when the registry answers, else made locally by
#      scripts/container-base-images.sh (mmdebstrap Debian images, Debian's PostgreSQL 15);
#   2. `podman build` of the Dockerfile (build stages included), timed; the image's size;
#   3. `docker-compose up` (compose.yml, against podman's Docker API socket): PostgreSQL and two
#      hosts, waiting for both hosts' /healthz;
#   4. a config set on host A (llmserver's models: MiniLM) is served by host B, and an embedding
#      call (/v1/embeddings: llmserver -> candle, the real model from the models volume) answers
#      on each host with the same vector;
#   5. `docker-compose down -v`: containers and volumes removed (also on failure).
#
# Environment: BKG_SMOKE_CONTEXT (build context, default the repository, uncommitted files
# included), BKG_SMOKE_REF (build a commit instead: `git archive` of it into a temporary folder,
# e.g. BKG_SMOKE_REF=HEAD), BKG_MODELS_DIR (a
# folder filled by scripts/fetch-models.sh, default ./models; fetched when missing),
# BKG_SMOKE_PORTS ("A B PG", default "43181 43182 55432"), BKG_SMOKE_KEEP_IMAGE=1 keeps the image.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
context=${BKG_SMOKE_CONTEXT:-$root}
export_dir=
if [ -n "${BKG_SMOKE_REF:-}" ]; then
  export_dir=$(mktemp -d)
  git archive "$BKG_SMOKE_REF" | tar -x -C "$export_dir"
  context=$export_dir
  trap 'rm -rf "$export_dir"' EXIT
fi
read -r port_a port_b port_pg <<<"${BKG_SMOKE_PORTS:-43181 43182 55432}"
image=localhost/bkg:smoke
project=bkgsmoke
say() { echo "compose-smoke: $*"; }
die() { echo "compose-smoke: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (rootful podman, host networking)"
command -v podman >/dev/null || die "podman is needed (apt-get install podman)"
command -v docker-compose >/dev/null || die "docker-compose is needed (apt-get install docker-compose)"
command -v curl >/dev/null || die "curl is needed"
for p in $port_a $port_b $port_pg; do
  ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || die "port $p is in use (set BKG_SMOKE_PORTS)"
done

export BKG_MODELS_DIR=${BKG_MODELS_DIR:-$root/models}
[ -f "$BKG_MODELS_DIR/sentence-transformers/all-MiniLM-L6-v2/.bkg-model.json" ] || bash scripts/fetch-models.sh

# 1. Base images.
build_args=()
pg_image=postgres:15-bookworm
if timeout 60 podman pull -q docker.io/library/debian:bookworm-slim >/dev/null 2>&1 \
  && timeout 60 podman pull -q docker.io/library/debian:trixie-slim >/dev/null 2>&1 \
  && timeout 120 podman pull -q docker.io/library/postgres:15-bookworm >/dev/null 2>&1; then
  say "base images pulled from Docker Hub"
else
  say "Docker Hub unreachable: local base images (scripts/container-base-images.sh)"
  bash scripts/container-base-images.sh
  build_args=(--build-arg DEBIAN_IMAGE=localhost/debian:bookworm-slim --build-arg UI_BUILD_IMAGE=localhost/debian:trixie-slim)
  pg_image=localhost/bkg-postgres:15
fi

# 2. The image. chroot isolation: the build steps need no OCI runtime (see below).
# The machine's own extra CA certificates (update-ca-certificates' /usr/local/share/ca-certificates,
# e.g. a TLS-inspecting proxy's) are trusted by the build stages' downloads too.
extra_ca=$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true)
[ -z "$extra_ca" ] || build_args+=(--build-arg "EXTRA_CA_CERTS=$extra_ca")
say "building $image from $context"
start=$(date +%s)
podman build --jobs 2 --isolation chroot --network host --pull=never "${build_args[@]}" -t "$image" -f "$context/Dockerfile" "$context"
build_s=$(( $(date +%s) - start ))
size=$(podman image inspect --format '{{.Size}}' "$image")
say "built in ${build_s}s; image size $size bytes ($(( size / 1000000 )) MB)"
# Containers: where podman's defaults cannot start one (seen in a sandbox: crun refuses cgroups
# v1+v2 hybrid mode, and setting RLIMIT_NOFILE/NPROC to podman's rootful maximum is refused),
# use runc and rlimits this machine allows, through a containers.conf of this run only.
conf=
if ! podman run --rm --network host --entrypoint true "$image" >/dev/null 2>&1; then
  conf=$(mktemp --suffix=.conf)
  nofile=$(ulimit -Hn)
  cat >"$conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=20000:20000"]
[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF=$conf
  command -v runc >/dev/null || die "podman cannot start a container here and runc is missing (apt-get install runc)"
  podman run --rm --network host --entrypoint true "$image" || die "podman cannot start a container, even with $conf"
  say "podman's defaults cannot start a container here: using runc and nofile=$nofile, nproc=20000 ($conf)"
fi
podman run --rm --network host --entrypoint sh "$image" -c 'ls -l /usr/local/bin/bkg /usr/local/lib/bkg/plugins/ && ls /usr/local/share/bkg/ui/index.html'

# 3. The deployment. docker-compose talks to podman's Docker-compatible API; podman runs health
# checks from systemd timers, and without systemd this script runs them (every 2 s).
sock=/run/bkg-compose-smoke.sock
podman system service --time=0 "unix://$sock" &
service_pid=$!
health_pid=
export DOCKER_HOST=unix://$sock
export BKG_IMAGE=$image BKG_POSTGRES_IMAGE=$pg_image BKG_A_PORT=$port_a BKG_B_PORT=$port_b BKG_POSTGRES_PORT=$port_pg
export BKG_ADMIN_KEY=smoke-admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
export BKG_POSTGRES_PASSWORD=smoke-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
compose() { docker-compose -p "$project" -f "$root/compose.yml" "$@"; }
cleanup() {
  set +e
  [ -n "$health_pid" ] && kill "$health_pid" 2>/dev/null
  say "logs of the hosts (last lines):"
  compose logs --no-color --tail=15 bkg-a bkg-b 2>/dev/null
  compose down -v --remove-orphans >/dev/null 2>&1
  kill "$service_pid" 2>/dev/null; wait "$service_pid" 2>/dev/null
  rm -f "$sock"
  [ -z "$export_dir" ] || rm -rf "$export_dir"
  local removed=" (image kept: $image)"
  if [ "${BKG_SMOKE_KEEP_IMAGE:-0}" != 1 ]; then
    # Checked, not assumed: `podman image exists` answers 1 only once the image is gone.
    removed=" (the image $image could not be removed: podman rmi -f $image)"
    for _ in $(seq 10); do
      podman rmi -f "$image" >/dev/null 2>&1
      if podman image exists "$image"; then sleep 1; elif [ $? = 1 ]; then removed=", image"; break; else sleep 1; fi
    done
  fi
  [ -z "$conf" ] || rm -f "$conf"
  say "torn down (containers, volumes$removed)"
}
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || die "podman system service did not open $sock"
if [ ! -d /run/systemd/system ]; then
  ( while sleep 2; do
      for c in $(podman ps -q --filter "label=com.docker.compose.project=$project"); do
        podman healthcheck run "$c" >/dev/null 2>&1 || true
      done
    done ) &
  health_pid=$!
fi
say "docker-compose up (PostgreSQL $pg_image on 127.0.0.1:$port_pg, hosts on :$port_a and :$port_b)"
compose up -d --no-build

wait_for() { # what, seconds, command...
  local what=$1 limit=$2; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${limit}s waiting for $what"
    sleep 1
  done
}
for p in $port_a $port_b; do
  wait_for "/healthz on :$p" 180 curl -fsS "http://127.0.0.1:$p/healthz"
  say ":$p /healthz: $(curl -fsS "http://127.0.0.1:$p/healthz")"
done
containers_healthy() {
  local n
  n=$(podman ps --filter "label=com.docker.compose.project=$project" --format '{{.Status}}' | grep -c '(healthy)')
  [ "$n" = 3 ]
}
wait_for "the three containers' health checks to pass" 120 containers_healthy
say "container health: $(podman ps --filter "label=com.docker.compose.project=$project" --format '{{.Names}}={{.Status}}' | tr '\n' ' ')"

for p in $port_a $port_b; do
  curl -fsS "http://127.0.0.1:$p/" | grep -q '<app-root' || die "no admin UI at / on :$p"
  say ":$p / serves the admin UI ($(curl -fsS "http://127.0.0.1:$p/" | grep -o '<title>[^<]*</title>'))"
done

# 4. A config set on A is served by B; an embedding call on each host.
auth="Authorization: Bearer $BKG_ADMIN_KEY"
api() { curl -fsS -H "$auth" -H 'Content-Type: application/json' "$@"; }
for p in $port_a $port_b; do
  wait_for "llmserver and candle running on :$p" 120 sh -c "curl -fsS -H '$auth' http://127.0.0.1:$p/api/core/plugins | grep -q '\"llmserver\"' && curl -fsS -H '$auth' http://127.0.0.1:$p/api/core/plugins | grep -q '\"candle\"'"
done
config='{"models":{"minilm":{"path":"sentence-transformers/all-MiniLM-L6-v2","kind":"embedding"}}}'
say "POST :$port_a /api/core/plugins/llmserver/config $config"
api -X POST -d "$config" "http://127.0.0.1:$port_a/api/core/plugins/llmserver/config" >/dev/null
wait_for "host B to serve the config set on A" 30 sh -c "curl -fsS -H '$auth' http://127.0.0.1:$port_b/api/core/plugins/llmserver/config | grep -q minilm"
say "GET :$port_b /api/core/plugins/llmserver/config: $(api "http://127.0.0.1:$port_b/api/core/plugins/llmserver/config")"
say "GET :$port_b /v1/models: $(api "http://127.0.0.1:$port_b/v1/models")"
declare -A vec
for p in $port_a $port_b; do
  out=$(api -X POST -d '{"model":"minilm","input":"a bkg host in a container"}' "http://127.0.0.1:$p/v1/embeddings")
  vec[$p]=$(python3 -c 'import json,sys; d=json.load(sys.stdin)["data"][0]["embedding"]; print(len(d), " ".join("%.6f" % x for x in d[:4]))' <<<"$out")
  say "POST :$p /v1/embeddings -> dims and first values: ${vec[$p]}"
done
[ "${vec[$port_a]}" = "${vec[$port_b]}" ] || die "the hosts' embeddings differ"
[ "${vec[$port_a]%% *}" = 384 ] || die "expected a 384-dimensional embedding"
say "OK: both hosts healthy, B serves A's config, both embed the same (384 dims)"
