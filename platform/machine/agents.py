"""The machine agent of a workflow: the ``Volunteer`` that is its CNN, the question it answers, and
a model version's CNN loaded from its weights.

The machine is one agent per workflow (``MachineAgent``, kept across model versions, so the
engine's estimate of its skill accumulates). Its predictions are ordinary ``Classification`` rows
(``machine.prediction``), so the engine learns its confusion matrix as it learns anyone's. It
answers the workflow's first question, which must be single-choice.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from classifications.models import Volunteer
from machine.models import MachineAgent, ModelVersion
from projects.models import Workflow


def first_question(workflow: Workflow) -> tuple[str, int]:
    """The question the CNN answers: the workflow's first task (single choice), and its answer count."""
    key = workflow.tasks["first_task"]
    task = workflow.tasks["tasks"][key]
    if task.get("type") != "single":
        raise ValueError(f"the machine answers a single-choice first question; {key!r} is {task.get('type')!r}")
    return key, len(task["answers"])


def machine_agent(workflow: Workflow) -> MachineAgent:
    """The workflow's machine agent, created (with its Volunteer) the first time."""
    agent = MachineAgent.objects.filter(workflow=workflow).first()
    if agent is not None:
        return agent
    with transaction.atomic():
        Workflow.objects.select_for_update().filter(pk=workflow.pk).first()
        agent = MachineAgent.objects.filter(workflow=workflow).first()
        if agent is None:
            agent = MachineAgent.objects.create(workflow=workflow, volunteer=Volunteer.objects.create())
    return agent


def load_classifier(version: ModelVersion) -> Any:
    """The version's CNN (``ml.GalaxyClassifier``), from its stored weights."""
    from ml import GalaxyClassifier

    return GalaxyClassifier.from_bytes(bytes(version.model))
