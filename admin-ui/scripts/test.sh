#!/usr/bin/env bash
# The admin UI's whole test suite: Chromium (apt) if missing, `npm ci` on the committed
# lockfile, unit tests, production build and its size, end-to-end tests
# against a real bkg host with the real candle and llmserver plugins and the real models folder.
# Env: BKG_BIN, BKG_PLUGIN_LIBS, BKG_MODELS_DIR (see e2e/run.mjs), SKIP_E2E=1.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(cd .. && pwd)
export BKG_BIN=${BKG_BIN:-$repo/target/debug/bkg}
export BKG_PLUGIN_LIBS=${BKG_PLUGIN_LIBS:-$repo/target/debug}

if [ ! -x /usr/bin/chromium ] && [ "${SKIP_E2E:-0}" != 1 ]; then
  echo "== installing chromium (apt)"
  if [ "$(id -u)" = 0 ]; then apt_get="apt-get"; else apt_get="sudo apt-get"; fi
  $apt_get update -qq && DEBIAN_FRONTEND=noninteractive $apt_get install -y -qq chromium >/dev/null
fi

echo "== npm ci (exactly the committed lockfile)"
# The lockfile holds every platform's optional packages (made by a fresh `npm install` with no
# node_modules; a second fresh install reproduces it byte for byte), so `npm ci` works here.
npm ci --no-audit --no-fund --loglevel=error
git diff --exit-code --stat -- package-lock.json || { echo "npm ci changed package-lock.json" >&2; exit 1; }

echo "== unit tests"
npx ng test --watch=false

echo "== production build"
npx ng build
node scripts/bundle-size.mjs 250

if [ "${SKIP_E2E:-0}" = 1 ]; then
  echo "== e2e skipped (SKIP_E2E=1)"
  exit 0
fi
for f in "$BKG_BIN" "$BKG_PLUGIN_LIBS"/lib{bkg_plugin_apikeys,fixture_echo,fixture_crashy,bkg_plugin_candle,bkg_plugin_llmserver}.so; do
  [ -e "$f" ] || { echo "missing $f: build the host and plugins first (cargo build --workspace)" >&2; exit 1; }
done
echo "== e2e (host $BKG_BIN, plugins from $BKG_PLUGIN_LIBS, models from ${BKG_MODELS_DIR:-$repo/models})"
node e2e/run.mjs
