"""Fixtures for the machine: a binary smooth/featured workflow over the demo's real GZ1 images, and
a two-question tree over the same images (T0 smooth / featured, T1 edge-on / clockwise /
anticlockwise for the featured ones, retired by the whole workflow); simulated human votes applied
by the live loop, and real Celery workers for the end-to-end tests."""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "platform" / "demo_data" / "gz1"

BINARY_TASKS = {
    "first_task": "T0",
    "tasks": {
        "T0": {
            "type": "single",
            "question": "Is the galaxy smooth, or does it have features or a disk?",
            "answers": [{"label": "Smooth", "next": None}, {"label": "Features or disk", "next": None}],
        }
    },
}

# T1's answers as GZ1's classes give them (1 clockwise, 2 anticlockwise, 3 edge-on); the others have none.
T1_OF_CLASS = {"1": 1, "2": 2, "3": 0}
TREE_TASKS = {
    "first_task": "T0",
    "tasks": {
        "T0": {
            "type": "single",
            "question": "Is the galaxy smooth, or does it have features or a disk?",
            "answers": [{"label": "Smooth", "next": None}, {"label": "Features or disk", "next": "T1"}],
        },
        "T1": {
            "type": "single",
            "question": "Is the disk edge-on, or do its arms wind clockwise or anticlockwise?",
            "answers": [{"label": "Edge-on", "next": None}, {"label": "Clockwise", "next": None},
                        {"label": "Anticlockwise", "next": None}],
            "mirror_swaps": [[1, 2]],
        },
    },
}

# The simulated volunteers here are all new and answer little gold: trusted from their first answer
# (half_trust 0, the engine before issue 25), so that the machine's tests are about the machine;
# Sybil resistance is tested in tests/aggregation/test_sybil.py and tests/platform_api.
TRUST_NEWCOMERS = {"half_trust": 0}

# Tiny and fast: 32 px, one epoch, a handful of subjects is enough to train and to be "trained"; no
# pretraining unless a test asks for it (tests of pretraining and the whole loop do).
TINY_MACHINE = {
    "enabled": True, "image_size": 32, "epochs": 1, "warm_epochs": 1, "min_steps": 0, "batch_size": 16, "min_train": 4,
    "min_gold_subjects": 4, "retrain_every": 4, "mc_samples": 4, "inference_batch": 16, "pretrain_epochs": 0,
}


def demo_galaxies() -> list[tuple[str, int]]:
    """(image file, smooth 0 / featured 1) for the 40 demo galaxies of GZ1 classes 0-3."""
    with open(DEMO / "manifest.csv", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["#gz1_class"] in {"0", "1", "2", "3"}]
    return [(r["image"], 0 if r["#gz1_class"] == "0" else 1) for r in rows]


def demo_tree_galaxies() -> list[tuple[str, int, int | None]]:
    """(image file, T0 truth, T1 truth or None) for the 40 demo galaxies of GZ1 classes 0-3."""
    with open(DEMO / "manifest.csv", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["#gz1_class"] in {"0", "1", "2", "3"}]
    return [(r["image"], 0 if r["#gz1_class"] == "0" else 1, T1_OF_CLASS.get(r["#gz1_class"])) for r in rows]


@pytest.fixture
def machine_tree_workflow(db, clean_redis) -> Callable[..., object]:
    """The two-question tree over the 40 demo galaxies, retired by the whole workflow, every third one
    gold (T1's gold only for the disks)."""
    from django.core.files import File

    from projects.models import Project, Subject, SubjectSet
    from projects.services import add_subject_image, create_workflow, link_subject_set

    def build(active_learning: dict | None = None, retirement: dict | None = None):
        project = Project.objects.create(slug=f"machine-tree-{random.randrange(10**9)}", title="Machine tree test")
        workflow = create_workflow(project, "Smooth, featured, winding", TREE_TASKS,
                                   retirement={"scope": "workflow", "budget": 10} | TRUST_NEWCOMERS | (retirement or {}),
                                   active_learning=TINY_MACHINE | (active_learning or {}))
        subject_set = SubjectSet.objects.create(project=project, name="demo")
        for i, (image, t0, t1) in enumerate(demo_tree_galaxies()):
            gold = ({"T0": t0} | ({} if t1 is None else {"T1": t1})) if i % 3 == 0 else None
            subject = Subject.objects.create(subject_set=subject_set, external_id=image, metadata={"#label": t0, "#t1": t1}, gold=gold)
            with open(DEMO / "images" / image, "rb") as handle:
                add_subject_image(subject, 0, image, File(handle))
        link_subject_set(workflow, subject_set)
        return workflow

    return build


