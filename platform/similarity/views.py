"""The similarity page of a workflow (for its owners and staff): a thin shell that similarity.ts
fills from the API ("more like this", unusual subjects, the map, the actions)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_safe

from dashboards.permissions import manager_required
from dashboards.selectors import question_keys
from projects.models import Workflow


@require_safe
@ensure_csrf_cookie
@manager_required
def page(request: HttpRequest, workflow: Workflow) -> HttpResponse:
    pages = {"slug": workflow.project.slug, "workflow_id": workflow.pk}
    tasks = workflow.tasks["tasks"]
    config = {
        "workflow": workflow.pk,
        "api": reverse("similarity:spaces", kwargs={"pk": workflow.pk}).removesuffix("spaces/"),
        "subject_page": reverse("web:subject", kwargs={**pages, "subject_id": 0}).removesuffix("0/"),
        "examples": [int(i) for i in request.GET.get("subjects", "").split(",") if i.strip().isdigit()][:100],
        "questions": [{"key": key, "answers": [a.get("label", str(n)) for n, a in enumerate(tasks[key].get("answers", []))]}
                      for key in question_keys(workflow)],
    }
    urls = {
        "dashboard": reverse("web:dashboard", kwargs=pages),
        "admin": reverse("web:workflow-admin", kwargs=pages),
        "classify": reverse("web:classify", kwargs=pages),
    }
    return render(request, "similarity/similarity.html",
                  {"workflow": workflow, "project": workflow.project, "urls": urls, "config": config, "page": "similarity"})
