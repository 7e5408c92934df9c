# syntax=docker/dockerfile:1
# bkg in a container: the host `bkg`, the product plugins (plugins/*) and the admin UI, built from
# this source tree and shipped in a slim Debian runtime image. Models are not in the image: mount
# a models folder filled by scripts/fetch-models.sh at /var/lib/bkg/models (see compose.yml and
# docs/deploy.md).
#
#   docker build -t bkg .                      # or: podman build -t bkg .
#
# Base images are build arguments so that a mirror or a locally made image can stand in
# (scripts/container-base-images.sh makes them with mmdebstrap when Docker Hub is unreachable).
# The admin UI (Angular 21) needs Node.js >= 20.19: Debian bookworm ships 18, trixie ships 20.19,
# so the UI stage runs on trixie with Debian's own nodejs and npm. Rust comes from rustup
# (static.rust-lang.org), pinned to the toolchain the project is tested with.
ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG UI_BUILD_IMAGE=debian:trixie-slim
ARG RUST_VERSION=1.95.0
# Extra CA certificates (PEM text) the build stages trust for their downloads (npm, rustup,
# crates.io), for networks behind a TLS-inspecting proxy; empty by default. Not in the runtime image.
#   --build-arg EXTRA_CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt)"
ARG EXTRA_CA_CERTS=

# ---- the admin UI ------------------------------------------------------------------------------
FROM ${UI_BUILD_IMAGE} AS ui
ARG EXTRA_CA_CERTS
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && if [ -n "$EXTRA_CA_CERTS" ]; then printf '%s\n' "$EXTRA_CA_CERTS" >/usr/local/share/ca-certificates/build-extra.crt && update-ca-certificates; fi
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
WORKDIR /src/admin-ui
COPY admin-ui/package.json admin-ui/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY admin-ui/ ./
RUN npx ng build && test -f dist/admin-ui/browser/index.html

# ---- the host and the product plugins --------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS build
ARG RUST_VERSION
ARG EXTRA_CA_CERTS
# gcc/g++: crates that build C (ring, SQLite, tree-sitter grammars); libpq-dev: diesel's
# PostgreSQL backend; python3: lists the product plugins from `cargo metadata`, as scripts/run.sh.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl gcc g++ libc6-dev libpq-dev pkg-config python3 \
 && rm -rf /var/lib/apt/lists/* \
 && if [ -n "$EXTRA_CA_CERTS" ]; then printf '%s\n' "$EXTRA_CA_CERTS" >/usr/local/share/ca-certificates/build-extra.crt && update-ca-certificates; fi
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN set -eu; arch="$(uname -m)-unknown-linux-gnu"; \
    url="https://static.rust-lang.org/rustup/dist/$arch/rustup-init"; \
    curl --proto '=https' --tlsv1.2 -fsSL "$url" -o /tmp/rustup-init; \
    curl --proto '=https' --tlsv1.2 -fsSL "$url.sha256" | awk '{print $1 "  /tmp/rustup-init"}' | sha256sum -c -; \
    chmod +x /tmp/rustup-init; \
    /tmp/rustup-init -y --no-modify-path --profile minimal --default-toolchain "$RUST_VERSION"; \
    rm /tmp/rustup-init; rustc --version
WORKDIR /src
COPY . .
# The cargo registry and the target folder are cache mounts: a rebuild after a source change is
# incremental. The results are copied out of the cache into /out. No debug line tables in the
# image (CARGO_PROFILE_RELEASE_DEBUG=false): smaller binaries, a shorter link.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    plugins=$(cargo metadata --no-deps --format-version 1 --locked | python3 -c 'import json, sys; m = json.load(sys.stdin); print(" ".join(p["name"] for p in m["packages"] if "/plugins/" in p["manifest_path"] and any("cdylib" in t["crate_types"] for t in p["targets"])))'); \
    args="-p bkg-host"; for p in $plugins; do args="$args -p $p"; done; \
    echo "building: $args"; \
    CARGO_PROFILE_RELEASE_DEBUG=false cargo build --release --locked $args; \
    mkdir -p /out/plugins; \
    cp target/release/bkg /out/bkg; \
    for p in $plugins; do cp "target/release/lib$(echo "$p" | tr - _).so" /out/plugins/; done; \
    ls -l /out /out/plugins

# ---- the runtime image -------------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS runtime
# libpq5: the PostgreSQL client library the host links (SQLite is compiled in).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libpq5 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/bkg --shell /usr/sbin/nologin bkg \
 && mkdir -p /var/lib/bkg/data /var/lib/bkg/models \
 && chown -R bkg:bkg /var/lib/bkg
COPY --from=build /out/bkg /usr/local/bin/bkg
# The product plugins ship here and are copied into the watched plugins folder at start
# (bkg-entrypoint), the way scripts/run.sh installs them: copy to a hidden name, then rename.
COPY --from=build /out/plugins/ /usr/local/lib/bkg/plugins/
# `bkg` without --ui-dir serves the dashboard from <bin>/../share/bkg/ui.
COPY --from=ui /src/admin-ui/dist/admin-ui/browser/ /usr/local/share/bkg/ui/
COPY scripts/container/bkg-entrypoint scripts/container/bkg-healthcheck /usr/local/bin/
ENV BKG_LISTEN=0.0.0.0:43121 \
    BKG_DATA_DIR=/var/lib/bkg/data \
    BKG_MODELS_DIR=/var/lib/bkg/models
USER bkg
WORKDIR /var/lib/bkg
VOLUME ["/var/lib/bkg/data"]
EXPOSE 43121
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 CMD ["bkg-healthcheck"]
ENTRYPOINT ["bkg-entrypoint"]
