"""What the machine learns from and is measured on: the subjects' images, the training labels, the
gold set, and the stable splits of them.

- Training data: subjects retired by humans, not by the machine (it would learn its own mistakes
  back), with the engine's posterior of the first question as soft labels, except a stable
  ``validation_share`` of them (by a hash of the subject id) kept for comparing versions
  (``machine.promotion``). A training run takes a random sample of ``max_train`` of them at most.
- Gold subjects are never trained on: with their experts' answers they are the held-out test set
  (``machine.evaluation``), and they calibrate each version.
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


def training_set(workflow: Workflow) -> Labelled:
    """Human-retired, non-gold subjects and their first-question posteriors (soft labels)."""
    key, k = agents.first_question(workflow)
    rows = (
        SubjectWorkflowState.objects.filter(workflow=workflow, status=SubjectWorkflowState.Status.RETIRED, is_gold=False)
        .exclude(retirement_reason=MACHINE_REASON)
        .exclude(posterior=None)
        .order_by("subject_id")
        .values_list("subject_id", "posterior")
    )
    ids, labels = [], []
    for subject_id, posterior in rows:
        p = (posterior or {}).get(key)
        if isinstance(p, list) and len(p) == k:
            ids.append(subject_id)
            labels.append(p)
    return ids, np.asarray(labels, dtype=np.float64).reshape(-1, k)


def gold_set(workflow: Workflow) -> Labelled:
    """The held-out test set: gold subjects with their experts' answer to the first question."""
    key, k = agents.first_question(workflow)
    ids, labels = [], []
    rows = SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=True).order_by("subject_id")
    for subject_id, gold in rows.values_list("subject_id", "subject__gold"):
        value = (gold or {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < k:
            ids.append(subject_id)
            labels.append(value)
    return ids, np.asarray(labels, dtype=np.int64)


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


def split_by_id(subjects: Labelled, share: float) -> tuple[Labelled, Labelled]:
    """(held-out part, the rest): a stable pseudo-random ``share`` of the subjects, by id."""
    ids, labels = subjects
    held = np.array([is_held_out(i, share) for i in ids], dtype=bool)
    return ([i for i, h in zip(ids, held, strict=True) if h], labels[held]), ([i for i, h in zip(ids, held, strict=True) if not h], labels[~held])
