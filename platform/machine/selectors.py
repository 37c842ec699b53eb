"""Read-only queries of the machine: its versions, the one serving, a version's line (the versions
promoted before it), its agent's volunteer ids."""

from __future__ import annotations

from django.db.models import QuerySet

from machine.models import MachineAgent, ModelVersion
from projects.models import Workflow


def model_versions(workflow: Workflow) -> QuerySet[ModelVersion]:
    """Every version of the workflow's model, newest first (the model bytes deferred)."""
    return ModelVersion.objects.filter(workflow=workflow).defer("model").order_by("-version")


def current_model(workflow: Workflow) -> ModelVersion | None:
    """The version serving now: the most recently promoted one still in the promoted state."""
    return (
        ModelVersion.objects.filter(workflow=workflow, state=ModelVersion.State.PROMOTED)
        .order_by("-promoted_at", "-version")
        .first()
    )


def ancestors(version: ModelVersion, n: int) -> list[ModelVersion]:
    """The (at most) ``n`` versions promoted before ``version`` in its line: parent, grandparent, ..."""
    line: list[ModelVersion] = []
    ancestor = version.parent
    while ancestor is not None and len(line) < n:
        line.append(ancestor)
        ancestor = ancestor.parent
    return line


def ancestor_versions(version: ModelVersion, n: int) -> list[int]:
    """The numbers of ``ancestors(version, n)``."""
    return [a.version for a in ancestors(version, n)]


def gold_line(version: ModelVersion, key: str | None = None) -> list[tuple[dict, bool]]:
    """``(gold_predictions, trained)`` of every version promoted before ``version`` in its line,
    oldest first (one query, without the weights): for question ``key``, or with ``None`` its first
    question's predictions and its standing overall. A version from before the machine answered
    several questions has its first question's predictions only, and none for the others."""
    legacy_key = None
    if key is not None:
        legacy_key = Workflow.objects.filter(pk=version.workflow_id).values_list("tasks__first_task", flat=True).first()
    rows = {}
    for pk, parent, predictions, by_question, metrics in ModelVersion.objects.filter(workflow_id=version.workflow_id).values_list(
            "pk", "parent_id", "gold_predictions", "gold_predictions_by_question", "metrics"):
        if key is None:
            rows[pk] = (parent, predictions, bool(metrics.get("trained")))
        elif metrics.get("questions") is not None:
            rows[pk] = (parent, (by_question or {}).get(key, {}), bool((metrics["questions"].get(key) or {}).get("trained")))
        else:
            legacy = key == legacy_key
            rows[pk] = (parent, predictions if legacy else {}, legacy and bool(metrics.get("trained")))
    line, parent = [], version.parent_id
    while parent is not None and parent in rows and len(line) < len(rows):
        parent, predictions, trained = rows[parent]
        line.append((predictions, trained))
    return line[::-1]


def machine_volunteer_ids(workflow_id: int) -> set[int]:
    """Volunteers of this workflow that are machines (the live loop trusts only their retire flags)."""
    return set(MachineAgent.objects.filter(workflow_id=workflow_id).values_list("volunteer_id", flat=True))
