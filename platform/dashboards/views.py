"""Thin views of the dashboards: the live statistics and a subject's history as JSON, the
downloads, and the admin actions (form posts that redirect back to the admin page, or show it again
with the field errors and HTTP 400)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from dashboards import downloads, selectors, services
from dashboards.permissions import manager_required
from projects.models import SubjectWorkflowState, Workflow


@require_safe
@manager_required
def statistics(request: HttpRequest, workflow: Workflow) -> JsonResponse:
    """Polled every few seconds by the dashboard; ``?after=<event id>`` also returns the retirement
    events that followed that cursor."""
    data = dict(selectors.dashboard_statistics(workflow))
    data["events"] = selectors.recent_events(workflow, request.GET.get("after") or "0-0")
    return JsonResponse(data)


@require_safe
@manager_required
def subject(request: HttpRequest, workflow: Workflow, subject_id: int) -> JsonResponse:
    state = get_object_or_404(SubjectWorkflowState.objects.select_related("subject"), workflow=workflow, subject_id=subject_id)
    return JsonResponse(selectors.subject_detail(workflow, state))


FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json", "parquet": "application/vnd.apache.parquet"}
KINDS = {"results", "classifications", "panoptes-classifications"}


@require_safe
@manager_required
def download(request: HttpRequest, workflow: Workflow, kind: str, fmt: str) -> HttpResponse:
    """``results``, ``classifications`` or ``panoptes-classifications`` (Zooniverse's export format), as
    CSV, JSON or Parquet."""
    if fmt not in FORMATS or kind not in KINDS:
        raise Http404("unknown download")
    if kind == "results":
        columns, rows = selectors.result_columns(workflow), selectors.result_rows(workflow)
        types = selectors.result_column_types(workflow)
    elif kind == "classifications":
        columns, rows = selectors.CLASSIFICATION_COLUMNS, selectors.classification_rows(workflow)
        types = selectors.CLASSIFICATION_COLUMN_TYPES
    else:
        columns, rows = selectors.PANOPTES_COLUMNS, selectors.panoptes_rows(workflow)
        types = selectors.PANOPTES_COLUMN_TYPES
    if fmt == "csv":
        chunks = downloads.csv_lines(columns, rows)
    elif fmt == "json":
        chunks = downloads.json_chunks(rows)
    else:
        chunks = downloads.parquet_chunks(columns, types, rows)
    return downloads.streamed(chunks, f"{workflow.project.slug}-workflow{workflow.pk}-{kind}.{fmt}", FORMATS[fmt])


def _admin_page(workflow: Workflow) -> str:
    return reverse("web:workflow-admin", kwargs={"slug": workflow.project.slug, "workflow_id": workflow.pk})


def _done(request: HttpRequest, workflow: Workflow, message: str) -> HttpResponse:
    messages.success(request, message)
    return redirect(_admin_page(workflow), permanent=False)


def _invalid(request: HttpRequest, workflow: Workflow, error: services.SettingsError) -> HttpResponse:
    from web.views import render_workflow_admin

    return render_workflow_admin(request, workflow, errors=error.errors, form=request.POST, status=400)


def _unavailable(request: HttpRequest, workflow: Workflow, error: Exception, status: int = 503) -> HttpResponse:
    """503 when the machine app is missing; 409 when it refuses (e.g. no earlier version to roll back to)."""
    from web.views import render_workflow_admin

    return render_workflow_admin(request, workflow, errors={"machine": [str(error)]}, status=status)


@require_POST
@manager_required
def update_retirement(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    try:
        settings = services.parse_retirement_form(request.POST)
        retired = services.update_retirement_settings(workflow, settings, request.user)
    except services.SettingsError as error:
        return _invalid(request, workflow, error)
    return _done(request, workflow, f"Retirement rules saved and the log re-aggregated; {retired} subject(s) retired by the new rules.")


@require_POST
@manager_required
def update_gold_rate(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    try:
        rate = services.update_gold_rate(workflow, request.POST.get("gold_feedback_rate"), request.user)
    except services.SettingsError as error:
        return _invalid(request, workflow, error)
    return _done(request, workflow, f"Gold feedback rate set to {rate:g}.")


@require_POST
@manager_required
def update_active_learning(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    try:
        services.update_active_learning(workflow, services.parse_active_learning_form(request.POST), request.user)
    except services.SettingsError as error:
        return _invalid(request, workflow, error)
    return _done(request, workflow, "Active-learning settings saved.")


@require_POST
@manager_required
def pause(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    changed = services.set_active(workflow, False, request.user)
    return _done(request, workflow, "Workflow paused: no subjects are served." if changed else "The workflow was already paused.")


@require_POST
@manager_required
def resume(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    changed = services.set_active(workflow, True, request.user)
    return _done(request, workflow, "Workflow resumed." if changed else "The workflow was already running.")


@require_POST
@manager_required
def retrain(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    try:
        services.retrain_now(workflow, request.user)
    except services.MachineUnavailable as error:
        return _unavailable(request, workflow, error)
    return _done(request, workflow, "Retraining requested; the new model version appears below when it is trained.")


@require_POST
@manager_required
def promote(request: HttpRequest, workflow: Workflow, version_id: int) -> HttpResponse:
    try:
        version = services.promote(workflow, version_id, request.user)
    except services.MachineUnavailable as error:
        return _unavailable(request, workflow, error)
    except services.SettingsError as error:
        return _invalid(request, workflow, error)
    except ValueError as error:  # not a trained version
        return _unavailable(request, workflow, error, status=409)
    return _done(request, workflow, f"Model version {version.version} promoted: it serves now.")


@require_POST
@manager_required
def roll_back(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    try:
        previous = services.roll_back(workflow, request.user)
    except services.MachineUnavailable as error:
        return _unavailable(request, workflow, error)
    except LookupError as error:
        return _unavailable(request, workflow, error, status=409)
    return _done(request, workflow, f"Rolled back: model version {previous.version} serves again.")
