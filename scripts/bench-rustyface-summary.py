"""Summary of scripts/bench-rustyface.sh's JSON results (stdlib only): markdown tables of
detection, descriptor, pipeline, memory, separation, agreement and HTTP overhead, and whether
issue 13's targets are met. Usage: bench-rustyface-summary.py WORK_DIR"""

import json
import math
import os
import statistics
import sys

work = sys.argv[1]


def load(name):
    p = os.path.join(work, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


rust2, rust1 = load("rustyface-2.json"), load("rustyface-1.json")
fa_wasm, fa_cpu = load("faceapi-wasm.json"), load("faceapi-cpu.json")
dl = load("dlib.json")
http = load("http.json")
rss = load("rss.json") or {}


def pooled(tool, key, photos=None):
    out = []
    for p in (tool or {}).get("photos", []):
        if photos is None or p["name"] in photos:
            out += p.get(key, [])
    return out


def chip_times(tool):
    out = []
    for c in (tool or {}).get("chips", []):
        out += c["descriptor_ms"]
    return out


def p50(v):
    return statistics.median(v) if v else float("nan")


def mean(v):
    return statistics.fmean(v) if v else float("nan")


def fmt(x):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def row(*cells):
    print("| " + " | ".join(str(c) for c in cells) + " |")


def faces(tool, key="faces"):
    return int(sum(p.get(key, 0) for p in (tool or {}).get("photos", [])))


names = [p["name"] for p in (rust2 or {}).get("photos", [])]
cnn_names = [p["name"] for p in (dl or {}).get("photos", []) if "cnn_ms" in p]
print(f"Photos ({len(names)}): {', '.join(names)}")
if fa_cpu:
    print(f"face-api tfjs-cpu timed on: {', '.join(p['name'] for p in fa_cpu['photos'])} and "
          f"{len(fa_cpu['chips'])} chips, {fa_cpu['runs']} run each (its faces-found counts are "
          f"for those)")
if dl and len(cnn_names) != len(names):
    print(f"dlib CNN timed on: {', '.join(cnn_names)}")

t_r2 = rust2 and rust2["threads"]
print("\n### Detection, ms per photo (decoded image in; all photos, every timed run)\n")
row("tool", "detector", "threads", "faces found", "p50", "mean", "min")
row(*["---"] * 7)
det = {}
for label, tool, key, fkey, thr in [
    ("rustyface", rust2, "detect_ms", "faces", t_r2),
    ("rustyface", rust1, "detect_ms", "faces", 1),
    ("rustyface", rust2, "tiny_ms", "tiny_faces", t_r2),
    ("rustyface", rust1, "tiny_ms", "tiny_faces", 1),
    ("face-api tfjs-wasm", fa_wasm, "detect_ms", "faces", fa_wasm and fa_wasm["threads"]),
    ("face-api tfjs-wasm", fa_wasm, "tiny_ms", "tiny_faces", fa_wasm and fa_wasm["threads"]),
    ("face-api tfjs-cpu", fa_cpu, "detect_ms", "faces", 1),
    ("face-api tfjs-cpu", fa_cpu, "tiny_ms", "tiny_faces", 1),
    ("dlib", dl, "hog_ms", "hog_faces", 1),
    ("dlib", dl, "cnn_ms", "cnn_faces", 1),
]:
    if not tool:
        continue
    v = pooled(tool, key)
    detector = {"detect_ms": "SSD MobileNetV1", "tiny_ms": "Tiny (416)", "hog_ms": "HOG",
                "cnn_ms": "CNN (mmod)"}[key]
    if key in ("hog_ms", "cnn_ms"):
        up = dl["hog_upsample"] if key == "hog_ms" else dl["cnn_upsample"]
        detector += f", upsample {up}"
    det[(label, key, thr)] = (p50(v), mean(v), min(v) if v else float("nan"))
    row(label, detector, thr, faces(tool, fkey), fmt(p50(v)), fmt(mean(v)), fmt(min(v)) if v else "-")

print("\n### Descriptor, ms per face (the same aligned 150x150 chips, cut by rustyface)\n")
row("tool", "threads", "faces", "p50", "mean", "min")
row(*["---"] * 6)
desc = {}
for label, v, thr in [
    ("rustyface", pooled(rust2, "descriptor_ms"), t_r2),
    ("rustyface", pooled(rust1, "descriptor_ms"), 1),
    ("face-api tfjs-wasm", chip_times(fa_wasm), fa_wasm and fa_wasm["threads"]),
    ("face-api tfjs-cpu", chip_times(fa_cpu), 1),
    ("dlib compute_face_descriptor", chip_times(dl), 1),
    ("dlib face_encodings (own 5 landmarks + chip), HOG faces", pooled(dl, "encode_ms"), 1),
]:
    if v:
        n = len((rust2 or {}).get("photos", [])) and sum(len(p["descriptors"]) for p in rust2["photos"])
        if label.startswith("dlib face_encodings"):
            n = faces(dl, "hog_faces")
        desc[(label, thr)] = (p50(v), mean(v), min(v))
        row(label, thr, n, fmt(p50(v)), fmt(mean(v)), fmt(min(v)))
print("\nrustyface's stages per face, for reference (threads %s): landmarks p50 %s ms, chip "
      "p50 %s ms." % (t_r2, fmt(p50(pooled(rust2, "landmarks_ms"))), fmt(p50(pooled(rust2, "chip_ms")))))

print("\n### Whole pipeline, ms per photo (detect + landmarks + chip + descriptor of every face)\n")
row("tool", "threads", "faces described", "p50", "mean", "min")
row(*["---"] * 6)
pipe = {}
for label, tool, key, fkey, thr in [
    ("rustyface (SSD, aligned chip)", rust2, "pipeline_ms", "faces", t_r2),
    ("rustyface (SSD, aligned chip)", rust1, "pipeline_ms", "faces", 1),
    ("face-api tfjs-wasm (SSD, box crop)", fa_wasm, "pipeline_ms", "pipeline_faces", fa_wasm and fa_wasm["threads"]),
    ("face-api tfjs-cpu (SSD, box crop)", fa_cpu, "pipeline_ms", "pipeline_faces", 1),
    ("dlib HOG + face_encodings", dl, "hog_pipeline_ms", "hog_faces", 1),
    ("dlib CNN + face_encodings", dl, "cnn_pipeline_ms", "cnn_faces", 1),
]:
    if not tool:
        continue
    v = pooled(tool, key)
    pipe[(label, thr)] = (p50(v), mean(v), min(v) if v else float("nan"))
    row(label, thr, faces(tool, fkey), fmt(p50(v)), fmt(mean(v)), fmt(min(v)) if v else "-")
if rust2:
    print("\nrustyface's JPEG decode (not in the figures above) p50 %s ms per photo; `face.embed` "
          "called in process as the host calls it (raw JPEG body: decode + pipeline + answer as "
          "JSON value) p50 %s ms." % (fmt(p50(pooled(rust2, "decode_ms"))),
                                      fmt(p50(pooled(rust2, "invoke_ms")))))
if dl and "cnn_pipeline_ms" in (dl["photos"][0] if dl["photos"] else {}):
    same = [p for p in dl["photos"] if "cnn_pipeline_ms" in p]
    r = {p["name"]: p for p in rust2["photos"]} if rust2 else {}
    ratio = [mean(p["cnn_pipeline_ms"]) / mean(r[p["name"]]["pipeline_ms"]) for p in same
             if p["name"] in r]
    if ratio:
        print(f"\nPer photo, dlib CNN pipeline / rustyface pipeline ({t_r2} threads): "
              f"{min(ratio):.0f}x to {max(ratio):.0f}x.")

if http:
    print("\n### HTTP overhead (`POST /api/plugins/rustyface/face.embed`, raw JPEG body, release host)\n")
    row("photo", "client ms p50", "plugin took_ms p50", "in-process face.embed p50", "HTTP + ABI + JSON bytes")
    row(*["---"] * 5)
    r = {p["name"]: p for p in rust2["photos"]} if rust2 else {}
    for p in http["photos"]:
        inproc = p50(r.get(p["name"], {}).get("invoke_ms", []))
        row(p["name"], fmt(p50(p["client_ms"])), fmt(p50(p["took_ms"])), fmt(inproc),
            fmt(p50(p["client_ms"]) - p50(p["took_ms"])))

print("\n### Peak memory (each tool in its own process)\n")
row("process", "peak RSS (MiB)", "from")
row(*["---"] * 3)
for label, tool, key in [
    (f"rustyface bench ({t_r2} threads)", rust2, "rustyface-2"),
    ("rustyface bench (1 thread)", rust1, "rustyface-1"),
    ("face-api tfjs-wasm (node)", fa_wasm, "faceapi-wasm"),
    ("face-api tfjs-cpu (node)", fa_cpu, "faceapi-cpu"),
    ("dlib (python, HOG + CNN)", dl, "dlib"),
    ("bkg host with rustyface, after the HTTP run", None, "host"),
]:
    kib = rss.get(key) or (tool or {}).get("peak_rss_kib")
    if kib:
        how = "VmHWM" if key == "host" else "/usr/bin/time -v" if rss.get(key) else "getrusage"
        row(label, f"{kib / 1024:.0f}", how)

print("\n### Separation on the face_recognition portraits (Euclidean distance)\n")


def sep(descs):
    persons = {n: ("obama" if n.startswith("obama") else "biden") for n in descs}
    same, diff = [], []
    ks = sorted(descs)
    for i, a in enumerate(ks):
        for b in ks[i + 1:]:
            d = math.dist(descs[a], descs[b])
            (same if persons[a] == persons[b] else diff).append(d)
    return same, diff


portraits = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]
row("tool", "max same person", "min different persons", "margin")
row(*["---"] * 4)
margins = {}
for label, tool, key in [
    ("rustyface (SSD, chip aligned on 5 landmarks)", rust2, "descriptors"),
    ("face-api tfjs-wasm (SSD, box crop)", fa_wasm, "descriptors"),
    ("dlib HOG + face_encodings", dl, "hog_descriptors"),
    ("dlib CNN + face_encodings", dl, "cnn_descriptors"),
]:
    if not tool:
        continue
    descs = {p["name"]: p[key][0] for p in tool["photos"]
             if p["name"] in portraits and p.get(key)}
    if len(descs) < 4:
        row(label, "-", "-", f"faces missing in {sorted(set(portraits) - set(descs))}")
        continue
    same, diff = sep(descs)
    margins[label] = min(diff) - max(same)
    row(label, f"{max(same):.4f}", f"{min(diff):.4f}", f"{min(diff) - max(same):.4f}")

