"""Benchmark: a CNN trunk pretrained self-supervised on unlabelled images, then fine-tuned on a few
labelled galaxies, against the same CNN learnt from scratch on them.

Why: the machine in the loop first trains on the 100–1,000 galaxies that humans have retired, and
all a project's images exist before its first vote (``ml.pretrain``, the machine's
``pretrain_epochs``). GZ1 smooth (class 0) vs featured (1–3), the held-out test split of
``bench/cnn_gz1.py``. The trunk is pretrained once (SimCLR, ``GalaxyClassifier.pretrain``) on the
images of every galaxy outside the test split, without labels; then, for each training size and
seed, a seeded random sample of the training split with its GZ1 labels is learnt from scratch
(``fit``) and from the pretrained trunk (``partial_fit``), at the loop's settings (48 px, 15 epochs,
at least 200 steps), no calibration. Reports test accuracy, and the share of test galaxies the CNN is
sure of (top probability >= each threshold) with their accuracy: what machine retirement acts on.

    .venv/bin/python bench/cnn_pretraining.py
    .venv/bin/python bench/cnn_pretraining.py --sizes 200 1000 --seeds 0 --pretrain-epochs 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/cnn_gz1.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cnn_gz1 import gz1_binary, stratified_split  # noqa: E402

from ml import GalaxyClassifier, load_images, metrics  # noqa: E402

HEADS = [("smooth_or_featured", 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400, 1000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--min-steps", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.93, 0.97])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default=str(ROOT / "var" / "cache" / "ml"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cnn_pretraining.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    paths, y = gz1_binary()
    images = load_images(paths, args.image_size, cache_dir=args.cache_dir)
    train_pool, _, test = stratified_split(y, (0.1, 0.2), 0)
    unlabelled = np.setdiff1d(np.arange(len(y)), test)  # every galaxy but the test split's, labels unused
    trunk = GalaxyClassifier(heads=HEADS, image_size=args.image_size, seed=0)
    pretraining = trunk.pretrain(images[unlabelled], epochs=args.pretrain_epochs,
                                 log=lambda row: print(json.dumps(row), flush=True))
    blob = trunk.to_bytes()
    rows = []
    for seed in args.seeds:
        for size in args.sizes:
            pick = np.sort(np.random.default_rng(seed).choice(train_pool, size, replace=False))
            for start in ("scratch", "pretrained"):
                t0 = time.perf_counter()
                if start == "scratch":
                    clf = GalaxyClassifier(heads=HEADS, image_size=args.image_size, seed=seed)
                    clf.fit(images[pick], y[pick], epochs=args.epochs, seed=seed, min_steps=args.min_steps)
                else:
                    clf = GalaxyClassifier.from_bytes(blob)
                    clf.partial_fit(images[pick], y[pick], epochs=args.epochs, seed=seed, min_steps=args.min_steps)
                probs = clf.predict_proba(images[test], tta=False)["smooth_or_featured"]
                row = {"seed": seed, "n_train": size, "start": start, "accuracy": metrics.accuracy(probs, y[test]),
                       "ece": metrics.ece(probs, y[test]), "train_seconds": round(time.perf_counter() - t0, 1)}
                for threshold in args.thresholds:
                    sure = probs.max(axis=1) >= threshold
                    row[f"sure_share_{threshold}"] = float(sure.mean())
                    row[f"sure_accuracy_{threshold}"] = metrics.accuracy(probs[sure], y[test][sure]) if sure.any() else None
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = []
    for size in args.sizes:
        for start in ("scratch", "pretrained"):
            mine = [r for r in rows if r["n_train"] == size and r["start"] == start]
            entry = {"n_train": size, "start": start}
            for key in mine[0]:
                if key.startswith(("accuracy", "ece", "sure_")):
                    values = [r[key] for r in mine if r[key] is not None]
                    entry[key] = float(np.mean(values)) if values else None
            summary.append(entry)
    out = {
        "command": "python bench/cnn_pretraining.py " + " ".join(sys.argv[1:]),
        "machine": f"shared 2-core CPU, torch {torch.__version__}, {args.threads} threads, {platform.machine()}",
        "n_test": int(len(test)), "n_unlabelled": int(len(unlabelled)), "always_smooth_accuracy": float(np.mean(y[test] == 0)),
        "pretraining": {"seconds": round(pretraining["train_seconds"], 1), "chance_loss": pretraining["chance_loss"],
                        "loss": [round(r["loss"], 4) for r in pretraining["epochs"]]},
        "args": vars(args), "runs": rows, "mean_over_seeds": summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    t = args.thresholds
    print(f"\n{len(test)} test galaxies; always 'smooth': {out['always_smooth_accuracy']:.3f}; pretraining {pretraining['train_seconds']:.0f} s")
    print("| training galaxies | start | accuracy | ECE | " + " | ".join(f"share >= {x} (accuracy)" for x in t) + " |")
    print("|---:|---|---:|---:|" + "---:|" * len(t))
    for s in summary:
        sure = " | ".join(f"{s[f'sure_share_{x}']:.2f} ({s[f'sure_accuracy_{x}']:.3f})" for x in t)
        print(f"| {s['n_train']} | {s['start']} | {s['accuracy']:.3f} | {s['ece']:.3f} | {sure} |")


if __name__ == "__main__":
    main()
