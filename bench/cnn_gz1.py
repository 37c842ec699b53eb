"""Benchmark: the CNN alone on Galaxy Zoo 1, smooth (class 0) vs featured (classes 1, 2, 3).

Classes 4 (don't know) and 5 (merger) are dropped. A stratified, seeded split holds out 20% for
test and 10% for validation; the model trains on the rest with D4 + affine augmentation and is
evaluated with and without 8-fold D4 test-time averaging. Reports accuracy, balanced accuracy
(the classes are imbalanced, about 5:2), ECE with a reliability table, the confusion matrix and
the training time. Writes bench/results/cnn_gz1.json and .md.

    .venv/bin/python bench/cnn_gz1.py --epochs 30
    .venv/bin/python bench/cnn_gz1.py --epochs 20 --channels 32,64,128,256 --ensemble 3 --out ...

``--pretrain-epochs N`` first pretrains the trunk self-supervised (SimCLR, ``ml.pretrain``, as the
machine does before its first version) on the training and validation images, labels unused, and
fine-tunes every member from it (``partial_fit``); the test split is never seen before testing.

``--ensemble K`` trains K copies with seeds ``seed .. seed+K-1`` (different initial weights,
shuffling, augmentation and dropout) and averages their probabilities (a deep ensemble,
Lakshminarayanan et al. 2017); each member's own test accuracy is reported too.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

# On a shared CPU, OpenMP threads that spin while waiting for a descheduled sibling made
# training 3x slower; passive waiting must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml import GalaxyClassifier, load_images, metrics  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "galaxies" / "gz1"
if not DATA.exists():
    DATA = Path("/work/shared/data/galaxies/gz1")


def gz1_binary() -> tuple[list[str], np.ndarray]:
    """Image paths and labels (0 smooth, 1 featured), classes 4 and 5 dropped."""
    paths, labels = [], []
    with open(DATA / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            cls = int(row["CLASS"])
            if cls in (4, 5):
                continue
            paths.append(str(DATA / "images" / f"{row['OBJID'].strip()}.jpeg"))
            labels.append(0 if cls == 0 else 1)
    return paths, np.array(labels)


def stratified_split(y: np.ndarray, fractions: tuple[float, float], seed: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test) with the class mix of ``y`` in each part."""
    rng = np.random.default_rng(seed)
    tr, va, te = [], [], []
    for c in np.unique(y):
        idx = rng.permutation(np.nonzero(y == c)[0])
        n_te, n_va = round(fractions[1] * len(idx)), round(fractions[0] * len(idx))
        te.append(idx[:n_te])
        va.append(idx[n_te : n_te + n_va])
        tr.append(idx[n_te + n_va :])
    return tuple(np.sort(np.concatenate(p)) for p in (tr, va, te))


def evaluate(probs: np.ndarray, y: np.ndarray) -> dict:
    return {
        "accuracy": metrics.accuracy(probs, y),
        "balanced_accuracy": metrics.balanced_accuracy(probs, y),
        "ece": metrics.ece(probs, y, n_bins=10),
        "confusion": metrics.confusion(probs, y).tolist(),
        "reliability": metrics.reliability_table(probs, y, n_bins=10),
    }


