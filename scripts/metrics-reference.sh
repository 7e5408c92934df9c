#!/usr/bin/env bash
# Reference cyclomatic complexity for repoagent's metrics (plugins/repoagent/tests/metrics_lizard.rs):
# lizard (PyPI; nobody here wrote it) on real files nobody here wrote either: modules of CPython's
# standard library (the python3 on PATH), Rust crates and the tree-sitter runtime's C sources from
# the cargo registry (the versions in Cargo.lock, present after any build). Writes the per-function
# CCN to plugins/repoagent/tests/fixtures/lizard-ccn.tsv with each file's sha256, so the test can
# tell a changed file from a changed rule. Not run in CI; rerun it by hand when a version moves.
#
# The venv is target/venv-lizard (reused); PyPI is the only index reached.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/target/venv-lizard"
out="$repo_root/plugins/repoagent/tests/fixtures/lizard-ccn.tsv"
lizard_version="1.24.3"

if ! "$venv/bin/lizard" --version 2>/dev/null | grep -qx "$lizard_version"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "lizard==$lizard_version"
fi

stdlib="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
registry="$(ls -d "$HOME"/.cargo/registry/src/*/ | head -n1)"
ver() { # the version of a crate in Cargo.lock
    awk -v n="$1" '$0 == "name = \"" n "\"" { getline; gsub(/version = |"/, ""); print; exit }' "$repo_root/Cargo.lock"
}

# (prefix, root, relative paths): prefixes the test resolves the same way.
python_files=(textwrap.py shlex.py heapq.py fnmatch.py string.py json/decoder.py json/encoder.py
    difflib.py ipaddress.py)
globset="globset-$(ver globset)"
semver="semver-$(ver semver)"
tree_sitter="tree-sitter-$(ver tree-sitter)"
crate_files=("$globset/src/glob.rs" "$globset/src/lib.rs" "$semver/src/parse.rs"
    "$semver/src/impls.rs" "$tree_sitter/src/tree_cursor.c" "$tree_sitter/src/node.c"
    "$tree_sitter/src/language.c")

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
{
    echo "# lizard $lizard_version per-function CCN; written by scripts/metrics-reference.sh"
    echo "# python $(python3 -c 'import platform; print(platform.python_version())')"
    echo "# file<TAB>path<TAB>sha256 | fn<TAB>path<TAB>name<TAB>line<TAB>ccn"
} >"$tmp"
emit() { # prefix root rel
    local prefix="$1" root="$2" rel="$3"
    printf 'file\t%s/%s\t%s\n' "$prefix" "$rel" "$(sha256sum "$root/$rel" | cut -d' ' -f1)" >>"$tmp"
    (cd "$root" && "$venv/bin/lizard" --csv "$rel") | "$venv/bin/python" -c '
import csv, sys
prefix, rel = sys.argv[1], sys.argv[2]
for row in csv.reader(sys.stdin):
    nloc, ccn, _tok, _param, _length, _loc, _file, name, _long, start, _end = row[:11]
    print(f"fn\t{prefix}/{rel}\t{name}\t{start}\t{ccn}")
' "$prefix" "$rel" >>"$tmp"
}
for f in "${python_files[@]}"; do emit python "$stdlib" "$f"; done
for f in "${crate_files[@]}"; do emit registry "$registry" "$f"; done
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out: $(grep -c '^fn' "$out") functions in $(grep -c '^file' "$out") files"
