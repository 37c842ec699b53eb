"""Who may use the project builder: scientists (``projects.authoring.is_scientist``), and on an existing
project only its owners (or staff), as for its dashboards. Pages send anonymous visitors to the login
page; the JSON endpoints answer 403 with a message; volunteers get 403 everywhere."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404

from dashboards.permissions import can_manage
from projects.authoring import is_scientist
from projects.models import Project, Workflow

NOT_A_SCIENTIST = "The project builder is for scientists: ask an administrator for the scientist role."


def _refused(request: HttpRequest, message: str) -> HttpResponse:
    if request.method in ("GET", "HEAD"):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        raise PermissionDenied(message)
    return JsonResponse({"detail": [message]}, status=403)


def _scientist_problem(request: HttpRequest) -> str | None:
    if not request.user.is_authenticated:
        return "Sign in first."
    return None if is_scientist(request.user) else NOT_A_SCIENTIST


def scientist_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        problem = _scientist_problem(request)
        if problem:
            return _refused(request, problem)
        return view(request, *args, **kwargs)

    return wrapper


def project_builder(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Loads the project named by ``slug`` and passes it on, for its owners (and staff) who are scientists."""

    @wraps(view)
    def wrapper(request: HttpRequest, slug: str, *args: Any, **kwargs: Any) -> HttpResponse:
        project = get_object_or_404(Project, slug=slug)
        problem = _scientist_problem(request)
        if problem is None and not (request.user.is_staff or project.owners.filter(pk=request.user.pk).exists()):
            problem = "Only the project's owners may build it."
        if problem:
            return _refused(request, problem)
        return view(request, project, *args, **kwargs)

    return wrapper


def workflow_builder(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Loads the workflow named by ``workflow_id`` (and ``slug`` when the URL has one) and passes it on,
    for its project's owners (and staff) who are scientists."""

    @wraps(view)
    def wrapper(request: HttpRequest, workflow_id: int, *args: Any, slug: str | None = None, **kwargs: Any) -> HttpResponse:
        workflows = Workflow.objects.select_related("project")
        workflow = get_object_or_404(workflows, pk=workflow_id, **({"project__slug": slug} if slug else {}))
        problem = _scientist_problem(request)
        if problem is None and not can_manage(request.user, workflow):
            problem = "Only the project's owners may build it."
        if problem:
            return _refused(request, problem)
        return view(request, workflow, *args, **kwargs)

    return wrapper
