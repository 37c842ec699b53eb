"""The machine agent of a workflow: the ``Volunteer`` that is its CNN, the questions it answers, and
a model version's CNN loaded from its weights.

The machine is one agent per workflow (``MachineAgent``, kept across model versions, so the
engine's estimate of its skill accumulates). Its predictions are ordinary ``Classification`` rows
(``machine.prediction``), so the engine learns its confusion matrix as it learns anyone's, one per
question (each question node of the engine has its own skills).

What it answers (``machine_heads``): with whole-workflow retirement, every single-choice question
of the tree, one CNN head each (``ml.model``); with the first-question rule (scope
``"first_question"``), where only the first question decides, that question alone. Multiple-choice
questions and drawing tasks stay with humans. A question's ``mirror_swaps`` (the answers a mirror
image exchanges, in the task tree) go to its head (``mirror_swaps``). Like a volunteer, the machine
follows its own answers through the tree (``answer_path``): it answers a question only where its
answers lead there, so it never says which way a galaxy it calls smooth winds its arms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.db import transaction

from classifications.models import Volunteer
from machine.models import MachineAgent, ModelVersion
from projects.models import Workflow

Heads = tuple[tuple[str, int], ...]


def first_question(workflow: Workflow) -> tuple[str, int]:
    """The workflow's first task (single choice), and its answer count: what the CNN answers under the
    first-question rule, and the first of its heads otherwise."""
    key = workflow.tasks["first_task"]
    task = workflow.tasks["tasks"][key]
    if task.get("type") != "single":
        raise ValueError(f"the machine answers a single-choice first question; {key!r} is {task.get('type')!r}")
    return key, len(task["answers"])


def whole_workflow(workflow: Workflow) -> bool:
    """Whether the workflow retires by its whole tree (scope "workflow", the default) rather than by the
    first question alone."""
    return (workflow.retirement or {}).get("scope", "workflow") == "workflow"


def tree_order(tasks: Mapping[str, Any]) -> list[str]:
    """The tasks reachable from the first one, each after every task that leads to it (the engine's order)."""
    from aggregation.workflow import _topological_order  # the engine's own order, one definition

    return _topological_order(tasks["tasks"], tasks["first_task"])


def machine_heads(workflow: Workflow) -> Heads:
    """The questions the CNN answers, ``(key, n_answers)`` in the tree's order: every single-choice
    question with whole-workflow retirement, the first question alone under the first-question rule
    (which must then be single choice). Raises ``ValueError`` where there is none."""
    if not whole_workflow(workflow):
        return (first_question(workflow),)
    tasks = workflow.tasks["tasks"]
    heads = tuple((key, len(tasks[key]["answers"])) for key in tree_order(workflow.tasks) if tasks[key].get("type") == "single")
    if not heads:
        raise ValueError("the machine answers single-choice questions; this workflow has none")
    return heads


def mirror_swaps(workflow: Workflow, heads: Sequence[tuple[str, int]] | None = None) -> dict[str, list[list[int]]]:
    """``{key: pairs}``: the answers a mirror image exchanges, for the heads whose question declares them."""
    tasks = workflow.tasks["tasks"]
    keys = [key for key, _ in (heads if heads is not None else machine_heads(workflow))]
    return {key: [list(pair) for pair in tasks[key]["mirror_swaps"]] for key in keys if tasks[key].get("mirror_swaps")}


def stored_swaps(heads: Sequence[tuple[str, int]], swaps: Mapping[str, Any]) -> dict[str, tuple[tuple[int, int], ...]]:
    """``swaps`` as a CNN stores them (``GalaxyClassifier.mirror_swaps``): what a reused CNN must match."""
    from ml.model import ModelConfig

    return dict(ModelConfig(heads=tuple(heads), mirror_swaps=swaps).mirror_swaps)


def fits(classifier: Any, heads: Sequence[tuple[str, int]], swaps: Mapping[str, Any]) -> bool:
    """Whether a stored CNN has the workflow's heads and mirror swaps now (else it starts afresh)."""
    return classifier.heads == tuple(heads) and classifier.mirror_swaps == stored_swaps(heads, swaps)


def answer_path(workflow: Workflow, answers: Mapping[str, int]) -> list[str]:
    """The machine's questions that its own ``answers`` lead to, in order, from the first task: a
    single-choice question leads where its answer points, other tasks where their ``next`` does; the
    path stops at a single-choice question the machine does not answer."""
    tasks = workflow.tasks["tasks"]
    path, key, seen = [], workflow.tasks["first_task"], set()
    while key is not None and key not in seen:
        seen.add(key)
        task = tasks[key]
        if task.get("type") == "single":
            if key not in answers:
                break
            path.append(key)
            key = task["answers"][int(answers[key])].get("next")
        else:
            key = task.get("next")
    return path


def reach_function(workflow: Workflow) -> Callable[[Mapping[str, Sequence[float]]], dict[str, float]]:
    """A function from per-question posteriors (a stored posterior's, or the CNN's) to each task's
    reach (``aggregation.workflow.WorkflowAggregator.reach``: the product of the answer posteriors
    along its path); a single-choice question not given has uniform answers."""
    import numpy as np

    from aggregation.workflow import WorkflowAggregator

    tasks = workflow.tasks["tasks"]
    aggregator = WorkflowAggregator(tasks, first_task=workflow.tasks["first_task"])
    uniform = {key: np.full(len(task["answers"]), 1 / len(task["answers"])) for key, task in tasks.items() if task.get("type") == "single"}

    def reach(posteriors: Mapping[str, Sequence[float]]) -> dict[str, float]:
        given = {key: np.asarray(p, dtype=float) for key, p in posteriors.items() if key in uniform and len(p) == len(uniform[key])}
        return aggregator.reach(None, uniform | given)

    return reach


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
