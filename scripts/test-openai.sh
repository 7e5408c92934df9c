#!/usr/bin/env bash
# The official `openai` Python client against a real host: vector stores and files under /v1
# (llmserver forwarding to brainml, embeddings by candle on the real all-MiniLM-L6-v2).
# scripts/test.sh (and so CI) runs it; the models come from scripts/fetch-models.sh.
#
#   bash scripts/test-openai.sh
#
# The client lives in a venv outside the repo (~/.cache/bkg-openai-venv), from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${BKG_OPENAI_VENV:-$HOME/.cache/bkg-openai-venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "openai==3.57.0"
fi
bash scripts/fetch-models.sh >/dev/null

# The targets \`cargo test --workspace\` builds, so its dependencies are reused (a build of a
# subset with -p resolves other features and compiles its own copy of candle and the rest).
cargo build -q --locked --workspace --lib --bins --examples
target=$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

work=$(mktemp -d)
key="openai-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
mkdir -p "$work/plugins" "$work/models"
# The models, hard-linked (a copy across file systems), so nothing the host writes lands in ./models.
cp -al models/. "$work/models/" 2>/dev/null || cp -a models/. "$work/models/"
BKG_ADMIN_KEY=$key "$target/debug/bkg" --listen 127.0.0.1:0 --data-dir "$work/data" \
  --plugins-dir "$work/plugins" --models-dir "$work/models" --call-timeout-ms 120000 \
  >"$work/stdout" 2>"$work/host.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 300); do grep -q "bkg listening" "$work/stdout" 2>/dev/null && break; sleep 0.1; done
base=$(sed -n 's/^bkg listening on //p' "$work/stdout" | head -1)
[ -n "$base" ] || { echo "FAIL: the host did not start"; tail -30 "$work/host.log"; exit 1; }
for p in candle llmserver brainml; do
  lib="libbkg_plugin_$p.so"
  cp "$target/debug/$lib" "$work/plugins/.$lib.tmp" && mv "$work/plugins/.$lib.tmp" "$work/plugins/$lib"
done
for p in candle llmserver brainml; do
  for _ in $(seq 600); do
    curl -sf -H "Authorization: Bearer $key" "$base/api/core/plugins/$p" | grep -q '"state":"running"' && break
    sleep 0.1
  done
  curl -sf -H "Authorization: Bearer $key" "$base/api/core/plugins/$p" | grep -q '"state":"running"' \
    || { echo "FAIL: plugin $p is not running"; tail -30 "$work/host.log"; exit 1; }
done

status=0
BKG_KEY=$key "$venv/bin/python" scripts/test-openai-vector-stores.py "$base" || status=$?
if [ $status != 0 ]; then
  echo "FAIL: the openai client test failed; the host's log:"; tail -40 "$work/host.log"
fi
exit $status
