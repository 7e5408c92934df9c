"""brainml's ANN over HTTP on a release host (run by scripts/bench-brainml-ann.sh).

  http BASE KEY NPY EF THREADS   GloVe 6B 50-d, the split of ann_bench.rs (every 400th row a
                                 query): the 399,000 base rows indexed as vectors (ids = row
                                 numbers in the base), `train` with ef_search EF (wait), then the
                                 1000 queries through `query.batch` (100 per call, THREADS calls
                                 at once, best of 3 passes), recall@10 against brute force
  memory BASE KEY N              N real paragraphs (license texts and Debian copyright files,
                                 20 to 60 words) embedded by candle's all-MiniLM-L6-v2 (384-d)
                                 into a collection, trained (force) without and with int8: the
                                 index's own accounting (train.status bytes_per_vector,
                                 index_bytes) per vector
"""
import glob, http.client, json, sys, threading, time, urllib.parse

import numpy as np

mode, base, key = sys.argv[1], sys.argv[2], sys.argv[3]
u = urllib.parse.urlparse(base)
H = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
local = threading.local()


def post(cap, body, ok=(200, 201, 202)):
    if not hasattr(local, "conn"):
        local.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=3600)
    local.conn.request("POST", f"/api/plugins/brainml/{cap}", json.dumps(body), H)
    r = local.conn.getresponse()
    data = r.read()
    if r.status not in ok:
        raise SystemExit(f"{cap}: {r.status} {data[:500]!r}")
    return json.loads(data)


def train(collection, **params):
    """Start a train and poll train.status until it ends (a call may not outlast the host's
    call timeout, so no wait: true)."""
    post("train", dict(params, collection=collection))
    while True:
        st = post("train.status", {"collection": collection})
        if st["state"] != "running":
            if st["state"] != "done":
                raise SystemExit(f"train {collection}: {st}")
            return st
        time.sleep(1)


if mode == "http":
    npy, ef, threads = sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
    x = np.ascontiguousarray(np.load(npy).astype(np.float32))
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    q_mask = np.arange(len(x)) % 400 == 0
    xb, xq = x[~q_mask], x[q_mask]
    truth = np.argsort(-(xq @ xb.T), axis=1)[:, :10]
    post("collection.create", {"name": "glove", "dim": int(xb.shape[1]), "distance": "cosine"})
    t = time.perf_counter()
    for i in range(0, len(xb), 1000):
        docs = [{"id": str(j), "vector": xb[j].tolist()} for j in range(i, min(i + 1000, len(xb)))]
        post("index", {"collection": "glove", "documents": docs})
    print(f"indexed {len(xb)} vectors over HTTP in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    t = time.perf_counter()
    st = train("glove", ef_search=ef, sample=1000)
    print(json.dumps({"impl": "bkg-http", "what": "train", "wall_s": round(time.perf_counter() - t, 1),
                      "build_ms": st["build_ms"], "recall_at_10_sample": st["recall_at_10"],
                      "bytes_per_vector": st["bytes_per_vector"], "params": st["params"]}), flush=True)
    batches = [xq[i:i + 100] for i in range(0, len(xq), 100)]
    best, results, plugin_ms = float("inf"), None, 0.0
    for _ in range(3):
        out = [None] * len(batches)
        took = [0.0] * len(batches)

        def work(k):
            for b in range(k, len(batches), threads):
                r = post("query.batch", {"collection": "glove", "vectors": batches[b].tolist(),
                                         "k": 10, "with_text": False})
                out[b] = [[int(h["id"]) for h in res["hits"]] for res in r["results"]]
                took[b] = r["took_ms"]

        t = time.perf_counter()
        ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        [th.start() for th in ts]
        [th.join() for th in ts]
        if time.perf_counter() - t < best:
            best, plugin_ms = time.perf_counter() - t, sum(took)
        results = [q for b in out for q in b]
    found = sum(len(set(a) & set(b)) for a, b in zip(results, truth.tolist()))
    print(json.dumps({"impl": "bkg-http", "what": "search", "ef_search": ef,
                      "recall_at_10": round(found / (10 * len(xq)), 4),
                      "qps": round(len(xq) / best), "threads": threads,
                      "wall_ms": round(best * 1000), "plugin_ms_summed": round(plugin_ms)}), flush=True)

elif mode == "memory":
    n = int(sys.argv[4])
    files = sorted(glob.glob("/usr/share/common-licenses/*")) + sorted(glob.glob("/usr/share/doc/*/copyright"))
    seen, paras = set(), []
    for f in files:
        try:
            text = open(f, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        for p in text.split("\n\n"):
            p = " ".join(p.split())
            if 20 <= len(p.split(" ")) <= 60 and p not in seen:
                seen.add(p)
                paras.append(p)
    paras = paras[:n]
    post("collection.create", {"name": "mini", "model": "all-MiniLM-L6-v2"})
    t = time.perf_counter()
    for i in range(0, len(paras), 100):
        post("index", {"collection": "mini",
                       "documents": [{"id": f"p{j}", "text": paras[j]} for j in range(i, min(i + 100, len(paras)))]})
    print(f"embedded and indexed {len(paras)} paragraphs in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    for q in ["none", "int8"]:
        st = train("mini", quantization=q, force=True, sample=300)
        s = post("stats", {"collection": "mini"})["collections"][0]
        print(json.dumps({"impl": "bkg", "what": "memory", "dim": 384, "vectors": st["vectors"],
                          "quantization": q, "bytes_per_vector": round(st["bytes_per_vector"], 1),
                          "index_bytes_per_vector": round(st["index_bytes"] / st["vectors"], 1),
                          "recall_at_10": st["recall_at_10"], "ef_search": st["params"]["ef_search"],
                          "bytes_in_memory_per_vector": round(s["bytes_in_memory"] / st["vectors"], 1)}),
              flush=True)
