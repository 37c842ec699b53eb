"""Benchmark: how well the CNN learns from the few subjects an online model first trains on, with a
fixed number of epochs and with a floor on optimiser steps (``min_steps``).

The machine in the loop trains its first versions on 100–1,000 human-retired galaxies. With a fixed
15 epochs at batch 64, 100 galaxies give 30 optimiser steps; this measures what that costs. GZ1
smooth (class 0) vs featured (1–3), the held-out test split of ``bench/cnn_gz1.py`` (the same
seeded stratified split); for each training size a seeded random sample of the training split with
its GZ1 labels, trained from scratch at the loop's settings (48 px, 15 epochs), no calibration.

    .venv/bin/python bench/cnn_training_steps.py
    .venv/bin/python bench/cnn_training_steps.py --sizes 100 400 --min-steps 0 300 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/cnn_gz1.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cnn_gz1 import gz1_binary, stratified_split  # noqa: E402

from ml import GalaxyClassifier, load_images, metrics  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400, 800])
    ap.add_argument("--min-steps", type=int, nargs="+", default=[0, 200, 400])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threshold", type=float, default=0.93, help="report the share of test galaxies above it and their accuracy")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default=str(ROOT / "var" / "cache" / "ml"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cnn_training_steps.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    paths, y = gz1_binary()
    images = load_images(paths, args.image_size, cache_dir=args.cache_dir)
    train_pool, _, test = stratified_split(y, (0.1, 0.2), 0)
    rows = []
    for seed in args.seeds:
        for size in args.sizes:
            pick = np.sort(np.random.default_rng(seed).choice(train_pool, size, replace=False))
            for min_steps in args.min_steps:
                clf = GalaxyClassifier(heads=[("smooth_or_featured", 2)], image_size=args.image_size, seed=seed)
                fit = clf.fit(images[pick], y[pick], epochs=args.epochs, batch_size=args.batch_size, seed=seed, min_steps=min_steps)
                probs = clf.predict_proba(images[test], tta=False)["smooth_or_featured"]
                sure = probs.max(axis=1) >= args.threshold
                row = {
                    "seed": seed, "n_train": size, "min_steps": min_steps, "epochs_run": len(fit["epochs"]),
                    "steps": len(fit["epochs"]) * -(-size // args.batch_size),
                    "accuracy": metrics.accuracy(probs, y[test]), "ece": metrics.ece(probs, y[test]),
                    "sure_share": float(sure.mean()),
                    "sure_accuracy": metrics.accuracy(probs[sure], y[test][sure]) if sure.any() else None,
                    "train_seconds": round(fit["train_seconds"], 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = []
    for size in args.sizes:
        for min_steps in args.min_steps:
            mine = [r for r in rows if r["n_train"] == size and r["min_steps"] == min_steps]
            summary.append({"n_train": size, "min_steps": min_steps, "steps": mine[0]["steps"],
                            "accuracy": float(np.mean([r["accuracy"] for r in mine])),
                            "sure_share": float(np.mean([r["sure_share"] for r in mine])),
                            "train_seconds": float(np.mean([r["train_seconds"] for r in mine]))})
    out = {
        "command": "python bench/cnn_training_steps.py " + " ".join(sys.argv[1:]),
        "machine": f"shared 2-core CPU, torch {torch.__version__}, {args.threads} threads, {platform.machine()}",
        "n_test": int(len(test)), "always_smooth_accuracy": float(np.mean(y[test] == 0)),
        "args": vars(args), "runs": rows, "mean_over_seeds": summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\n{len(test)} test galaxies; always 'smooth': {out['always_smooth_accuracy']:.3f}")
    print("| training galaxies | min_steps | steps | accuracy | share >= threshold | train s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for s in summary:
        print(f"| {s['n_train']} | {s['min_steps']} | {s['steps']} | {s['accuracy']:.3f} | {s['sure_share']:.2f} | {s['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