if dl and dl.get("chips"):
    descs = {c["chip"].rsplit("-", 1)[0] + ".jpg": c["descriptor"] for c in dl["chips"]
             if c["chip"].endswith("-0.rgb")}
    descs = {n: d for n, d in descs.items() if n in portraits}
    if len(descs) == 4:
        same, diff = sep(descs)
        row("dlib's ResNet on rustyface's chips", f"{max(same):.4f}", f"{min(diff):.4f}",
            f"{min(diff) - max(same):.4f}")

if rust2 and (fa_wasm or dl):
    print("\n### Same chips, same work: distance between the tools' descriptors of each chip\n")
    ours = {}
    for p in rust2["photos"]:
        stem = p["name"].rsplit(".", 1)[0]
        for i, d in enumerate(p["descriptors"]):
            ours[f"{stem}-{i}.rgb"] = d
    for label, tool in [("face-api tfjs-wasm", fa_wasm), ("face-api tfjs-cpu", fa_cpu),
                        ("dlib", dl)]:
        if tool and tool.get("chips"):
            ds = [math.dist(ours[c["chip"]], c["descriptor"]) for c in tool["chips"]
                  if c["chip"] in ours]
            print(f"- rustyface vs {label}: max {max(ds):.2e}, mean {mean(ds):.2e} over {len(ds)} chips")

