"""faiss-cpu IndexHNSWFlat on the same GloVe 6B 50-d split as plugins/brainml/examples/ann_bench.rs
(every 400th row a query, the rest the base, rows normalised, inner product). One JSON line per
ef_search, like the Rust side. Run by scripts/bench-brainml-ann.sh."""
import json, os, sys, time

import faiss
import numpy as np

path, threads, m, efc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
x = np.ascontiguousarray(np.load(path).astype(np.float32))
x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
q_mask = np.arange(len(x)) % 400 == 0
base, queries = np.ascontiguousarray(x[~q_mask]), np.ascontiguousarray(x[q_mask])
faiss.omp_set_num_threads(threads)
flat = faiss.IndexFlatIP(base.shape[1])
flat.add(base)
_, truth = flat.search(queries, 10)
saved = sys.argv[5] if len(sys.argv) > 5 else None  # reuse an index (search-only runs)
if saved and os.path.exists(saved):
    index, build_s = faiss.read_index(saved), float("nan")
else:
    index = faiss.IndexHNSWFlat(base.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = efc
    t, c = time.perf_counter(), time.process_time()
    index.add(base)
    build_s = time.perf_counter() - t
    print(f"build: {build_s:.1f} s wall, {time.process_time() - c:.1f} s cpu", file=sys.stderr)
    if saved:
        faiss.write_index(index, saved)
size = len(faiss.serialize_index(index))
print(json.dumps({"impl": "faiss", "what": "build", "n": len(base), "dim": base.shape[1], "m": m,
                  "ef_construction": efc, "threads": threads, "build_s": round(build_s, 2),
                  "bytes_per_vector": round(size / len(base), 1),
                  "faiss": faiss.__version__}), flush=True)
for ef in [10, 16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256]:
    index.hnsw.efSearch = ef
    best, cpu = float("inf"), 0.0
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        _, got = index.search(queries, 10)
        best = min(best, time.perf_counter() - t)
        cpu += time.process_time() - c
    found = sum(len(set(a) & set(b)) for a, b in zip(got.tolist(), truth.tolist()))
    print(json.dumps({"impl": "faiss", "what": "search", "ef_search": ef,
                      "recall_at_10": round(found / (10 * len(queries)), 4),
                      "qps": round(len(queries) / best),
                      "qps_per_cpu_s": round(3 * len(queries) / max(cpu, 0.01))}), flush=True)
