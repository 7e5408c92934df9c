"""The client side of scripts/bench-brainml.sh (see docs/benchmarks-brainml.md): builds the
corpus of real paragraphs, runs the ingestion comparison (brainml `index` vs candle
`model.infer` alone, interleaved) and the query-latency measurement over HTTP.

  corpus  OUT LEE_COR N FILL       candidates.jsonl (real paragraphs, prose first), queries.txt
  select  BASE KEY OUT N FILL      paragraphs.jsonl (N), fill.jsonl (FILL): one-chunk ones
  ingest  BASE KEY OUT HOST_PID ROUNDS PER_CALL BATCH
  fill    BASE KEY OUT COLLECTION PER_CALL
  latency BASE KEY OUT COLLECTION LABEL QUERIES WARMUP
  train   BASE KEY COLLECTION
"""

import gzip
import http.client
import json
import os
import random
import re
import sys
import time
import urllib.parse

import numpy as np

WORDS = (20, 120)  # a paragraph has this many words: one chunk in brainml, whatever its rule
SEED = 12


# --------------------------------------------------------------------------------------------
# Corpus


def clean(p):
    return " ".join(p.split())


def usable(p):
    n = len(p.split())
    if not WORDS[0] <= n <= WORDS[1]:
        return False
    letters = sum(c.isalpha() for c in p)
    return letters >= 0.6 * len(p)  # prose, not tables, hex dumps or code


def paragraphs_of(text):
    return [clean(p) for p in re.split(r"\n[ \t]*\n", text)]


def read_text(path):
    try:
        data = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None
    return None if "\x00" in text else text


def lee_paragraphs(path):
    # One news article per line: cut each into runs of whole sentences of at most 100 words.
    out = []
    for line in open(path, encoding="utf-8", errors="replace"):
        cur = []
        for s in re.split(r"(?<=[.!?])\s+", line.strip()):
            if cur and len(" ".join(cur + [s]).split()) > 100:
                out.append(" ".join(cur))
                cur = []
            cur.append(s)
        if cur:
            out.append(" ".join(cur))
    return out


