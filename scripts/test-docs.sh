#!/usr/bin/env bash
# Run the shell examples of README.md and docs/plugin-author.md against a real host, so that
# what the docs tell a user to paste keeps working. scripts/test.sh (and so CI) runs it after
# `cargo test --workspace`, whose debug build it uses (it builds what is missing).
#
#   bash scripts/test-docs.sh [FILE.md ...]      (default: README.md docs/plugin-author.md)
#
# What it does:
#   - starts target/debug/bkg on an ephemeral port with a temp data dir laid out as
#     scripts/run.sh lays out its default one (`<tmp>/.bkg`, plugins in `<tmp>/.bkg/plugins`),
#     a hard-linked private copy of the models folder (scripts/fetch-models.sh fills it), a hub
#     endpoint on a closed local port (nothing leaves the machine), BKG_ADMIN_KEY as $KEY, and
#     the real plugins (apikeys, candle, llmserver) installed and running;
#   - extracts every ```sh block of each file, in order, and runs them one after another in ONE
#     bash session (variables set by a block are seen by the next, as in a terminal), with
#     `set -euo pipefail` and a `curl` function that adds `--fail-with-body` unless the command
#     already says -f/--fail: a command that fails, an unset variable, or a curl answered with
#     4xx/5xx fails the test, which prints the block (with its file and line) and its output;
#   - README.md blocks run in the repository root; docs/plugin-author.md blocks run in the
#     guide's own crate (`~/.cache/bkg-doc-test/hello`), made from the blocks marked
#     `<!-- doc-test: file PATH -->` (its Cargo.toml and src/lib.rs), with `../bkg` the checkout.
#
# Markers (an HTML comment on the line right before the opening ``` fence):
#   <!-- doc-test: skip (reason) -->   do not run this block (it starts the product, needs the
#                                      network, or runs forever); the reason is required
#   <!-- doc-test: file PATH -->       this block is the file PATH of the guide's crate
# A block without a marker is run: that is the default.
#
# The docs are written for the product as scripts/run.sh serves it; before a block runs, these
# placeholders are rewritten (and only these):
#   localhost:43121, 127.0.0.1:43121   -> the test host's address
#   any path ending in .bkg/plugins     -> the test host's plugins folder
#   `--release`, target/release/        -> removed, target/debug/ (the debug build is used)
#   a line `export KEY=bkg_admin_...`   -> `export KEY` ($KEY is already the test host's key)
# BKG_DOCTEST_VERBOSE=1 prints every block's output, not only a failing one's.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(README.md docs/plugin-author.md)

