"""Fixtures of similarity search: a smooth-or-featured workflow over the demo's 40 real GZ1 galaxies
with the machine's tiny CNN (tests/machine's settings), embedded by its trunk into pgvector (real
PostgreSQL with the extension), and a scientist who owns it."""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import pytest

from tests.machine.conftest import BINARY_TASKS, DEMO, TINY_MACHINE, demo_galaxies


def tiny_classifier(seed: int = 0):
    """The machine's CNN at the tests' size (32 px), random weights: what a trunk looks like to this app."""
    from ml import GalaxyClassifier

    return GalaxyClassifier([("T0", 2)], image_size=32, seed=seed)


def odd_image() -> bytes:
    """A uniformly green square: nothing like a galaxy."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (96, 96), (0, 255, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def inline_builds(monkeypatch) -> list[int]:
    """Builds requested after a commit run at once in this process (no broker, no worker); returns
    the workflows built, in order."""
    from similarity import tasks

    built: list[int] = []

    def run(workflow_id: int, force: bool = False) -> None:
        built.append(workflow_id)
        tasks.build_embeddings(workflow_id, force)

    monkeypatch.setattr(tasks.build_embeddings, "apply_async", lambda args, queue=None: run(*args))
    return built


@pytest.fixture
def scientist(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("scientist", password="pw-scientist")


@pytest.fixture
def galaxy_workflow(db, clean_redis, scientist) -> Callable[..., object]:
    """The 40 demo galaxies (every third gold), the machine on at 32 px, owned by ``scientist``;
    ``odd=True`` adds a green square as one more subject."""
    from django.core.files import File
    from django.core.files.base import ContentFile

    from projects.models import Project, Subject, SubjectSet
    from projects.services import add_subject_image, create_workflow, link_subject_set

    def build(odd: bool = False):
        project = Project.objects.create(slug=f"similar-{random.randrange(10**9)}", title="Similarity test")
        project.owners.add(scientist)
        workflow = create_workflow(project, "Smooth or featured", BINARY_TASKS,
                                   retirement={"scope": "first_question", "policy": "min:3,posterior:0.95,max:10"},
                                   active_learning=dict(TINY_MACHINE))
        subject_set = SubjectSet.objects.create(project=project, name="demo")
        for i, (image, label) in enumerate(demo_galaxies()):
            gold = {"T0": label} if i % 3 == 0 else None
            subject = Subject.objects.create(subject_set=subject_set, external_id=image, metadata={"#label": label}, gold=gold)
            with open(DEMO / "images" / image, "rb") as handle:
                add_subject_image(subject, 0, image, File(handle))
        if odd:
            subject = Subject.objects.create(subject_set=subject_set, external_id="green-square", metadata={"#label": 0})
            add_subject_image(subject, 0, "green.png", ContentFile(odd_image()))
        link_subject_set(workflow, subject_set)
        return workflow

    return build


def store_trunk(workflow, classifier=None) -> None:
    """Store a pretrained trunk on the workflow's machine agent as ``machine.pretraining`` does
    (the same save, which the app's receiver hears)."""
    from machine import agents

    agent = agents.machine_agent(workflow)
    agent.pretrained_model = (classifier or tiny_classifier()).to_bytes()
    agent.pretraining = {"state": "done", "image_size": 32}
    agent.save(update_fields=["pretrained_model", "pretraining"])


@pytest.fixture
def embedded_workflow(galaxy_workflow, inline_builds, django_capture_on_commit_callbacks) -> Callable[..., object]:
    """A galaxy workflow whose trunk has embedded every subject (through the receiver and the task)."""

    def build(odd: bool = False):
        workflow = galaxy_workflow(odd=odd)
        with django_capture_on_commit_callbacks(execute=True):
            store_trunk(workflow)
        return workflow

    return build
