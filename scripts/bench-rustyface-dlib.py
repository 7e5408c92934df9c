"""dlib's side of scripts/bench-rustyface.sh (not run in CI): the `face_recognition` package
(dlib-bin's prebuilt dlib, face_recognition_models' weights), timing on the photos named:

  hog_ms / cnn_ms        face_locations(model="hog" | "cnn", number_of_times_to_upsample=U),
                         per photo (U: --hog-upsample, default 1 as face_recognition's own;
                         --cnn-upsample, default 0: with 1 the CNN takes ~19 s and 4 GiB for
                         one 626x1200 portrait on this machine);
  encode_ms              face_encodings(img, [box]) per face: dlib's own 5-point landmarks,
                         its 150x150 chip and the ResNet (num_jitters=1, model "small");
  descriptor_ms          the ResNet alone, compute_face_descriptor on each aligned 150x150 chip
                         that rustyface's bench wrote (--chips DIR, raw RGB; the same chip
                         geometry as dlib's get_face_chip(150, 0.25)), per face;
  hog_pipeline_ms /      face_locations + face_encodings of every face found, per photo.
  cnn_pipeline_ms
Image decoding (load_image_file) is outside every timing. Each photo/chip runs --warmup times
first (not recorded), then --runs times (the CNN's: --cnn-runs). --skip-cnn NAME... leaves photos out of the CNN timing
(said in the output). Prints one JSON object; peak RSS from getrusage (KiB).
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

import dlib
import face_recognition
from face_recognition import api


def timed(runs, warmup, f):
    out = []
    for r in range(warmup + runs):
        t = time.perf_counter()
        f()
        if r >= warmup:
            out.append((time.perf_counter() - t) * 1000.0)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--cnn-runs", type=int, default=2)
    ap.add_argument("--hog-upsample", type=int, default=1)
    ap.add_argument("--cnn-upsample", type=int, default=0)
    ap.add_argument("--chips")
    ap.add_argument("--skip-cnn", nargs="*", default=[])
    ap.add_argument("photos", nargs="+")
    a = ap.parse_args()
    if a.runs < 1 or a.cnn_runs < 1 or a.warmup < 0:
        sys.exit("--runs and --cnn-runs must be >= 1 and --warmup >= 0")

    photos = []
    for path in a.photos:
        name = os.path.basename(path)
        img = face_recognition.load_image_file(path)
        h, w = img.shape[:2]
        rec = {"name": name, "width": w, "height": h}
        for model in ("hog", "cnn"):
            if model == "cnn" and name in a.skip_cnn:
                rec["cnn_skipped"] = True
                continue
            up = a.cnn_upsample if model == "cnn" else a.hog_upsample
            runs = a.cnn_runs if model == "cnn" else a.runs
            locate = lambda: face_recognition.face_locations(img, up, model)  # noqa: E731
            boxes = locate()
            rec[f"{model}_faces"] = len(boxes)
            rec[f"{model}_boxes"] = [[l, t, r - l, b - t] for (t, r, b, l) in boxes]
            rec[f"{model}_ms"] = timed(runs, a.warmup, locate)
            rec[f"{model}_descriptors"] = [
                e.tolist() for e in face_recognition.face_encodings(img, boxes)
            ]
            rec[f"{model}_pipeline_ms"] = timed(
                runs,
                a.warmup,
                lambda: face_recognition.face_encodings(img, locate()),
            )
            if model == "hog":
                rec["encode_ms"] = []
                for box in boxes:
                    rec["encode_ms"] += timed(
                        a.runs, a.warmup, lambda: face_recognition.face_encodings(img, [box])
                    )
        photos.append(rec)

    chips = []
    if a.chips:
        for f in sorted(os.listdir(a.chips)):
            if not f.endswith(".rgb"):
                continue
            raw = open(os.path.join(a.chips, f), "rb").read()
            if len(raw) != 150 * 150 * 3:
                sys.exit(f"{f}: {len(raw)} bytes, not a 150x150 RGB chip")
            chip = np.frombuffer(raw, dtype=np.uint8).reshape(150, 150, 3).copy()
            d = np.array(api.face_encoder.compute_face_descriptor(chip))
            ms = timed(a.runs, a.warmup, lambda: api.face_encoder.compute_face_descriptor(chip))
            chips.append({"chip": f, "descriptor": d.tolist(), "descriptor_ms": ms})

    print(
        json.dumps(
            {
                "tool": "dlib (face_recognition)",
                "dlib": dlib.__version__,
                "face_recognition": face_recognition.__version__,
                "dlib_use_blas": getattr(dlib, "DLIB_USE_BLAS", None),
                "dlib_use_lapack": getattr(dlib, "DLIB_USE_LAPACK", None),
                "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
                "hog_upsample": a.hog_upsample,
                "cnn_upsample": a.cnn_upsample,
                "runs": a.runs,
                "cnn_runs": a.cnn_runs,
                "warmup": a.warmup,
                "photos": photos,
                "chips": chips,
                "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )


if __name__ == "__main__":
    main()