command -v python3 >/dev/null || { echo "test-docs: python3 is needed" >&2; exit 1; }
# The targets \`cargo test --workspace\` builds, so its dependencies are reused (a build of a
# subset with -p resolves other features and compiles its own copy of candle and the rest).
cargo build -q --locked --workspace --lib --bins --examples
target=$(cargo metadata --no-deps --format-version 1 --locked | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
models=${BKG_MODELS_DIR:-$repo/models}
for m in sentence-transformers/all-MiniLM-L6-v2 HuggingFaceTB/SmolLM2-135M-Instruct-GGUF; do
  [ -f "$models/$m/.bkg-model.json" ] || { echo "test-docs: $models/$m is missing: run bash scripts/fetch-models.sh" >&2; exit 1; }
done

work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
data=$work/.bkg
plugins=$data/plugins
mkdir -p "$plugins" "$work/models" "$work/out"
# The models: hard links (no bytes copied; what the examples write stays in the temp copy), or
# symlinks per file across file systems.
cp -al "$models/." "$work/models/" 2>/dev/null || cp -as "$(cd "$models" && pwd)/." "$work/models/"

key="doctest-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
BKG_ADMIN_KEY=$key RUST_LOG=${RUST_LOG:-info} "$target/debug/bkg" --listen 127.0.0.1:0 \
  --data-dir "$data" --plugins-dir "$plugins" --models-dir "$work/models" \
  --hub-endpoint http://127.0.0.1:9 --hub-retries 0 >"$work/stdout" 2>"$work/host.log" &
pid=$!
addr=
for _ in $(seq 300); do
  addr=$(sed -n 's|^bkg listening on http://||p' "$work/stdout" | head -1)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "test-docs: the host did not start" >&2; cat "$work/stdout" "$work/host.log" >&2; exit 1
fi
for p in apikeys candle llmserver; do
  cp "$target/debug/libbkg_plugin_$p.so" "$plugins/.$p.tmp" && mv "$plugins/.$p.tmp" "$plugins/libbkg_plugin_$p.so"
done
ready=
for _ in $(seq 600); do
  list=$(curl -sf -H "Authorization: Bearer $key" "http://$addr/api/core/plugins" || echo '{"plugins":[]}')
  if python3 -c '
import json, sys
states = {p["id"]: p["state"] for p in json.loads(sys.argv[1])["plugins"]}
sys.exit(0 if all(states.get(p) == "running" for p in ("apikeys", "candle", "llmserver")) else 1)
' "$list"; then ready=1; break; fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "test-docs: the plugins did not all reach running: $list" >&2; tail -50 "$work/host.log" >&2; exit 1
fi
echo "test-docs: host at $addr, data dir $data"

# The guide's crate, beside a `bkg` that is this checkout: outside the checkout (cargo would take
# it for a workspace member) and in a fixed place, so that its build is cached; its target/ is
# the workspace's.
crate_parent=${XDG_CACHE_HOME:-$HOME/.cache}/bkg-doc-test
crate=$crate_parent/hello
mkdir -p "$crate/src"
ln -sfn "$repo" "$crate_parent/bkg"
ln -sfn "$target" "$crate/target"
cp "$repo/Cargo.lock" "$crate/Cargo.lock"

# Extract the blocks into one driver script; each block is announced in $work/current and its
# output goes to $work/out/<n>.
python3 - "$work" "$addr" "$plugins" "$repo" "$crate" "${files[@]}" <<'EOF'
import os, re, shlex, sys

work, addr, plugins, repo, crate, *files = sys.argv[1:]
marker = re.compile(r'^\s*<!--\s*doc-test:\s*(skip|file)\b\s*(.*?)\s*-->\s*$')

def rewrite(text):
    text = re.sub(r'\b(?:localhost|127\.0\.0\.1):43121\b', addr, text)
    text = re.sub(r'[^\s"\'=]*\.bkg/plugins(?![\w.-])', plugins, text)
    text = re.sub(r' --release\b', '', text)
    text = text.replace('target/release/', 'target/debug/')
    text = re.sub(r'^(\s*)export KEY=bkg_admin_\.\.\..*$', r'\1export KEY', text, flags=re.M)
    return text

blocks, skipped = [], []
for f in files:
    lines = open(os.path.join(repo, f), encoding='utf-8').read().split('\n')
    cwd = crate if f.endswith('plugin-author.md') else repo
    i = 0
    while i < len(lines):
        m = re.match(r'^```(\w*)\s*$', lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i + 1
        end = start
        while end < len(lines) and not re.match(r'^```\s*$', lines[end]):
            end += 1
        if end == len(lines):
            sys.exit(f'{f}:{start}: unclosed ``` block')
        body = '\n'.join(lines[start:end]) + '\n'
        mk = marker.match(lines[i - 1]) if i > 0 else None
        where = f'{f}:{start}'
        if mk and mk.group(1) == 'skip':
            reason = mk.group(2).strip()
            if not re.match(r'^\(.+\)$', reason):
                sys.exit(f'{where}: a skip marker needs a reason: <!-- doc-test: skip (why) -->')
            skipped.append(f'{where} {reason}')
        elif mk and mk.group(1) == 'file':
            path = os.path.normpath(os.path.join(crate, mk.group(2)))
            if not path.startswith(crate + os.sep):
                sys.exit(f'{where}: file marker leaves the crate: {mk.group(2)}')
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, 'w', encoding='utf-8').write(body)
        elif lang == 'sh':
            blocks.append((where, cwd, rewrite(body)))
        i = end + 1

with open(os.path.join(work, 'driver.sh'), 'w', encoding='utf-8') as d:
    d.write('set -euo pipefail\n')
    d.write('curl() {\n'
            '  local a fail=--fail-with-body\n'
            '  for a in "$@"; do\n'
            '    case $a in --fail|--fail-with-body) fail= ;; --*) ;; -*f*) [[ $a =~ ^-[A-Za-z]+$ ]] && fail= ;; esac\n'
            '  done\n'
            '  command curl ${fail:+"$fail"} "$@"\n'
            '}\n')
    for n, (where, cwd, body) in enumerate(blocks, 1):
        open(os.path.join(work, 'out', f'{n}.sh'), 'w', encoding='utf-8').write(body)
        d.write(f'echo {shlex.quote(f"{n} {where}")} >{shlex.quote(work)}/current\n')
        d.write(f'cd {shlex.quote(cwd)}\n')
        d.write(f'{{\n{body}}} >{shlex.quote(work)}/out/{n} 2>&1 </dev/null\n')
        d.write(f'echo >>{shlex.quote(work)}/out/{n}\n')
        d.write(f'echo {shlex.quote(f"test-docs: ok   {where}")}\n')
        d.write(f'[ "${{BKG_DOCTEST_VERBOSE:-0}}" = 1 ] && cat {shlex.quote(work)}/out/{n} || true\n')
    d.write('echo done >' + shlex.quote(work) + '/current\n')
for s in skipped:
    print(f'test-docs: skip {s}')
EOF

status=0
KEY=$key CARGO_NET_OFFLINE=true timeout "${BKG_DOCTEST_TIMEOUT:-600}" bash "$work/driver.sh" || status=$?
if [ "$status" != 0 ] || [ "$(cat "$work/current")" != done ]; then
  read -r n where <"$work/current" || true
  echo "test-docs: FAIL $where (exit status $status$([ "$status" = 124 ] && echo ', timed out'))"
  echo "----- the block, as run:"
  cat "$work/out/$n.sh" 2>/dev/null || true
  echo "----- its output:"
  cat "$work/out/$n" 2>/dev/null || true
  echo "----- the host's log (last 30 lines):"
  tail -30 "$work/host.log"
  exit 1
fi
if grep -q "panicked at" "$work/host.log"; then
  echo "test-docs: FAIL: the host log shows a panic"; grep -A10 "panicked at" "$work/host.log" | head -40; exit 1
fi
echo "test-docs: every shell example ran"
