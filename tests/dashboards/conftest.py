"""Fixtures of the dashboards' tests: users with their roles, classified and aggregated workflows,
and a clean Redis hot state (workflow ids may repeat across tests)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

# A workflow of one drawing task and nothing else (whole-workflow retirement: min 1, bar 0.02).
DRAWING_ONLY_TASKS = {
    "first_task": "T0",
    "tasks": {
        "T0": {"type": "drawing", "instruction": "Draw a box around each galaxy.",
               "tools": [{"type": "rectangle", "label": "Galaxy", "min": 0, "max": 5}], "next": None},
    },
}


@pytest.fixture(autouse=True)
def _fresh_hot_state(db, monkeypatch) -> None:
    from django.apps import apps

    from live import hot_state, services

    hot_state.client().flushdb()
    services._LOCAL_ENGINES.clear()
    if not apps.is_installed("machine") and hasattr(services, "_machine_ids"):
        # While platform/machine is not in INSTALLED_APPS (it is being built), there are no
        # machine agents; the live loop's look-up of them would fail to import its models.
        monkeypatch.setattr(services, "_machine_ids", lambda workflow_id: frozenset())


@pytest.fixture
def users(db) -> dict[str, object]:
    """owner (of no project yet: ``owned`` adds it), volunteer (signed in, owns nothing), staff."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    return {
        "owner": User.objects.create_user("owner", password="pw-owner"),
        "volunteer": User.objects.create_user("volunteer", password="pw-volunteer"),
        "staff": User.objects.create_user("staffer", password="pw-staff", is_staff=True),
    }


@pytest.fixture
def owned_workflow(make_workflow, users) -> Callable[..., object]:
    def build(**kwargs: object):
        workflow = make_workflow(**kwargs)
        workflow.project.owners.add(users["owner"])
        return workflow

    return build


def submit_votes(workflow, n_volunteers: int = 6, per_volunteer: int = 6, seed: int = 1, subject_ids: list[int] | None = None) -> int:
    """Anonymous volunteers answer subjects (truth: the subject id's parity); returns how many."""
    from classifications.models import Volunteer
    from classifications.services import submit_classification

    rng = random.Random(seed)
    subject_ids = subject_ids or list(workflow.subject_states.values_list("subject_id", flat=True))
    n = 0
    for _ in range(n_volunteers):
        volunteer = Volunteer.objects.create()
        for subject_id in rng.sample(subject_ids, min(per_volunteer, len(subject_ids))):
            answer = subject_id % 2 if rng.random() < 0.85 else 1 - subject_id % 2
            annotations = [{"task": "T0", "value": answer}] + ([{"task": "T1", "value": 0}] if answer == 1 else [])
            boxes = [{"tool": 0, "x": 10, "y": 12, "width": 20, "height": 16}] if answer == 0 else []
            submit_classification(volunteer, {
                "workflow": workflow.pk, "subject": subject_id, "idempotency_key": f"vote-{volunteer.pk}-{subject_id}",
                "annotations": [*annotations, {"task": "T2", "value": boxes}],
            })
            n += 1
    return n


@pytest.fixture
def votes() -> Callable[..., int]:
    return submit_votes