def write_markdown(results: dict, path: Path) -> None:
    """A short human-readable summary with the reliability table of the TTA predictions."""
    t = results["test_tta"]
    lines = [
        "# CNN alone on GZ1: smooth vs featured",
        "",
        f"`{results['command']}` — {results['machine']}",
        "",
        f"{results['n']['train']} train / {results['n']['val']} val / {results['n']['test']} test "
        f"galaxies ({results['n']['test_smooth']} smooth, {results['n']['test_featured']} "
        f"featured in test); {results['image_size']}×{results['image_size']} px from the central "
        f"{results['crop_fraction']:.0%} of each cut-out; {results['epochs']} epochs; "
        f"{results['n_parameters']:,} parameters (channels {results['channels']}); "
        f"{results['ensemble']} model(s) averaged (members' own TTA accuracy: "
        f"{', '.join(f'{a:.4f}' for a in results['member_tta_accuracy'])}); "
        f"training {results['train_seconds']:.0f} s in all"
        + (f", after {results['pretrain_epochs']} epochs of self-supervised pretraining of the trunk on the "
           f"train and validation images ({results['pretrain_seconds']:.0f} s)." if results.get("pretrain_epochs") else "."),
        "",
        "| predictions | accuracy | balanced accuracy | ECE |",
        "|---|---:|---:|---:|",
    ]
    for key, name in (("test_tta", "D4 TTA (8 views)"), ("test_no_tta", "single view"),
                      ("test_mc_dropout_mean", "MC dropout mean (30) + TTA")):
        r = results[key]
        lines.append(f"| {name} | {r['accuracy']:.4f} | {r['balanced_accuracy']:.4f} "
                     f"| {r['ece']:.4f} |")
    b = results["baseline_always_smooth"]
    lines += [
        f"| always 'smooth' | {b['accuracy']:.4f} | {b['balanced_accuracy']:.4f} | |",
        "",
        f"Confusion (rows true smooth/featured, columns predicted): {t['confusion']}",
        "",
        "Reliability (TTA):",
        "",
        "| confidence bin | count | mean confidence | accuracy |",
        "|---|---:|---:|---:|",
    ]
    for row in t["reliability"]:
        lines.append(f"| {row['lo']:.1f}–{row['hi']:.1f} | {row['count']} "
                     f"| {row['confidence']:.3f} | {row['accuracy']:.3f} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--crop", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--channels", default="24,48,96,192", help="convolution widths of the four blocks")
    ap.add_argument("--ensemble", type=int, default=1, help="models averaged (seeds seed, seed+1, ...)")
    ap.add_argument("--pretrain-epochs", type=int, default=0,
                    help="SimCLR epochs on the train and validation images before fine-tuning (0: from scratch)")
    ap.add_argument("--val-every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default=str(ROOT / "var" / "cache" / "ml"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cnn_gz1.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    paths, y = gz1_binary()
    t0 = time.perf_counter()
    images = load_images(paths, args.image_size, args.crop, args.cache_dir)
    load_s = time.perf_counter() - t0
    tr, va, te = stratified_split(y, (0.1, 0.2), args.seed)
    print(f"{len(y)} galaxies ({np.sum(y == 0)} smooth, {np.sum(y == 1)} featured); "
          f"train {len(tr)}, val {len(va)}, test {len(te)}; images loaded in {load_s:.1f}s",
          flush=True)

    channels = tuple(int(c) for c in args.channels.split(","))

    def log(row: dict) -> None:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
              flush=True)

    def new_classifier(seed: int) -> GalaxyClassifier:
        return GalaxyClassifier(heads=[("smooth_or_featured", 2)], image_size=args.image_size,
                                crop_fraction=args.crop, channels=channels, seed=seed)

    pretrained, pretrain_s = None, 0.0
    if args.pretrain_epochs:
        trunk = new_classifier(args.seed)
        pretrain_s = trunk.pretrain(images[np.concatenate([tr, va])], epochs=args.pretrain_epochs, log=log)["train_seconds"]
        pretrained = trunk.to_bytes()
    members, tta_s, train_s, history = [], 0.0, 0.0, []
    for member in range(args.ensemble):
        train_args = {"validation": (images[va], y[va]), "lr": args.lr, "val_every": args.val_every,
                      "seed": args.seed + member, "log": log}
        if pretrained is None:
            clf = new_classifier(args.seed + member)
            fit = clf.fit(images[tr], y[tr], epochs=args.epochs, **train_args)
        else:
            clf = GalaxyClassifier.from_bytes(pretrained)
            fit = clf.partial_fit(images[tr], y[tr], epochs=args.epochs, **train_args)
        train_s += fit["train_seconds"]
        history.append(fit["epochs"])
        t1 = time.perf_counter()
        p_tta = clf.predict_proba(images[te], tta=True)["smooth_or_featured"]
        tta_s += time.perf_counter() - t1
        members.append({
            "tta": p_tta, "one": clf.predict_proba(images[te], tta=False)["smooth_or_featured"],
            "mc": clf.mc_predict(images[te], n_samples=30)["smooth_or_featured"].mean(0),
        })
        print(f"member {member}: TTA accuracy {metrics.accuracy(p_tta, y[te]):.4f}", flush=True)
    p_tta = np.mean([m["tta"] for m in members], axis=0)
    p_one = np.mean([m["one"] for m in members], axis=0)
    mc_mean = np.mean([m["mc"] for m in members], axis=0)
    majority = np.tile([1.0, 0.0], (len(te), 1))  # always "smooth"
    results = {
        "task": "GZ1 smooth (0) vs featured (1, 2, 3); classes 4, 5 dropped",
        "command": "python bench/cnn_gz1.py " + " ".join(sys.argv[1:]),
        "machine": f"shared 2-core CPU, torch {torch.__version__}, {args.threads} threads, "
                   f"{platform.machine()}",
        "n": {"train": int(len(tr)), "val": int(len(va)), "test": int(len(te)),
              "test_smooth": int(np.sum(y[te] == 0)), "test_featured": int(np.sum(y[te] == 1))},
        "image_size": args.image_size,
        "crop_fraction": args.crop,
        "epochs": args.epochs,
        "lr": args.lr,
        "seed": args.seed,
        "channels": list(channels),
        "ensemble": args.ensemble,
        "member_tta_accuracy": [metrics.accuracy(m["tta"], y[te]) for m in members],
        "n_parameters": sum(p.numel() for p in clf.model.parameters()),
        "image_load_seconds": load_s,
        "pretrain_epochs": args.pretrain_epochs,
        "pretrain_seconds": pretrain_s,
        "train_seconds": train_s,
        "tta_predict_seconds_per_1000": 1000 * tta_s / len(te),
        "history": history[0] if len(history) == 1 else history,
        "test_tta": evaluate(p_tta, y[te]),
        "test_no_tta": evaluate(p_one, y[te]),
        "test_mc_dropout_mean": evaluate(mc_mean, y[te]),
        "baseline_always_smooth": {"accuracy": metrics.accuracy(majority, y[te]),
                                   "balanced_accuracy": metrics.balanced_accuracy(majority, y[te])},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    write_markdown(results, Path(args.out).with_suffix(".md"))
    for name in ("test_tta", "test_no_tta", "test_mc_dropout_mean"):
        r = results[name]
        print(f"{name}: accuracy {r['accuracy']:.4f}  balanced {r['balanced_accuracy']:.4f}  "
              f"ECE {r['ece']:.4f}  confusion {r['confusion']}")
    print(f"training {train_s:.0f}s for {args.ensemble} x {args.epochs} epochs; wrote {args.out}")


if __name__ == "__main__":
    main()
