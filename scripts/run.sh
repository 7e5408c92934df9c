#!/usr/bin/env bash
# Build the host and every product plugin (plugins/*) in release, install the plugins into the
# watched folder, and run the host. Data lives in ./.bkg unless BKG_DATA_DIR says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

export BKG_DATA_DIR=${BKG_DATA_DIR:-$root/.bkg}
export BKG_PLUGINS_DIR=${BKG_PLUGINS_DIR:-$BKG_DATA_DIR/plugins}
mkdir -p "$BKG_PLUGINS_DIR"

# Product plugins: the cdylib packages under plugins/.
mapfile -t plugins < <(cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
meta = json.load(sys.stdin)
for p in meta["packages"]:
    if "/plugins/" in p["manifest_path"] and any("cdylib" in t["crate_types"] for t in p["targets"]):
        print(p["name"])
')

args=(-p bkg-host)
for p in "${plugins[@]}"; do args+=(-p "$p"); done
cargo build --release --locked "${args[@]}"

target_dir=$(cargo metadata --no-deps --format-version 1 --locked | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
ext=so
case "$(uname -s)" in Darwin) ext=dylib ;; MINGW*|MSYS*|CYGWIN*) ext=dll ;; esac
for p in "${plugins[@]}"; do
  lib="lib${p//-/_}.$ext"
  [ "$ext" = dll ] && lib="${p//-/_}.dll"
  # Copy to a hidden temp name, then rename: the host sees only complete files.
  cp "$target_dir/release/$lib" "$BKG_PLUGINS_DIR/.$lib.tmp"
  mv "$BKG_PLUGINS_DIR/.$lib.tmp" "$BKG_PLUGINS_DIR/$lib"
  echo "installed $lib"
done

echo "plugins folder: $BKG_PLUGINS_DIR"
exec "$target_dir/release/bkg" "$@"
