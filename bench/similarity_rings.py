"""Benchmark: similarity search and a new question learnt from a few labels, on real ring galaxies,
through the platform (PostgreSQL + pgvector, the similarity app's services).

Data: ``../shared/data/galaxies/decals_rings/`` (470 DECaLS galaxies, 235 with a ring; from
Zoobot's examples). The ring labels are used only to score: the CNN never sees them.

1. The trunk: the machine's CNN (``ml.GalaxyClassifier``, the workflow's settings: ``--image-size``)
   pretrained self-supervised (SimCLR, ``ml.pretrain``, as ``machine.pretraining`` does) on the ring
   galaxies' images and, with ``--gz1 N``, N GZ1 images as well (more galaxies to learn from; other
   survey), no label of any kind. Cached under ``var/cache/similarity/`` by its settings.
2. A project: the 470 galaxies as the subjects of a workflow, the trunk stored as its machine's
   pretrained trunk, and the platform builds the embeddings (``similarity.embeddings.build_space``:
   D4-averaged embeddings in pgvector with their HNSW index).
3. precision@10: for every ring galaxy as the query, "more like this" through the platform
   (``similarity.selectors.similar_subjects``, the API's selector, HNSW search), the share of rings
   among its 10 nearest. Random is 0.5. Goal >= 0.80. The exact (numpy) figure on the same vectors
   is printed beside it.
4. finetune_100_accuracy: "new question from these" (``similarity.questions``): a ring / no-ring
   head fitted on the frozen embeddings of 100 labelled galaxies (a random draw, 50 of each), its
   accuracy on the other 370; the mean over ``--draws`` draws. Goal >= 0.85.

Prints ``{"precision_at_10": ..., "finetune_100_accuracy": ...}`` last (``--json``: that line alone
after the progress lines); writes bench/results/similarity_rings.json.

    .venv/bin/python bench/similarity_rings.py --json                                   # the full run
    .venv/bin/python bench/similarity_rings.py --pretrain-epochs 2 --gz1 500 --json     # a quick check
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT / "bench"), str(ROOT)]
os.environ.setdefault("CHORUS_DATA_DIR", str(ROOT / "var" / "bench-similarity-rings"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chorus.settings")
os.environ.setdefault("CHORUS_LOG_LEVEL", "WARNING")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/cnn_gz1.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "galaxies"
if not DATA.exists():
    DATA = Path("/work/shared/data/galaxies")
RINGS = DATA / "decals_rings"
TASKS = {
    "first_task": "T0",
    "tasks": {"T0": {"type": "single", "question": "Is the galaxy smooth, or does it have features or a disk?",
                     "answers": [{"label": "Smooth", "next": None}, {"label": "Features or disk", "next": None}]}},
}


def ring_catalog() -> tuple[list[str], np.ndarray, list[str]]:
    """Image paths, ring labels (0/1) and names of the 470 galaxies."""
    with open(RINGS / "catalog.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [str(RINGS / r["image"]) for r in rows], np.array([int(r["ring"]) for r in rows]), [r["iauname"] for r in rows]


def pretrained_trunk(args: argparse.Namespace, ring_paths: list[str]) -> bytes:
    """The trunk's weights: pretrained here, or read from the cache of a run with the same settings."""
    from ml import GalaxyClassifier, load_images

    gz1 = sorted((DATA / "gz1" / "images").glob("*.jpeg"))[: args.gz1]
    key = hashlib.sha1(json.dumps([args.image_size, args.pretrain_epochs, args.batch_size, args.seed, len(gz1), 2]).encode()).hexdigest()[:16]
    cache = ROOT / "var" / "cache" / "similarity" / f"trunk-{key}.bin"
    if cache.exists():
        print(json.dumps({"trunk": str(cache), "cached": True}), flush=True)
        return cache.read_bytes()
    images_cache = ROOT / "var" / "cache" / "ml"
    images = load_images(ring_paths, args.image_size, cache_dir=images_cache)
    if gz1:
        images = np.concatenate([images, load_images([str(p) for p in gz1], args.image_size, cache_dir=images_cache)])
    trunk = GalaxyClassifier([("T0", 2)], image_size=args.image_size, seed=args.seed)
    t0 = time.perf_counter()
    trunk.pretrain(images, epochs=args.pretrain_epochs, batch_size=args.batch_size,
                   log=lambda row: print(json.dumps({"pretraining": row}), flush=True))
    print(json.dumps({"pretrained_on": len(images), "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    blob = trunk.to_bytes()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(blob)
    return blob


def ring_workflow(paths: list[str], names: list[str], labels: np.ndarray, trunk: bytes):
    """A fresh project of the 470 galaxies, the trunk stored as its machine's, embedded by the platform."""
    import django

    django.setup()
    from django.conf import settings
    from django.core.files import File
    from platform_processes import reset_platform

    from machine import agents
    from projects.models import Project, Subject, SubjectSet
    from projects.services import add_subject_image, create_workflow, link_subject_set
    from similarity.embeddings import build_space

    reset_platform(Path(settings.DATA_DIR))
    project = Project.objects.create(slug="rings", title="Rings")
    workflow = create_workflow(project, "Smooth or featured", TASKS)
    subject_set = SubjectSet.objects.create(project=project, name="decals rings")
    subject_ids = []
    for path, name, ring in zip(paths, names, labels, strict=True):
        subject = Subject.objects.create(subject_set=subject_set, external_id=name, metadata={"#ring": int(ring)})
        with open(path, "rb") as handle:
            add_subject_image(subject, 0, Path(path).name, File(handle))
        subject_ids.append(subject.pk)
    link_subject_set(workflow, subject_set)
    agent = agents.machine_agent(workflow)
    agent.pretrained_model = trunk
    agent.pretraining = {"state": "done"}
    agent.save(update_fields=["pretrained_model", "pretraining"])  # outside a transaction: nothing queued but built here
    t0 = time.perf_counter()
    space = build_space(workflow.pk, force=True)
    print(json.dumps({"embedded": space.n_subjects, "seconds": round(time.perf_counter() - t0, 1), "timings": space.timings}), flush=True)
    return workflow, subject_ids


def random_trunk_baseline(args: argparse.Namespace, paths: list[str], labels: np.ndarray, subject_ids: list[int],
                          draws: list[list[int]]) -> dict[str, float]:
    """The same measures for the same CNN with random weights (never trained), in this run: what the
    pretraining adds. Exact numpy neighbours and the same head (``ml.embedding``) on the same draws."""
    from ml import GalaxyClassifier, load_images
    from ml.embedding import LinearHead, precision_at_k
    from similarity.questions import L2

    vectors = GalaxyClassifier([("T0", 2)], image_size=args.image_size, seed=args.seed).embed(
        load_images(paths, args.image_size, cache_dir=ROOT / "var" / "cache" / "ml"))
    row = {sid: n for n, sid in enumerate(subject_ids)}
    accuracies = []
    for picked in draws:
        train = np.array([row[i] for i in picked])
        test = np.setdiff1d(np.arange(len(labels)), train)
        head = LinearHead.fit(vectors[train], labels[train], 2, l2=L2)
        accuracies.append(float((head.predict_proba(vectors[test]).argmax(axis=1) == labels[test]).mean()))
    return {"precision_at_10": round(precision_at_k(vectors, labels, 10), 4), "finetune_100_accuracy": round(float(np.mean(accuracies)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--gz1", type=int, default=6664, help="GZ1 images added to the pretraining (0: the ring galaxies' alone)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="end with the result line alone")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "similarity_rings.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    paths, labels, names = ring_catalog()
    trunk = pretrained_trunk(args, paths)
    workflow, subject_ids = ring_workflow(paths, names, labels, trunk)
    ring_of = dict(zip(subject_ids, labels.tolist(), strict=True))

    from ml.embedding import precision_at_k
    from similarity import questions, selectors
    from similarity.embeddings import current_space

    t0 = time.perf_counter()
    shares = []
    for sid in subject_ids:
        if ring_of[sid] == 1:
            found = selectors.similar_subjects(workflow, [sid], 10)["results"]
            shares.append(np.mean([ring_of[r["id"]] for r in found]))
    search_seconds = time.perf_counter() - t0
    space = current_space(workflow)
    ids, vectors = questions.space_vectors(space)
    exact = precision_at_k(vectors, np.array([ring_of[i] for i in ids]), 10)

    question = questions.create_question(workflow, "ring", ["no ring", "ring"])
    rng = np.random.default_rng(args.seed)
    rings, plain = [i for i in subject_ids if ring_of[i]], [i for i in subject_ids if not ring_of[i]]
    accuracies, cross_validated, draws = [], [], []
    for _ in range(args.draws):
        picked = [*rng.choice(rings, args.labels // 2, replace=False), *rng.choice(plain, args.labels - args.labels // 2, replace=False)]
        draws.append([int(i) for i in picked])
        question.labels.all().delete()
        questions.set_labels(question, [(int(i), ring_of[int(i)]) for i in picked])
        questions.fit_question(question)
        chosen = set(int(i) for i in picked)
        predicted = {row["subject_id"]: row["predicted"] == "ring" for row in questions.ranking_rows(question)}
        accuracies.append(float(np.mean([predicted[i] == bool(ring_of[i]) for i in subject_ids if i not in chosen])))
        cross_validated.append(question.metrics["cross_validation"]["accuracy"])

    baseline = random_trunk_baseline(args, paths, labels, subject_ids, draws)
    result = {"precision_at_10": round(float(np.mean(shares)), 4), "finetune_100_accuracy": round(float(np.mean(accuracies)), 4)}
    report = {
        "command": " ".join(["bench/similarity_rings.py", *sys.argv[1:]]),
        "settings": vars(args) | {"out": None},
        "precision_at_10_exact_numpy": round(exact, 4), "queries": len(shares), "search_seconds": round(search_seconds, 2),
        "finetune": {"labels": args.labels, "draws": args.draws, "accuracy_sd": round(float(np.std(accuracies)), 4),
                     "cross_validated_mean": round(float(np.mean(cross_validated)), 4)},
        "baseline_random_trunk": baseline,
        "goals": {"precision_at_10": 0.80, "finetune_100_accuracy": 0.85},
        **result,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if not args.json:
        print(json.dumps(report, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
