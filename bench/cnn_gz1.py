"""Benchmark: the CNN alone on Galaxy Zoo 1, smooth (class 0) vs featured (classes 1, 2, 3), and for
the featured ones T1: edge-on (class 3), clockwise (1) or anticlockwise (2) spiral.

Classes 4 (don't know) and 5 (merger) are dropped. A stratified, seeded split holds out 20% for
test and 10% for validation; the model trains on the rest with D4 + affine augmentation and is
evaluated with and without 8-fold D4 test-time averaging. Reports accuracy, balanced accuracy
(the classes are imbalanced, about 5:2), ECE with a reliability table, the confusion matrix and
the training time. Writes bench/results/cnn_gz1.json and .md.

T1 is a second head (``T1_KEY``), labelled on the featured galaxies only (a NaN row elsewhere, which
the loss skips), with ``mirror_swaps`` ``[[1, 2]]``: a mirror image of a clockwise spiral is an
anticlockwise one, so mirrored training images get those targets swapped and mirrored views are
swapped back before the 8-view average (``ml.model``). Reported on the featured test galaxies: T1's
three-way accuracy, and the accuracy of clockwise against anticlockwise on the face-on spirals
(argmax of those two answers; chance is 50%, and a model invariant to mirroring, ``--no-swaps``,
cannot beat it). ``--t0-only`` trains the single smooth-or-featured head of the earlier runs (then
the split is stratified by that label, as theirs was; with T1 by GZ1 class).

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


T0_KEY, T1_KEY = "smooth_or_featured", "T1"
# GZ1 class -> T1 answer (edge-on, clockwise, anticlockwise), as bench/engine_tree.py reads them
T1_OF_CLASS = {3: 0, 1: 1, 2: 2}


def gz1_binary() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Image paths, labels (0 smooth, 1 featured) and GZ1 classes, classes 4 and 5 dropped."""
    paths, labels, classes = [], [], []
    with open(DATA / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            cls = int(row["CLASS"])
            if cls in (4, 5):
                continue
            paths.append(str(DATA / "images" / f"{row['OBJID'].strip()}.jpeg"))
            labels.append(0 if cls == 0 else 1)
            classes.append(cls)
    return paths, np.array(labels), np.array(classes)


def t1_labels(classes: np.ndarray) -> np.ndarray:
    """T1 answers (-1: not a disk, unlabelled)."""
    return np.array([T1_OF_CLASS.get(int(c), -1) for c in classes])


def evaluate_t1(probs: np.ndarray, t1: np.ndarray, mirrored: np.ndarray | None = None) -> dict:
    """T1 on the test disks: three-way accuracy and confusion; clockwise against anticlockwise on the
    face-on spirals (argmax of those two answers, chance 50%). With ``mirrored`` (the predictions for
    the mirror images of the same galaxies), also that accuracy over the spirals and their mirror
    images together, whose truth is the other way round: exactly 0.5 for a model invariant to
    mirroring, which gives a spiral and its mirror image the same answer."""
    disks = t1 >= 0
    spirals = (t1 == 1) | (t1 == 2)
    winding = np.where(probs[spirals, 1] >= probs[spirals, 2], 1, 2)
    both = None
    if mirrored is not None and spirals.any():
        mirror_winding = np.where(mirrored[spirals, 1] >= mirrored[spirals, 2], 1, 2)  # a mirror image's own answers
        both = float(np.mean(np.concatenate([winding == t1[spirals], mirror_winding == 3 - t1[spirals]])))
    return {
        "clockwise_vs_anticlockwise_with_mirror_images": both,
        "n_disks": int(disks.sum()), "accuracy": metrics.accuracy(probs[disks], t1[disks]),
        "confusion": metrics.confusion(probs[disks], t1[disks]).tolist(),
        "n_spirals": int(spirals.sum()), "clockwise_vs_anticlockwise_accuracy": float(np.mean(winding == t1[spirals])) if spirals.any() else None,
        "clockwise_accuracy": float(np.mean(winding[t1[spirals] == 1] == 1)) if (t1[spirals] == 1).any() else None,
        "anticlockwise_accuracy": float(np.mean(winding[t1[spirals] == 2] == 2)) if (t1[spirals] == 2).any() else None,
    }


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
    if results.get("t1_tta"):
        lines += [
            "",
            f"T1 on the {results['t1_tta']['n_disks']} featured test galaxies (mirror swaps {results['t1_mirror_swaps']}):",
            "",
            "| predictions | T1 accuracy (3 answers) | clockwise vs anticlockwise (face-on spirals) | the same with their mirror images |",
            "|---|---:|---:|---:|",
        ]
        for key, name in (("t1_tta", "D4 TTA (8 views)"), ("t1_no_tta", "single view")):
            r = results[key]
            winding, both = r["clockwise_vs_anticlockwise_accuracy"], r["clockwise_vs_anticlockwise_with_mirror_images"]
            lines.append(f"| {name} | {r['accuracy']:.4f} | {'–' if winding is None else f'{winding:.4f}'} ({r['n_spirals']}) "
                         f"| {'–' if both is None else f'{both:.4f}'} |")
        lines += ["", "(with their mirror images: the spirals and their left-right mirror images, truth swapped; exactly 0.5 for a "
                      "model invariant to mirroring)"]
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
    ap.add_argument("--t0-only", action="store_true", help="the smooth-or-featured head alone (the earlier runs)")
    ap.add_argument("--no-swaps", action="store_true", help="T1 without mirror swaps: invariant to mirroring (the control)")
    ap.add_argument("--limit", type=int, default=0, help="a random subset of this many galaxies (0: all; for a smoke run)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cnn_gz1.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    paths, y, classes = gz1_binary()
    if args.limit:
        keep = np.sort(np.random.default_rng(args.seed).choice(len(y), min(args.limit, len(y)), replace=False))
        paths, y, classes = [paths[i] for i in keep], y[keep], classes[keep]
    t1 = t1_labels(classes)
    with_t1 = not args.t0_only
    t0 = time.perf_counter()
    images = load_images(paths, args.image_size, args.crop, args.cache_dir)
    load_s = time.perf_counter() - t0
    tr, va, te = stratified_split(classes if with_t1 else y, (0.1, 0.2), args.seed)
    print(f"{len(y)} galaxies ({np.sum(y == 0)} smooth, {np.sum(y == 1)} featured); "
          f"train {len(tr)}, val {len(va)}, test {len(te)}; images loaded in {load_s:.1f}s",
          flush=True)

    channels = tuple(int(c) for c in args.channels.split(","))

    def log(row: dict) -> None:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
              flush=True)

    swaps = {} if args.no_swaps or not with_t1 else {T1_KEY: [[1, 2]]}

    def new_classifier(seed: int) -> GalaxyClassifier:
        heads = [(T0_KEY, 2)] + ([(T1_KEY, 3)] if with_t1 else [])
        return GalaxyClassifier(heads=heads, image_size=args.image_size, crop_fraction=args.crop, channels=channels, seed=seed,
                                mirror_swaps=swaps)

    def targets(idx: np.ndarray) -> dict[str, np.ndarray] | np.ndarray:
        """T0's labels, and T1's for the disks (-1 elsewhere: unlabelled, masked out of the loss)."""
        return {T0_KEY: y[idx], T1_KEY: t1[idx]} if with_t1 else y[idx]

    pretrained, pretrain_s = None, 0.0
    if args.pretrain_epochs:
        trunk = new_classifier(args.seed)
        pretrain_s = trunk.pretrain(images[np.concatenate([tr, va])], epochs=args.pretrain_epochs, log=log)["train_seconds"]
        pretrained = trunk.to_bytes()
    members, tta_s, train_s, history = [], 0.0, 0.0, []
    for member in range(args.ensemble):
        train_args = {"validation": (images[va], targets(va)), "lr": args.lr, "val_every": args.val_every,
                      "seed": args.seed + member, "log": log}
        if pretrained is None:
            clf = new_classifier(args.seed + member)
            fit = clf.fit(images[tr], targets(tr), epochs=args.epochs, **train_args)
        else:
            clf = GalaxyClassifier.from_bytes(pretrained)
            fit = clf.partial_fit(images[tr], targets(tr), epochs=args.epochs, **train_args)
        train_s += fit["train_seconds"]
        history.append(fit["epochs"])
        t_start = time.perf_counter()
        tta_all = clf.predict_proba(images[te], tta=True)
        tta_s += time.perf_counter() - t_start
        one_all = clf.predict_proba(images[te], tta=False)
        p_tta = tta_all[T0_KEY]
        members.append({
            "tta": p_tta, "one": one_all[T0_KEY],
            "mc": clf.mc_predict(images[te], n_samples=30)[T0_KEY].mean(0),
            "t1_tta": tta_all.get(T1_KEY), "t1_one": one_all.get(T1_KEY),
            # the test galaxies' mirror images (left-right), for the symmetrised winding accuracy
            "t1_mirrored": clf.predict_proba(np.ascontiguousarray(images[te][:, :, ::-1]), tta=True)[T1_KEY] if with_t1 else None,
        })
        print(f"member {member}: TTA accuracy {metrics.accuracy(p_tta, y[te]):.4f}", flush=True)
    p_tta = np.mean([m["tta"] for m in members], axis=0)
    p_one = np.mean([m["one"] for m in members], axis=0)
    mc_mean = np.mean([m["mc"] for m in members], axis=0)
    majority = np.tile([1.0, 0.0], (len(te), 1))  # always "smooth"
    t1_results = {}
    if with_t1:
        t1_results = {"t1_mirror_swaps": swaps.get(T1_KEY, []),
                      "t1_tta": evaluate_t1(np.mean([m["t1_tta"] for m in members], axis=0), t1[te],
                                            np.mean([m["t1_mirrored"] for m in members], axis=0)),
                      "t1_no_tta": evaluate_t1(np.mean([m["t1_one"] for m in members], axis=0), t1[te])}
    results = {
        "task": "GZ1 smooth (0) vs featured (1, 2, 3); classes 4, 5 dropped"
                + ("; T1 edge-on (3) / clockwise (1) / anticlockwise (2) on the featured" if with_t1 else ""),
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
    } | t1_results
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    write_markdown(results, Path(args.out).with_suffix(".md"))
    for name in ("test_tta", "test_no_tta", "test_mc_dropout_mean"):
        r = results[name]
        print(f"{name}: accuracy {r['accuracy']:.4f}  balanced {r['balanced_accuracy']:.4f}  "
              f"ECE {r['ece']:.4f}  confusion {r['confusion']}")
    for name in ("t1_tta", "t1_no_tta"):
        if name in results:
            r = results[name]
            print(f"{name}: T1 accuracy {r['accuracy']:.4f} on {r['n_disks']} disks; clockwise vs anticlockwise "
                  f"{r['clockwise_vs_anticlockwise_accuracy']} on {r['n_spirals']} spirals (chance 0.5), with their mirror images "
                  f"{r['clockwise_vs_anticlockwise_with_mirror_images']}")
    print(f"training {train_s:.0f}s for {args.ensemble} x {args.epochs} epochs; wrote {args.out}")


if __name__ == "__main__":
    main()
