"""What the machine learns from and is measured on: the subjects' images, the training labels, the
gold set, and the stable splits of them.

- Training data: subjects retired by humans, not by the machine (it would learn its own mistakes
  back), with the engine's posterior of each question the machine answers as soft labels, except a
  stable ``validation_share`` of them (by a hash of the subject id) kept for comparing versions
  (``machine.promotion``). A training run takes a random sample of ``max_train`` of them at most.
- Per question, a subject's label is masked (a NaN row, which the loss skips: ``ml.losses``) where
  the engine's reach of the question is below ``label_min_reach``: the reach is the product of the
  answer posteriors along the question's path (``machine.agents.reach_function``), so a galaxy that
  is surely smooth says nothing about its spiral arms, where its "posterior" of the arms question is
  the few stray answers of volunteers who wrongly called it a disk, or the class prior.
- Soft labels, not the vote counts of ``ml``'s Dirichlet-multinomial loss: the engine's posterior
  weighs each volunteer by the skill it learnt (a vote count weighs a careless volunteer as a careful
  one), whole-workflow retirement stops a subject at a few votes when they agree (few counts say
  little to a Dirichlet-multinomial), and only softmax heads can be calibrated on gold
  (``GalaxyClassifier.calibrate``), which the gold gate stands on (docs/machine.md, "The whole tree").
- Gold subjects are never trained on: with their experts' answers they are the held-out test set
  (``machine.evaluation``), and they calibrate each version, question by question (a gold subject
  is gold for the questions its experts answered).
- Images: each subject's first image, decoded at the CNN's size and cached in the worker process,
  since every training run and every promotion reads the same subjects again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from live.engine import MACHINE_REASON
from machine import agents
from projects.models import SubjectImage, SubjectWorkflowState, Workflow

_IMAGE_CACHE: dict[tuple[str, int], np.ndarray] = {}
_IMAGE_CACHE_MAX = 50_000

Labelled = tuple[list[int], np.ndarray]  # subject ids and their labels, row for row
TreeLabelled = tuple[list[int], dict[str, np.ndarray]]  # subject ids and, per question, their labels (NaN rows: none)


def _image_paths(subject_ids: Sequence[int]) -> dict[int, str]:
    """Each subject's first image, as a file path (Django's storage)."""
    paths: dict[int, str] = {}
    for image in SubjectImage.objects.filter(subject_id__in=list(subject_ids)).order_by("subject_id", "position"):
        paths.setdefault(image.subject_id, image.file.path)
    missing = set(subject_ids) - set(paths)
    if missing:
        raise ValueError(f"subjects without an image: {sorted(missing)[:10]}")
    return paths


def load_images(subject_ids: Sequence[int], image_size: int) -> np.ndarray:
    """uint8 ``(N, S, S, 3)`` views of the subjects' first images, cached in this process."""
    from ml.images import load_image

    paths = _image_paths(subject_ids)
    out = np.empty((len(subject_ids), image_size, image_size, 3), dtype=np.uint8)
    for i, subject_id in enumerate(subject_ids):
        key = (paths[subject_id], image_size)
        image = _IMAGE_CACHE.get(key)
        if image is None:
            image = load_image(paths[subject_id], image_size)
            if len(_IMAGE_CACHE) < _IMAGE_CACHE_MAX:
                _IMAGE_CACHE[key] = image
        out[i] = image
    return out


def training_set(workflow: Workflow, min_reach: float | None = None) -> TreeLabelled:
    """Human-retired, non-gold subjects and, per question the machine answers, their posteriors (soft
    labels), a NaN row where the question's reach is below ``min_reach`` (``label_min_reach``)."""
    from machine.config import machine_settings, question_settings

    heads = agents.machine_heads(workflow)
    cfg = machine_settings(workflow)
    bars = {key: question_settings(cfg, key)["label_min_reach"] if min_reach is None else min_reach for key, _ in heads}
    reach_of = agents.reach_function(workflow) if len(heads) > 1 or heads[0][0] != workflow.tasks["first_task"] else None
    rows = (
        SubjectWorkflowState.objects.filter(workflow=workflow, status=SubjectWorkflowState.Status.RETIRED, is_gold=False)
        .exclude(retirement_reason=MACHINE_REASON)
        .exclude(posterior=None)
        .order_by("subject_id")
        .values_list("subject_id", "posterior")
    )
    ids: list[int] = []
    labels: dict[str, list] = {key: [] for key, _ in heads}
    for subject_id, posterior in rows:
        posterior = posterior or {}
        if not all(isinstance(posterior.get(key), list) and len(posterior[key]) == k for key, k in heads):
            continue
        reach = reach_of(posterior) if reach_of is not None else {}
        taught = {key: reach.get(key, 1.0) >= bars[key] for key, _ in heads}
        if not any(taught.values()):
            continue
        ids.append(subject_id)
        for key, k in heads:
            labels[key].append(posterior[key] if taught[key] else [np.nan] * k)
    return ids, {key: np.asarray(labels[key], dtype=np.float64).reshape(-1, k) for key, k in heads}


def gold_sets(workflow: Workflow) -> dict[str, Labelled]:
    """Per question the machine answers: the gold subjects whose experts answered it, with that answer."""
    heads = agents.machine_heads(workflow)
    found: dict[str, tuple[list[int], list[int]]] = {key: ([], []) for key, _ in heads}
    rows = SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=True).order_by("subject_id")
    for subject_id, gold in rows.values_list("subject_id", "subject__gold"):
        for key, k in heads:
            value = (gold or {}).get(key)
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < k:
                found[key][0].append(subject_id)
                found[key][1].append(value)
    return {key: (ids, np.asarray(y, dtype=np.int64)) for key, (ids, y) in found.items()}


def gold_set(workflow: Workflow) -> Labelled:
    """The held-out test set of the machine's first question (``gold_sets``)."""
    return next(iter(gold_sets(workflow).values()))


def labelled_on(subjects: TreeLabelled, key: str) -> Labelled:
    """The subjects labelled on question ``key`` (not masked) and their answer there (the argmax)."""
    ids, labels = subjects
    keep = ~np.isnan(labels[key]).any(axis=1)
    return [i for i, k in zip(ids, keep, strict=True) if k], labels[key][keep].argmax(axis=1)


def human_retired_count(workflow: Workflow) -> int:
    return (
        SubjectWorkflowState.objects.filter(workflow=workflow, status=SubjectWorkflowState.Status.RETIRED, is_gold=False)
        .exclude(retirement_reason=MACHINE_REASON)
        .count()
    )


def sample_at_most(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random sample of ``limit`` of ``n`` items (all of them if fewer)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def is_held_out(subject_id: int, share: float) -> bool:
    """The validation subjects: a stable pseudo-random share of the subjects, by id."""
    return (subject_id * 2654435761) % 2**32 < share * 2**32


def split_by_id(subjects: TreeLabelled, share: float) -> tuple[TreeLabelled, TreeLabelled]:
    """(held-out part, the rest): a stable pseudo-random ``share`` of the subjects, by id."""
    ids, labels = subjects
    held = np.array([is_held_out(i, share) for i in ids], dtype=bool)
    return (([i for i, h in zip(ids, held, strict=True) if h], {key: v[held] for key, v in labels.items()}),
            ([i for i, h in zip(ids, held, strict=True) if not h], {key: v[~held] for key, v in labels.items()}))