def vote_tree(workflow, n_volunteers: int = 6, skill: float = 0.9, seed: int = 0, subject_ids: list[int] | None = None) -> int:
    """Simulated volunteers answer every (or the given) non-gold subject through the platform, down the
    tree: T1 after "features or disk" (its truth for a disk, a random answer for a smooth galaxy)."""
    from classifications.models import Volunteer
    from classifications.services import submit_classification
    from projects.models import SubjectWorkflowState

    rng = random.Random(seed)
    states = SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).select_related("subject")
    if subject_ids is not None:
        states = states.filter(subject_id__in=subject_ids)
    n = 0
    for _ in range(n_volunteers):
        volunteer = Volunteer.objects.create()
        for state in states:
            t0, t1 = truth_of(state.subject), state.subject.metadata.get("#t1")
            a0 = t0 if rng.random() < skill else 1 - t0
            annotations = [{"task": "T0", "value": a0}]
            if a0 == 1:
                a1 = t1 if t1 is not None and rng.random() < skill else rng.randrange(3)
                annotations.append({"task": "T1", "value": a1})
            submit_classification(volunteer, {
                "workflow": workflow.pk, "subject": state.subject_id, "annotations": annotations,
                "idempotency_key": f"vote-{volunteer.pk}-{state.subject_id}",
            })
            n += 1
    return n


@pytest.fixture
def machine_workflow(db, clean_redis) -> Callable[..., object]:
    """A workflow over the 40 demo galaxies, every third one gold (the held-out test set)."""
    from django.core.files import File

    from projects.models import Project, Subject, SubjectSet
    from projects.services import add_subject_image, create_workflow, link_subject_set

    def build(active_learning: dict | None = None, policy: str = "min:3,posterior:0.95,max:10"):
        project = Project.objects.create(slug=f"machine-{random.randrange(10**9)}", title="Machine test")
        workflow = create_workflow(
            project, "Smooth or featured", BINARY_TASKS, retirement={"scope": "first_question", "policy": policy} | TRUST_NEWCOMERS,
            active_learning=TINY_MACHINE | (active_learning or {}),
        )
        subject_set = SubjectSet.objects.create(project=project, name="demo")
        for i, (image, label) in enumerate(demo_galaxies()):
            gold = {"T0": label} if i % 3 == 0 else None
            subject = Subject.objects.create(subject_set=subject_set, external_id=image, metadata={"#label": label}, gold=gold)
            with open(DEMO / "images" / image, "rb") as handle:
                add_subject_image(subject, 0, image, File(handle))
        link_subject_set(workflow, subject_set)
        return workflow

    return build


def truth_of(subject) -> int:
    return int(subject.metadata["#label"])


def vote(workflow, n_volunteers: int = 6, skill: float = 0.9, seed: int = 0, subject_ids: list[int] | None = None) -> int:
    """Simulated volunteers answer every (or the given) non-gold subject through the platform."""
    from classifications.models import Volunteer
    from classifications.services import submit_classification
    from projects.models import SubjectWorkflowState

    rng = random.Random(seed)
    states = SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).select_related("subject")
    if subject_ids is not None:
        states = states.filter(subject_id__in=subject_ids)
    n = 0
    for _ in range(n_volunteers):
        volunteer = Volunteer.objects.create()
        for state in states:
            truth = truth_of(state.subject)
            answer = truth if rng.random() < skill else 1 - truth
            submit_classification(volunteer, {
                "workflow": workflow.pk, "subject": state.subject_id, "annotations": [{"task": "T0", "value": answer}],
                "idempotency_key": f"vote-{volunteer.pk}-{state.subject_id}",
            })
            n += 1
    return n