def dpkg_status():
    """(name, summary, long description) of each package in /var/lib/dpkg/status."""
    out = []
    for stanza in open("/var/lib/dpkg/status", encoding="utf-8").read().split("\n\n"):
        name = summary = None
        long, inside = [], False
        for line in stanza.split("\n"):
            if line.startswith("Package:"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("Description:"):
                summary, inside = line.split(":", 1)[1].strip(), True
            elif inside and line.startswith(" "):
                long.append("" if line.strip() == "." else line.strip())
            else:
                inside = False
        if name and summary:
            out.append((name, summary, clean(" ".join(long))))
    return out


def doc_files(changelogs):
    skip = (".html", ".htm", ".png", ".jpg", ".svg", ".css", ".js", ".pdf", ".json", ".xml")
    for root, dirs, files in os.walk("/usr/share/doc"):
        dirs.sort()
        for f in sorted(files):
            path = os.path.join(root, f)
            if os.path.islink(path) or f.endswith(skip):
                continue
            if f.startswith("changelog") == changelogs:
                yield path


def corpus(out, lee, n, fill):
    seen, sources = set(), {}

    def take(paras, source):
        got = []
        for p in paras:
            p = clean(p)
            if usable(p) and p not in seen:
                seen.add(p)
                got.append(p)
        sources[source] = sources.get(source, 0) + len(got)
        return got

    prose = take(lee_paragraphs(lee), "gensim lee_background.cor")
    for f in sorted(os.listdir("/usr/share/common-licenses")):
        text = read_text(os.path.join("/usr/share/common-licenses", f))
        prose += take(paragraphs_of(text or ""), "/usr/share/common-licenses")
    prose += take([d[2] for d in dpkg_status()], "dpkg long descriptions")
    for path in doc_files(changelogs=False):
        prose += take(paragraphs_of(read_text(path) or ""), "/usr/share/doc (not changelogs)")
    rest = []
    for path in doc_files(changelogs=True):
        rest += take(paragraphs_of(read_text(path) or ""), "/usr/share/doc changelogs")
    everything = prose + rest
    if len(everything) < n + fill:
        sys.exit(f"only {len(everything)} usable paragraphs; {n + fill} are needed")
    # Prose first; `select` keeps those brainml indexes as one chunk.
    with open(f"{out}/candidates.jsonl", "w") as f:
        for p in everything:
            f.write(json.dumps(p) + "\n")
    # Queries: Debian package summaries (real one-line questions of a kind), distinct.
    summaries = sorted({s for _, s, _ in dpkg_status() if len(s.split()) >= 3})
    random.Random(SEED).shuffle(summaries)
    with open(f"{out}/queries.txt", "w") as f:
        f.write("\n".join(summaries) + "\n")
    print(
        json.dumps(
            {"usable_paragraphs": len(everything), "by_source": sources, "queries": len(summaries)}
        )
    )


# --------------------------------------------------------------------------------------------
# HTTP


class Client:
    def __init__(self, base, key):
        u = urllib.parse.urlparse(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post_raw(self, path, body):
        self.conn.request("POST", path, body=json.dumps(body), headers=self.headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status not in (200, 201, 202):
            raise SystemExit(f"POST {path} -> {r.status} {data[:500]!r}")
        return data

    def post(self, path, body):
        return json.loads(self.post_raw(path, body))

    def get(self, path):
        self.conn.request("GET", path, headers=self.headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise SystemExit(f"GET {path} -> {r.status} {data[:500]!r}")
        return json.loads(data)


def load(path):
    return [json.loads(l) for l in open(path)]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


# --------------------------------------------------------------------------------------------
# Selection: the paragraphs brainml indexes as one chunk (at most max_tokens - 2 word pieces by
# candle's own tokenizer), so that both sides of the ingestion comparison embed the very same
# texts and every fill paragraph can carry one vector.


def select(base, key, out, n, fill):
    c = Client(base, key)
    c.post("/api/plugins/brainml/collection.create", {"name": "warmup"})  # loads the model
    kept, total, words = [], 0, []
    with open(f"{out}/candidates.jsonl") as f:
        candidates = [json.loads(l) for l in f]
    for s in range(0, len(candidates), 2000):
        group = candidates[s : s + 2000]
        total += len(group)
        v = c.post(
            "/api/plugins/candle/model.tokenize", {"model": "all-MiniLM-L6-v2", "input": group}
        )
        limit = v["max_tokens"] - 2
        kept += [p for p, t in zip(group, v["tokens"]) if len(t) <= limit]
        if len(kept) >= n + fill:
            break
    if len(kept) < n + fill:
        sys.exit(f"only {len(kept)} one-chunk paragraphs; {n + fill} are needed")
    ingest = kept[:n]
    random.Random(SEED).shuffle(ingest)  # every round mixes the sources
    with open(f"{out}/paragraphs.jsonl", "w") as f:
        for i, p in enumerate(ingest):
            f.write(json.dumps({"id": f"p{i}", "text": p}) + "\n")
    with open(f"{out}/fill.jsonl", "w") as f:
        for i, p in enumerate(kept[n : n + fill]):
            f.write(json.dumps({"id": f"f{i}", "text": p}) + "\n")
    words = [len(p.split()) for p in ingest]
    print(
        json.dumps(
            {
                "tokenized": total,
                "one_chunk": len(kept),
                "ingest": n,
                "ingest_words_mean": round(sum(words) / n, 1),
                "fill": fill,
            }
        ),
        flush=True,
    )


# --------------------------------------------------------------------------------------------
# Ingestion: brainml `index` vs candle `model.infer` on the same texts, interleaved.


def process_cpu_s(pid):
    """User + system CPU seconds of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ingest(base, key, out, pid, rounds, per_call, batch):
    c = Client(base, key)
    paras = load(f"{out}/paragraphs.jsonl")
    texts = [p["text"] for p in paras]
    c.post("/api/plugins/brainml/collection.create", {"name": "ingest"})
    infer = lambda group: c.post_raw(
        "/api/plugins/candle/model.infer",
        {"model": "all-MiniLM-L6-v2", "input": group, "batch_size": batch},
    )
    brainml_cpu = lambda: c.get("/api/core/plugins/brainml/telemetry")["totals"]["cpu_seconds"]
    # Warm both paths (model loaded, caches, allocator) on texts outside the measured set.
    warm = [l.strip() for l in open(f"{out}/queries.txt")][: 4 * batch]
    infer(warm)
    docs = [{"id": str(i), "text": t} for i, t in enumerate(warm)]
    c.post("/api/plugins/brainml/index", {"collection": "warmup", "documents": docs})
    vectors = np.zeros((len(texts), 384), dtype=np.float32)
    wall = {"brainml": 0.0, "candle": 0.0}
    cpu = {"brainml": 0.0, "candle": 0.0}
    own_cpu = 0.0
    ratios = []
    took_ms = 0.0
    chunks = 0
    per_round = (len(texts) + rounds - 1) // rounds
    for r in range(rounds):
        lo, hi = r * per_round, min(len(texts), (r + 1) * per_round)
        calls = [(s, min(hi, s + per_call)) for s in range(lo, hi, per_call)]

        def brain():
            nonlocal chunks, took_ms, own_cpu
            own = brainml_cpu()
            for a, b in calls:
                v = c.post(
                    "/api/plugins/brainml/index",
                    {"collection": "ingest", "documents": paras[a:b]},
                )
                chunks += v["chunks"]
                took_ms += v["took_ms"]
            own_cpu += brainml_cpu() - own

        def candle():
            answers = [(a, b, infer(texts[a:b])) for a, b in calls]
            return answers

        def timed(side, f):
            c0, t0 = process_cpu_s(pid), time.perf_counter()
            got = f()
            dt = time.perf_counter() - t0
            wall[side] += dt
            cpu[side] += process_cpu_s(pid) - c0
            return dt, got

        if r % 2 == 0:
            (tb, _), (tc, answers) = timed("brainml", brain), timed("candle", candle)
        else:
            (tc, answers), (tb, _) = timed("candle", candle), timed("brainml", brain)
        for a, b, raw in answers:  # parsed off the clock (brainml's own parsing is on its clock)
            vectors[a:b] = np.asarray(json.loads(raw)["embeddings"], dtype=np.float32)
        ratios.append((tb - tc) / tc * 100)
        if (r + 1) % max(1, rounds // 10) == 0:
            print(
                f"round {r + 1}/{rounds}: {hi - lo} paragraphs: brainml index {tb:.2f} s, "
                f"candle model.infer {tc:.2f} s ({ratios[-1]:+.1f} %); load "
                f"{open('/proc/loadavg').read().split()[0]}",
                flush=True,
            )
    vectors.tofile(f"{out}/vectors.f32")
    n = len(texts)
    stats = c.post("/api/plugins/brainml/stats", {"collection": "ingest"})["collections"][0]
    result = {
        "paragraphs": n,
        "chunks": chunks,
        "rounds": rounds,
        "per_call": per_call,
        "batch_size": batch,
        "brainml_index_s": round(wall["brainml"], 2),
        "brainml_took_ms_sum_s": round(took_ms / 1000, 2),
        "candle_infer_s": round(wall["candle"], 2),
        "brainml_per_s": round(n / wall["brainml"], 1),
        "candle_per_s": round(n / wall["candle"], 1),
        "overhead_wall_pct": round((wall["brainml"] - wall["candle"]) / wall["candle"] * 100, 2),
        "overhead_wall_median_round_pct": round(sorted(ratios)[len(ratios) // 2], 2),
        "host_cpu_brainml_side_s": round(cpu["brainml"], 2),
        "host_cpu_candle_side_s": round(cpu["candle"], 2),
        "overhead_cpu_pct": round((cpu["brainml"] - cpu["candle"]) / cpu["candle"] * 100, 2),
        "brainml_worker_cpu_s": round(own_cpu, 2),
        "documents": stats["documents"],
        "bytes_on_disk": stats["bytes_on_disk"],
    }
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# The 100k-chunk collection: the ingested paragraphs with their own vectors, then real
# paragraphs whose vectors are mixtures of two of those (see docs/benchmarks-brainml.md).


def fill(base, key, out, collection, per_call):
    c = Client(base, key)
    paras = load(f"{out}/paragraphs.jsonl")
    extra = load(f"{out}/fill.jsonl")
    real = np.fromfile(f"{out}/vectors.f32", dtype=np.float32).reshape(len(paras), 384)
    rng = np.random.default_rng(SEED)
    a = rng.integers(0, len(real), len(extra))
    b = (a + rng.integers(1, len(real), len(extra))) % len(real)  # b != a
    mixed = real[a] + real[b]
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    docs = [(p, real[i]) for i, p in enumerate(paras)] + [(p, mixed[i]) for i, p in enumerate(extra)]
    c.post("/api/plugins/brainml/collection.create", {"name": collection})
    t = time.perf_counter()
    for s in range(0, len(docs), per_call):
        body = [
            {"id": p["id"], "text": p["text"], "vector": [round(float(x), 7) for x in v]}
            for p, v in docs[s : s + per_call]
        ]
        c.post("/api/plugins/brainml/index", {"collection": collection, "documents": body})
    stats = c.post("/api/plugins/brainml/stats", {"collection": collection})["collections"][0]
    print(
        json.dumps(
            {
                "filled": len(docs),
                "seconds": round(time.perf_counter() - t, 1),
                "chunks": stats["chunks"],
                "bytes_in_memory": stats["bytes_in_memory"],
                "bytes_on_disk": stats["bytes_on_disk"],
            }
        ),
        flush=True,
    )


# --------------------------------------------------------------------------------------------
# Query latency, concurrency 1, each query in every mode in turn.


def latency(base, key, out, collection, label, n_queries, warmup):
    c = Client(base, key)
    queries = [l.strip() for l in open(f"{out}/queries.txt") if l.strip()]
    if len(queries) < n_queries + warmup:
        sys.exit(f"{len(queries)} queries, {n_queries + warmup} needed")
    q = lambda body: c.post("/api/plugins/brainml/query", {"collection": collection, "k": 10, **body})
    embed = lambda text: c.post(
        "/api/plugins/candle/model.infer",
        {"model": "all-MiniLM-L6-v2", "input": [text], "batch_size": 1},
    )["embeddings"][0]
    kinds = ["embed", "dense", "dense_vector", "bm25", "hybrid"]
    wall = {k: [] for k in kinds}
    took = {k: [] for k in kinds if k != "embed"}
    for i, text in enumerate(queries[: warmup + n_queries]):
        vec = None
        order = kinds[i % len(kinds) :] + kinds[: i % len(kinds)]  # rotate: no mode always first
        for kind in order:
            t = time.perf_counter()
            if kind == "embed":
                vec = embed(text)
                v = None
            elif kind == "dense_vector":
                continue  # after embed, below
            else:
                v = q({"text": text, "mode": kind})
            dt = (time.perf_counter() - t) * 1000
            if i >= warmup:
                wall[kind].append(dt)
                if v is not None:
                    took[kind].append(v["took_ms"])
        # Search alone: dense with the query's vector already embedded.
        t = time.perf_counter()
        v = q({"vector": vec, "mode": "dense"})
        dt = (time.perf_counter() - t) * 1000
        if i >= warmup:
            wall["dense_vector"].append(dt)
            took["dense_vector"].append(v["took_ms"])
    stats = c.post("/api/plugins/brainml/stats", {"collection": collection})["collections"][0]
    row = {"label": label, "queries": n_queries, "chunks": stats["chunks"], "index": stats.get("index")}
    for k in kinds:
        row[k] = {
            "p50_ms": round(pct(wall[k], 0.5), 2),
            "p99_ms": round(pct(wall[k], 0.99), 2),
            "mean_ms": round(sum(wall[k]) / len(wall[k]), 2),
        }
        if k in took:
            row[k]["server_p50_ms"] = round(pct(took[k], 0.5), 2)
            row[k]["server_p99_ms"] = round(pct(took[k], 0.99), 2)
    print(json.dumps(row), flush=True)


def train(base, key, collection):
    # Started, then polled: `wait: true` would hold the call past the host's call deadline.
    c = Client(base, key)
    t = time.perf_counter()
    v = c.post("/api/plugins/brainml/train", {"collection": collection})
    while v.get("job", v).get("state") == "running":
        time.sleep(2)
        v = c.post("/api/plugins/brainml/train.status", {"collection": collection})
    print(json.dumps({"train_wall_s": round(time.perf_counter() - t, 1), "answer": v}), flush=True)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "corpus":
        corpus(args[0], args[1], int(args[2]), int(args[3]))
    elif cmd == "select":
        select(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif cmd == "ingest":
        ingest(args[0], args[1], args[2], int(args[3]), int(args[4]), int(args[5]), int(args[6]))
    elif cmd == "fill":
        fill(args[0], args[1], args[2], args[3], int(args[4]))
    elif cmd == "latency":
        latency(args[0], args[1], args[2], args[3], args[4], int(args[5]), int(args[6]))
    elif cmd == "train":
        train(args[0], args[1], args[2])
    else:
        sys.exit(__doc__)