print("\n### Targets\n")


def ratio(a, b):
    return b / a if a and b else float("nan")


if rust2 and fa_wasm:
    fw = fa_wasm["threads"]
    for what, ours_, theirs in [
        ("detection (SSD)", det.get(("rustyface", "detect_ms", t_r2)), det.get(("face-api tfjs-wasm", "detect_ms", fw))),
        ("descriptor", desc.get(("rustyface", t_r2)), desc.get(("face-api tfjs-wasm", fw))),
        ("pipeline", pipe.get(("rustyface (SSD, aligned chip)", t_r2)), pipe.get(("face-api tfjs-wasm (SSD, box crop)", fw))),
    ]:
        if ours_ and theirs:
            r = ratio(ours_[1], theirs[1])
            print(f"- >= 2x face-api (wasm, {fw} thread) on {what}, {t_r2} threads: {r:.2f}x by mean "
                  f"({ratio(ours_[2], theirs[2]):.2f}x best run to best run): "
                  f"{'met' if r >= 2 else 'NOT met'}")
    for what, ours_, theirs in [
        ("detection (SSD)", det.get(("rustyface", "detect_ms", 1)), det.get(("face-api tfjs-wasm", "detect_ms", fw))),
        ("descriptor", desc.get(("rustyface", 1)), desc.get(("face-api tfjs-wasm", fw))),
        ("pipeline", pipe.get(("rustyface (SSD, aligned chip)", 1)), pipe.get(("face-api tfjs-wasm (SSD, box crop)", fw))),
    ]:
        if ours_ and theirs:
            r = ratio(ours_[1], theirs[1])
            print(f"- the same, both on 1 thread, {what}: {r:.2f}x by mean "
                  f"({ratio(ours_[2], theirs[2]):.2f}x best run to best run): "
                  f"{'met' if r >= 2 else 'NOT met'}")
if rust2 and dl:
    ours_ = pipe.get(("rustyface (SSD, aligned chip)", t_r2))
    theirs = pipe.get(("dlib CNN + face_encodings", 1))
    if ours_ and theirs:
        print(f"- faster than dlib's CNN pipeline: {ratio(ours_[1], theirs[1]):.0f}x by mean: "
              f"{'met' if ours_[1] < theirs[1] else 'NOT met'}")
    ours_m = margins.get("rustyface (SSD, aligned chip)")
    theirs_m = margins.get("dlib CNN + face_encodings")
    if ours_m is not None and theirs_m is not None:
        print(f"- separation equal or better than dlib CNN's: margin {ours_m:.4f} vs {theirs_m:.4f}: "
              f"{'met' if ours_m >= theirs_m else 'NOT met'}")
if rust2:
    d = desc.get(("rustyface", t_r2))
    if d:
        print(f"- descriptor <= 40 ms per face on {t_r2} threads: mean {d[1]:.1f} ms, p50 {d[0]:.1f} ms: "
              f"{'met' if d[1] <= 40 else 'NOT met'}")
