"""Thin views of the project builder: its pages, and the JSON endpoints its fetch calls use. Bad input
is an HTTP 400 with the field errors as JSON (``{"field": ["message", ...]}``), the messages of the
services that judge it — the admin page's for retirement, gold rate and machine settings — and
changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import RequestDataTooBig, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect, ensure_csrf_cookie
from django.views.decorators.http import require_POST, require_safe
from rest_framework.exceptions import ParseError

from builder import selectors
from builder.permissions import project_builder, scientist_required, workflow_builder
from builder.uploads import LimitedUploadHandler
from classifications.parsers import check_depth
from dashboards import services as admin_services
from live.services import LockBusy
from projects import authoring, uploads, versioning
from projects.errors import InputRejected
from projects.models import Project, Workflow


def json_errors(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The services' refusals as JSON: InputRejected and the admin services' SettingsError (400)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except InputRejected as error:
            return JsonResponse(error.errors, status=error.status)
        except admin_services.SettingsError as error:
            return JsonResponse(error.errors, status=400)
        except LockBusy:
            return JsonResponse({"detail": ["the live loop is busy with this workflow: try again in a minute"]}, status=503)

    return wrapper


def builder_url(workflow: Workflow) -> str:
    return reverse("builder:workflow", kwargs={"slug": workflow.project.slug, "workflow_id": workflow.pk})


# ---- pages -------------------------------------------------------------------------------------


@require_safe
@ensure_csrf_cookie
@scientist_required
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "builder/index.html", {"projects": selectors.buildable_projects(request.user)})


@require_safe
@ensure_csrf_cookie
@project_builder
def project(request: HttpRequest, project: Project) -> HttpResponse:
    return render(request, "builder/project.html", {"project": project, "workflows": selectors.project_workflows(project)})


@require_safe
@ensure_csrf_cookie
@workflow_builder
def workflow(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    ids = {"workflow_id": workflow.pk}
    pages = {"slug": workflow.project.slug, "workflow_id": workflow.pk}
    endpoints = {
        name.replace("-", "_"): reverse(f"builder:{name}", kwargs=ids)
        for name in ("check-tree", "save-tree", "upload", "retirement", "gold-rate", "machine", "launch", "pause")
    }
    return render(
        request,
        "builder/workflow.html",
        {
            "workflow": workflow,
            "project": workflow.project,
            "endpoints": endpoints,
            "pages": {name: reverse(f"web:{route}", kwargs=pages)
                      for name, route in (("classify", "classify"), ("dashboard", "dashboard"), ("admin", "workflow-admin"))},
            "preview_subjects": selectors.preview_subjects(workflow),
            "subject_sets": selectors.workflow_subject_sets(workflow),
            "versions": selectors.tree_versions(workflow),
            "lineage": selectors.lineage(workflow),
            "replaced_by": versioning.successor(workflow),
            "launched": versioning.is_launched(workflow),
            "limits": uploads.upload_limits(),
            "values": selectors.settings_values(workflow),
        },
    )


# ---- projects and workflows --------------------------------------------------------------------


@require_POST
@scientist_required
@json_errors
def create_project(request: HttpRequest) -> HttpResponse:
    created = authoring.create_project(request.user, request.POST)
    return JsonResponse({"id": created.pk, "url": reverse("builder:project", kwargs={"slug": created.slug})}, status=201)


@require_POST
@project_builder
@json_errors
def create_workflow(request: HttpRequest, project: Project) -> HttpResponse:
    created = authoring.create_draft_workflow(project, request.POST, request.user)
    return JsonResponse({"id": created.pk, "url": builder_url(created)}, status=201)


# ---- the task tree -----------------------------------------------------------------------------


def _posted_tasks(request: HttpRequest) -> Any:
    """The ``tasks`` of a JSON body ``{"tasks": tree}``."""
    try:
        text = request.body.decode("utf-8")
        check_depth(text)
        data = json.loads(text)
    except RequestDataTooBig:
        raise InputRejected({"tasks": ["the tree is larger than the request limit"]}, status=413) from None
    except (ValueError, ParseError) as error:
        raise InputRejected({"tasks": [f"not valid JSON ({error})"]}) from None
    if not isinstance(data, dict) or "tasks" not in data:
        raise InputRejected({"tasks": ['send {"tasks": <the task tree>}']})
    return data["tasks"]


@require_POST
@workflow_builder
@json_errors
def check_tree(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    """What saving this tree would do (the preview shows only a tree that passes)."""
    plan = versioning.plan_tree_change(workflow, _posted_tasks(request))
    return JsonResponse({"change": plan.change, "new_workflow": plan.new_workflow, "version": plan.version})


@require_POST
@workflow_builder
@json_errors
def save_tree(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    saved = versioning.save_tree(workflow, _posted_tasks(request), request.user)
    return JsonResponse({
        "workflow": saved.workflow.pk, "version": saved.workflow.version_text, "change": saved.change,
        "new_workflow": saved.new_workflow, "url": builder_url(saved.workflow),
    })


# ---- subjects ----------------------------------------------------------------------------------


@csrf_exempt  # checked by _store_upload, after the limits are in place (the CSRF check reads the body)
@require_POST
@workflow_builder
@json_errors
def upload(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    """Images and their manifest (multipart): refused from the declared size before the body is
    read, file by file as it streams in, then judged whole by ``projects.uploads``."""
    limits = uploads.upload_limits()
    refused = uploads.body_size_problem(request.META.get("CONTENT_LENGTH"), limits)
    if refused is not None:
        raise refused
    request.upload_handlers.insert(0, LimitedUploadHandler(request, limits))
    try:
        return _store_upload(request, workflow, limits)
    except TooManyFilesSent:
        raise InputRejected({"images": [f"more than {limits.max_files} files at once"]}, status=413) from None


@csrf_protect
def _store_upload(request: HttpRequest, workflow: Workflow, limits: uploads.UploadLimits) -> HttpResponse:
    report = uploads.upload_subjects(
        workflow, request.POST.get("subject_set", ""), request.FILES.get("manifest"), request.FILES.getlist("images"),
        request.user, limits,
    )
    return JsonResponse(
        {"created": report.created, "gold": report.gold, "queued": report.queued,
         "subject_set": {"id": report.subject_set.pk, "name": report.subject_set.name}},
        status=201,
    )


# ---- settings, launch and pause: the admin page's services -------------------------------------


@require_POST
@workflow_builder
@json_errors
def retirement(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    settings = admin_services.parse_retirement_form(request.POST)
    retired = admin_services.update_retirement_settings(workflow, settings, request.user)
    return JsonResponse({"retirement": settings, "retired_now": retired})


@require_POST
@workflow_builder
@json_errors
def gold_rate(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    rate = admin_services.update_gold_rate(workflow, request.POST.get("gold_feedback_rate"), request.user)
    return JsonResponse({"gold_feedback_rate": rate})


@require_POST
@workflow_builder
@json_errors
def machine(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    settings = admin_services.update_active_learning(workflow, admin_services.parse_active_learning_form(request.POST), request.user)
    return JsonResponse({"active_learning": settings})


@require_POST
@workflow_builder
@json_errors
def launch(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    authoring.launch(workflow, request.user)
    return JsonResponse({"active": True})


@require_POST
@workflow_builder
@json_errors
def pause(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    admin_services.set_active(workflow, False, request.user)
    return JsonResponse({"active": False})
