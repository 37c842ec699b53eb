"""Page views: thin shells; the classifier runs in the browser against the API. The scientists'
dashboard, subject and admin pages are for project owners and staff (see dashboards.permissions)."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import get_script_prefix, reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_safe

from aggregation import defaults as engine_defaults
from aggregation.retirement import POLICY_SYNTAX
from dashboards import selectors as dashboard_selectors
from dashboards.permissions import managed_project_ids, manager_required
from dashboards.services import ACQUISITION_STRATEGIES, ACTIVE_LEARNING_DEFAULTS
from live.engine import DEFAULT_POLICY
from projects.models import SubjectWorkflowState, Workflow
from web.selectors import recent_subjects, volunteer_projects


@require_safe
@ensure_csrf_cookie
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "web/home.html", {"projects": volunteer_projects(), "managed": managed_project_ids(request.user)})


@require_safe
@ensure_csrf_cookie
def classify(request: HttpRequest, slug: str, workflow_id: int) -> HttpResponse:
    workflow = get_object_or_404(Workflow.objects.select_related("project"), pk=workflow_id, project__slug=slug)
    return render(
        request,
        "web/classify.html",
        {
            "workflow": workflow,
            "project": workflow.project,
            "api_root": f"{get_script_prefix()}api/",
            "csrf_cookie_name": settings.CSRF_COOKIE_NAME,
        },
    )


def _urls(workflow: Workflow) -> dict[str, str]:
    ids = {"workflow_id": workflow.pk}
    pages = {"slug": workflow.project.slug, "workflow_id": workflow.pk}
    return {
        "dashboard": reverse("web:dashboard", kwargs=pages),
        "admin": reverse("web:workflow-admin", kwargs=pages),
        "classify": reverse("web:classify", kwargs=pages),
        "statistics": reverse("dashboards:statistics", kwargs=ids),
        "subject_page": reverse("web:subject", kwargs={**pages, "subject_id": 0}).removesuffix("0/"),
        **{
            f"{kind}_{fmt}": reverse("dashboards:download", kwargs={**ids, "kind": kind, "fmt": fmt})
            for kind in ("results", "classifications")
            for fmt in ("csv", "json")
        },
    }


@require_safe
@manager_required
def dashboard(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    """The retirement dashboard: charts drawn by dashboard.ts from the statistics it polls."""
    return render(
        request,
        "web/dashboard.html",
        {"workflow": workflow, "project": workflow.project, "urls": _urls(workflow), "subjects": recent_subjects(workflow)},
    )


@require_safe
@manager_required
def subject(request: HttpRequest, workflow: Workflow, subject_id: int) -> HttpResponse:
    state = get_object_or_404(SubjectWorkflowState.objects.select_related("subject"), workflow=workflow, subject_id=subject_id)
    detail = dashboard_selectors.subject_detail(workflow, state)
    return render(
        request,
        "web/subject.html",
        {"workflow": workflow, "project": workflow.project, "urls": _urls(workflow), "detail": detail},
    )


@require_safe
@manager_required
def workflow_admin(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    return render_workflow_admin(request, workflow)


def render_workflow_admin(
    request: HttpRequest, workflow: Workflow, errors: dict[str, list[str]] | None = None, form: Any = None, status: int = 200
) -> HttpResponse:
    """The admin page, also shown again (with ``status`` 400 and the field errors, the rejected input
    kept in the form) when an admin action's input is invalid."""
    active_learning = {**ACTIVE_LEARNING_DEFAULTS, **(workflow.active_learning or {})}
    form = form or {}
    values = {
        "retirement": _retirement_values(workflow, form),
        "gold_feedback_rate": form.get("gold_feedback_rate", workflow.gold_feedback_rate),
        **{key: form.get(key, value) for key, value in active_learning.items()},
    }
    if form and "acquisition" in form:
        values["machine_retirement"] = form.get("machine_retirement") in {"on", "true", "1"}
        values["enabled"] = form.get("enabled") in {"on", "true", "1"}
    return render(
        request,
        "web/workflow_admin.html",
        {
            "workflow": workflow,
            "project": workflow.project,
            "urls": _urls(workflow),
            "errors": errors or {},
            "values": values,
            "strategies": ACQUISITION_STRATEGIES,
            "policy_syntax": POLICY_SYNTAX,
            "engine_config": dashboard_selectors.engine_config_in_effect(workflow),
            "models": dashboard_selectors.model_versions(workflow),
            "audit": dashboard_selectors.audit_log(workflow),
        },
        status=status,
    )


def _retirement_values(workflow: Workflow, form: Any) -> dict[str, Any]:
    """What the retirement form shows: what was posted when it is shown again after an error (the
    retirement form posts ``scope``), else the workflow's settings; empty fields show the engine's
    defaults as placeholders. One row per question and drawing task, for ``required`` and its bar."""
    settings = workflow.retirement or {}
    posted = "scope" in form
    tasks = workflow.tasks["tasks"]
    kinds = {key: "question" if task.get("type") in ("single", "multiple") else "drawing"
             for key, task in tasks.items() if task.get("type") in ("single", "multiple", "drawing")}
    bar = settings.get("bar")
    if posted:
        getlist = getattr(form, "getlist", None)
        posted_required = getlist("required") if getlist else form.get("required", [])
        required = {posted_required} if isinstance(posted_required, str) else set(posted_required)
    else:
        required = set(settings.get("required", kinds))
    rows = [
        {
            "key": key,
            "kind": kind,
            "prompt": tasks[key].get("question") or tasks[key].get("instruction", ""),
            "required": key in required,
            "bar": form.get(f"bar.{key}", "") if posted else (bar.get(key, "") if isinstance(bar, dict) else ""),
            "default_bar": engine_defaults.QUESTION_BAR if kind == "question" else engine_defaults.DRAWING_BAR,
        }
        for key, kind in kinds.items()
    ]
    policy = settings.get("policy", "")
    stored = {
        "scope": settings.get("scope", "workflow"),
        "bar": "" if isinstance(bar, dict) or bar is None else bar,
        "min": settings.get("min", ""),
        "budget": settings.get("budget", ""),
        "policy": policy if isinstance(policy, str) else json.dumps(policy),
    }
    estimator = settings.get("estimator") or {}
    return {
        **{name: form.get(name, "") if posted else value for name, value in stored.items()},
        "estimator": form.get("estimator", json.dumps(estimator, indent=1) if estimator else ""),
        "tasks": rows,
        "defaults": {
            "min": engine_defaults.MIN_CLASSIFICATIONS, "min_drawing_only": engine_defaults.MIN_CLASSIFICATIONS_DRAWING_ONLY,
            "budget": engine_defaults.BUDGET, "policy": DEFAULT_POLICY,
            "question_bar": engine_defaults.QUESTION_BAR, "drawing_bar": engine_defaults.DRAWING_BAR,
        },
        "first_task_is_question": kinds.get(workflow.tasks["first_task"]) == "question",
    }
