#!/usr/bin/env bash
# Build the host and every product plugin (plugins/*) in release, install the plugins into the
# watched folder, build the admin UI when it is missing or older than its sources, fetch the
# model weights into ./models when missing, and run the host with all of it. Data lives in
# ./.bkg unless BKG_DATA_DIR says otherwise. Set BKG_SKIP_UI=1 / BKG_SKIP_MODELS=1 to skip those.
#
# The models folder: BKG_MODELS_DIR when it is set (the models are fetched there); otherwise, when
# BKG_DATA_DIR is set, <data-dir>/models, into which every model of ./models is linked (hard
# links, or a symlink per file across file systems; a model already there is left alone), so
# that what the host writes there (a download, a quantized model) stays out of the checkout;
# otherwise ./models itself.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

fetched=$root/models
link_models=0
if [ -n "${BKG_MODELS_DIR:-}" ]; then
  fetched=$BKG_MODELS_DIR
elif [ -n "${BKG_DATA_DIR:-}" ]; then
  export BKG_MODELS_DIR=$BKG_DATA_DIR/models
  link_models=1
else
  export BKG_MODELS_DIR=$root/models
fi
export BKG_DATA_DIR=${BKG_DATA_DIR:-$root/.bkg}
export BKG_PLUGINS_DIR=${BKG_PLUGINS_DIR:-$BKG_DATA_DIR/plugins}
mkdir -p "$BKG_PLUGINS_DIR" "$BKG_MODELS_DIR"

if [ "${BKG_SKIP_MODELS:-0}" != 1 ] && [ -f scripts/fetch-models.sh ]; then
  BKG_MODELS_DIR=$fetched bash scripts/fetch-models.sh
fi
if [ "$link_models" = 1 ] && [ -d "$fetched" ]; then
  # Each model folder (<org>/<name>/ with its .bkg-model.json) is linked into a temp name beside
  # its place, then renamed there.
  while IFS= read -r manifest; do
    rel=${manifest#"$fetched/"}
    rel=${rel%/.bkg-model.json}
    dest=$BKG_MODELS_DIR/$rel
    [ -e "$dest" ] && continue
    mkdir -p "$(dirname "$dest")"
    tmp=$(dirname "$dest")/.$(basename "$dest").linking
    rm -rf "$tmp"
    cp -al "$fetched/$rel" "$tmp" 2>/dev/null || { rm -rf "$tmp"; cp -as "$fetched/$rel" "$tmp"; }
    mv "$tmp" "$dest"
    echo "linked model $rel"
  done < <(find "$fetched" -mindepth 3 -maxdepth 3 -name .bkg-model.json)
fi

# The admin UI: rebuilt when dist/ is missing or any source file is newer than its index.html.
ui_dist=$root/admin-ui/dist/admin-ui/browser
if [ "${BKG_SKIP_UI:-0}" != 1 ]; then
  if [ ! -f "$ui_dist/index.html" ] || [ -n "$(find admin-ui/src admin-ui/package.json admin-ui/angular.json -newer "$ui_dist/index.html" -print -quit)" ]; then
    command -v npm >/dev/null || { echo "npm is needed to build the admin UI (apt-get install nodejs npm), or set BKG_SKIP_UI=1" >&2; exit 1; }
    (cd admin-ui && npm ci --no-audit --no-fund && npx ng build)
  fi
  export BKG_UI_DIR=${BKG_UI_DIR:-$ui_dist}
fi

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
echo "models folder:  $BKG_MODELS_DIR"
[ -n "${BKG_UI_DIR:-}" ] && echo "admin UI:       http://${BKG_LISTEN:-127.0.0.1:43121}/"
exec "$target_dir/release/bkg" "$@"
