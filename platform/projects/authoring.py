"""Services of the project builder: the scientist role, new projects and draft workflows, launch.

A project made in the builder is owned by the scientist who made it; a workflow starts as a draft
(paused, never launched) with a one-question tree, so that its tree can be edited freely until it
is launched (projects/versioning.py).
"""

from __future__ import annotations

import copy
from typing import Any

from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from projects.errors import InputRejected
from projects.models import Project, SubjectWorkflowState, Workflow, WorkflowVersion
from projects.task_tree import validate_task_tree
from projects.versioning import record_version, successor

SCIENTISTS_GROUP = "scientists"
BUILD_PERMISSION = "projects.build_projects"
STARTER_TASKS: dict = {
    "first_task": "T0",
    "tasks": {
        "T0": {"type": "single", "question": "Your first question", "answers": [{"label": "Yes"}, {"label": "No"}]},
    },
}


def is_scientist(user: Any) -> bool:
    """The scientist role: who may use the project builder (superusers have every permission)."""
    return bool(getattr(user, "is_authenticated", False) and user.is_active and user.has_perm(BUILD_PERMISSION))


def grant_scientist(user: Any) -> None:
    """Give ``user`` the scientist role: membership of the "scientists" group, which holds the
    builder's permission (made here too: a test database flushed after its migrations lacks it)."""
    content_type = ContentType.objects.get_for_model(Project)
    permission, _ = Permission.objects.get_or_create(
        codename="build_projects", content_type=content_type,
        defaults={"name": "Can create projects and workflows in the project builder"},
    )
    group, _ = Group.objects.get_or_create(name=SCIENTISTS_GROUP)
    group.permissions.add(permission)
    user.groups.add(group)
    for cache in ("_perm_cache", "_group_perm_cache", "_user_perm_cache"):
        user.__dict__.pop(cache, None)


def _text(data: Any, name: str) -> str:
    return str(data.get(name, "") or "").strip()


def create_project(owner: Any, data: Any) -> Project:
    """A new project owned by ``owner`` from ``title``, ``slug`` (from the title when empty),
    ``description`` and ``attribution``; InputRejected by field."""
    title, slug = _text(data, "title"), _text(data, "slug")
    slug = slug or slugify(title)[:50]
    errors: dict[str, list[str]] = {}
    if not title:
        errors["title"] = ["a project needs a title"]
    elif len(title) > 200:
        errors["title"] = ["at most 200 characters"]
    if not slug:
        errors.setdefault("slug", []).append("a project needs a slug (letters, digits, '-' or '_')")
    elif slugify(slug) != slug or len(slug) > 50:
        errors["slug"] = ["lower-case letters, digits, '-' or '_', at most 50"]
    elif Project.objects.filter(slug=slug).exists():
        errors["slug"] = [f"a project with the slug {slug!r} exists already"]
    if errors:
        raise InputRejected(errors)
    try:
        with transaction.atomic():
            project = Project.objects.create(
                slug=slug, title=title, description=_text(data, "description"), attribution=_text(data, "attribution"),
            )
    except IntegrityError:  # the same slug created meanwhile
        raise InputRejected({"slug": [f"a project with the slug {slug!r} exists already"]}) from None
    project.owners.add(owner)
    return project


def create_draft_workflow(project: Project, data: Any, user: Any) -> Workflow:
    """A new, paused workflow of ``project`` named ``name``, with a one-question tree to edit."""
    name = _text(data, "name")
    if not name:
        raise InputRejected({"name": ["a workflow needs a name"]})
    if len(name) > 200:
        raise InputRejected({"name": ["at most 200 characters"]})
    with transaction.atomic():
        workflow = Workflow.objects.create(project=project, name=name, tasks=copy.deepcopy(STARTER_TASKS), active=False)
        record_version(workflow, WorkflowVersion.Change.CREATED, user)
    return workflow


def launch_problems(workflow: Workflow) -> list[str]:
    """Why the workflow cannot be launched yet (empty when it can)."""
    problems = [f"the task tree: {problem}" for problem in validate_task_tree(workflow.tasks)]
    later = successor(workflow)
    if later is not None:
        problems.append(f"version {later.version_text} (workflow {later.pk}) replaced it: launch that one")
    if not SubjectWorkflowState.objects.filter(workflow=workflow).exists():
        problems.append("it has no subjects yet: upload some first")
    return problems


def launch(workflow: Workflow, user: Any) -> bool:
    """Serve the workflow to volunteers (InputRejected under ``launch`` when it cannot be); returns
    whether anything changed. From now on a change of what its answers mean makes a new version."""
    from dashboards.services import set_active

    problems = launch_problems(workflow)
    if problems:
        raise InputRejected({"launch": problems})
    return set_active(workflow, True, user)
