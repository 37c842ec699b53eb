"""Read-only queries of the project builder's pages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.files.storage import default_storage
from django.db.models import Count, Q, QuerySet

from projects.models import Project, SubjectSet, SubjectWorkflowState, Workflow, WorkflowVersion

PREVIEW_SUBJECTS = 3


def buildable_projects(user: Any) -> QuerySet[Project]:
    """The projects ``user`` may build: those it owns (staff: all), with their workflow counts."""
    projects = Project.objects.all() if user.is_staff else Project.objects.filter(owners=user)
    return projects.annotate(workflow_count=Count("workflows", distinct=True)).order_by("title", "id")


@dataclass(frozen=True)
class WorkflowRow:
    workflow: Workflow
    subjects: int
    classifications: int
    replaced_by: Workflow | None


def project_workflows(project: Project) -> list[WorkflowRow]:
    workflows = (
        Workflow.objects.filter(project=project)
        .select_related("next_version")
        .annotate(subjects=Count("subject_states", distinct=True), classified=Count("classifications", distinct=True))
        .order_by("name", "-version_major", "id")
    )
    return [WorkflowRow(w, w.subjects, w.classified, getattr(w, "next_version", None)) for w in workflows]


def lineage(workflow: Workflow) -> list[Workflow]:
    """Every major version of this workflow, the earliest first (each a workflow of its own)."""
    earlier: list[Workflow] = []
    current = workflow.previous_version
    while current is not None and len(earlier) < 1000:
        earlier.append(current)
        current = current.previous_version
    later: list[Workflow] = []
    current = Workflow.objects.filter(previous_version=workflow).first()
    while current is not None and len(later) < 1000:
        later.append(current)
        current = Workflow.objects.filter(previous_version=current).first()
    return [*reversed(earlier), workflow, *later]


def tree_versions(workflow: Workflow) -> list[WorkflowVersion]:
    return list(workflow.versions.select_related("created_by").order_by("-major", "-minor"))


@dataclass(frozen=True)
class SubjectSetRow:
    subject_set: SubjectSet
    subjects: int
    gold: int


def workflow_subject_sets(workflow: Workflow) -> list[SubjectSetRow]:
    sets = workflow.subject_sets.annotate(
        n=Count("subjects", distinct=True), n_gold=Count("subjects", filter=Q(subjects__gold__isnull=False), distinct=True)
    ).order_by("id")
    return [SubjectSetRow(s, s.n, s.n_gold) for s in sets]


def preview_subjects(workflow: Workflow) -> list[dict]:
    """A few of the workflow's own subjects as the volunteer API serves them (images and public
    metadata), for the preview; empty before any upload (the preview then shows a placeholder)."""
    states = (
        SubjectWorkflowState.objects.filter(workflow=workflow)
        .select_related("subject").prefetch_related("subject__images").order_by("subject_id")[:PREVIEW_SUBJECTS]
    )
    return [
        {
            "id": state.subject_id,
            "retired": False,
            "metadata": state.subject.public_metadata,
            "images": [{"url": default_storage.url(image.file.name), "width": image.width, "height": image.height}
                       for image in state.subject.images.all()],
        }
        for state in states
    ]


def settings_values(workflow: Workflow) -> dict[str, Any]:
    """What the settings forms show: the admin page's own form values (one description of them)."""
    from dashboards.services import ACQUISITION_STRATEGIES, ACTIVE_LEARNING_DEFAULTS
    from web.views import _retirement_values

    return {
        "retirement": _retirement_values(workflow, {}),
        "gold_feedback_rate": workflow.gold_feedback_rate,
        "machine": {**ACTIVE_LEARNING_DEFAULTS, **(workflow.active_learning or {})},
        "strategies": ACQUISITION_STRATEGIES,
    }
