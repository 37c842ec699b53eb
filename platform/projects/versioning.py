"""Workflow versions: changing a task tree never reinterprets the classifications made under it.

Versions are numbered as on Zooniverse, ``major.minor``. A change is *major* when it changes what a
stored answer means: the tasks, their types, the first task, a question's or a drawing task's
wording, the answers (their number, order, labels and branches), the tools (number, type, label).
Anything else is *minor*: help texts, answer examples, a tool's min/max marks, mirror swaps (what a
mirror image does to the answers), extra keys. Wording counts as major because the platform cannot
tell a typo from a new question; a scientist fixes wording freely before launch.

How a change is saved:
- before launch (never active, no classification): in place, the version moves (major or minor);
- after launch, minor: in place, minor + 1;
- after launch, major: a new workflow, version major + 1.0, with the same settings and subject sets
  and a fresh queue, linked to the old one (``Workflow.previous_version``); the old one is paused and
  keeps its tree, its classifications, posteriors, retirements, dashboard and downloads.

Why a new workflow rather than versions inside one (Zooniverse's way, with each classification
recording its version): everything downstream reads a workflow's classifications against
``Workflow.tasks`` by workflow id — the API's validation (from a per-process cache that may be a few
seconds old), the live loop's ordered log and its engine state in Redis, the machine's models and
training labels, the dashboards and downloads. With one tree per workflow that stays true by
construction: a classification checked against the old tree (a browser that loaded it, a process's
cached workflow) lands in the workflow that has that tree, and no consumer needs to filter by
version. ``Workflow.launched_at`` marks the point after which a volunteer may hold the tree.

Every saved tree is kept (``WorkflowVersion``). ``log_tree_problem`` is the check the live loop can
make before it feeds a workflow's log to the engine: it names a tree changed behind the builder's
back (a shell, a raw UPDATE) so that the log is not applied under it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from django.db import transaction

from projects.errors import InputRejected
from projects.models import SubjectWorkflowState, Workflow, WorkflowVersion
from projects.task_tree import validate_task_tree

Change = Literal["none", "minor", "major"]


def _words(text: Any) -> Any:
    return " ".join(text.split()) if isinstance(text, str) else text


def tree_meaning(tree: dict) -> dict:
    """The part of a tree that says what a stored annotation means (a change to it is major)."""
    tasks: dict[str, dict] = {}
    for key, task in (tree.get("tasks") or {}).items():
        kind = task.get("type")
        if kind in {"single", "multiple"}:
            answers = [{"label": _words(answer.get("label"))} | ({"next": answer.get("next")} if kind == "single" else {})
                       for answer in task.get("answers") or []]
            tasks[key] = {"type": kind, "question": _words(task.get("question")), "answers": answers}
        else:
            tools = [{"type": tool.get("type"), "label": _words(tool.get("label"))} for tool in task.get("tools") or []]
            tasks[key] = {"type": kind, "instruction": _words(task.get("instruction")), "tools": tools}
        if kind != "single":
            tasks[key]["next"] = task.get("next")
    return {"first_task": tree.get("first_task"), "tasks": tasks}


def change_kind(old: dict, new: dict) -> Change:
    if old == new:
        return "none"
    return "major" if tree_meaning(old) != tree_meaning(new) else "minor"


def is_launched(workflow: Workflow) -> bool:
    """Whether a volunteer may hold this workflow's tree, or has classified under it."""
    from classifications.models import Classification

    return bool(workflow.launched_at or workflow.active or Classification.objects.filter(workflow=workflow).exists())


def successor(workflow: Workflow) -> Workflow | None:
    return Workflow.objects.filter(previous_version=workflow).first()


@dataclass(frozen=True)
class TreePlan:
    """What saving a tree would do: the change, whether it makes a new workflow, the version after."""

    change: Change
    new_workflow: bool
    version: str


def plan_tree_change(workflow: Workflow, tasks: Any) -> TreePlan:
    """Check a tree for ``workflow`` as saving it would (InputRejected by field, nothing changed) and
    say what saving it would do."""
    from classifications.parsers import json_value_problem

    problem = json_value_problem(tasks)
    errors = [problem] if problem else validate_task_tree(tasks)
    if errors:
        raise InputRejected({"tasks": errors})
    later = successor(workflow)
    if later is not None:
        raise InputRejected({"workflow": [f"version {later.version_text} (workflow {later.pk}) replaced this one: edit that"]}, status=409)
    change = change_kind(workflow.tasks, tasks)
    if change == "none":
        return TreePlan("none", False, workflow.version_text)
    from live.engine import validate_engine_config

    problems = validate_engine_config(workflow.retirement or {}, tasks)
    if problems:
        raise InputRejected({"retirement": [f"the retirement settings do not fit the new tree ({problem}); change them first"
                                            for problem in problems]})
    if change == "major":
        return TreePlan("major", is_launched(workflow), f"{workflow.version_major + 1}.0")
    return TreePlan("minor", False, f"{workflow.version_major}.{workflow.version_minor + 1}")


def record_version(workflow: Workflow, change: str, user: Any = None) -> WorkflowVersion:
    """Keep the workflow's current tree as its current version's history row."""
    version, _ = WorkflowVersion.objects.update_or_create(
        workflow=workflow, major=workflow.version_major, minor=workflow.version_minor,
        defaults={"tasks": workflow.tasks, "change": change,
                  "created_by": user if getattr(user, "is_authenticated", False) else None},
    )
    return version


@dataclass(frozen=True)
class TreeSaved:
    workflow: Workflow  # the workflow that holds the tree now: a new one for a new major version
    change: Change
    new_workflow: bool


def save_tree(workflow: Workflow, tasks: Any, user: Any = None) -> TreeSaved:
    """Save a new task tree for ``workflow`` as the module docstring says (InputRejected by field when
    it is invalid, or does not fit the workflow's retirement settings, changing nothing)."""
    from projects.services import log_admin_action

    with transaction.atomic():
        # Locked: two saves of one workflow at once must not both make a new version of it.
        locked = Workflow.objects.select_for_update().select_related("project").get(pk=workflow.pk)
        plan = plan_tree_change(locked, tasks)
        if plan.change == "none":
            return TreeSaved(locked, "none", False)
        if not locked.versions.exists():  # made before versions were kept, or outside the builder
            record_version(locked, WorkflowVersion.Change.CREATED)
        if plan.new_workflow:
            saved = _new_major_version(locked, tasks, user)
        else:
            before = locked.version_text
            if plan.change == "major":
                locked.version_major, locked.version_minor = locked.version_major + 1, 0
            else:
                locked.version_minor += 1
            locked.tasks = tasks
            locked.save(update_fields=["tasks", "version_major", "version_minor", "updated_at"])
            record_version(locked, plan.change, user)
            log_admin_action(locked, user, "tree_updated", {"change": plan.change, "before": before, "after": locked.version_text})
            if plan.change == "major":
                _fresh_queue(locked)
            saved = locked
    if plan.change == "major" and not plan.new_workflow:
        _reset_engine_config(saved)
    return TreeSaved(saved, plan.change, plan.new_workflow)


def _new_major_version(old: Workflow, tasks: dict, user: Any) -> Workflow:
    """The next major version of a launched workflow: a new workflow with the same settings and
    subject sets (a fresh queue: the old answers do not answer the new tree); the old one paused."""
    from projects.services import link_subject_set, log_admin_action

    new = Workflow.objects.create(
        project=old.project, name=old.name, tasks=tasks, active=old.active, retirement=old.retirement,
        gold_feedback_rate=old.gold_feedback_rate, active_learning=old.active_learning,
        field_guide=old.field_guide, tutorial=old.tutorial,
        version_major=old.version_major + 1, version_minor=0, previous_version=old,
    )
    record_version(new, WorkflowVersion.Change.MAJOR, user)
    for subject_set in old.subject_sets.all():
        link_subject_set(new, subject_set)
    was_active = old.active
    old.active = False
    old.save(update_fields=["active", "updated_at"])
    log_admin_action(old, user, "superseded", {"by_workflow": new.pk, "version": new.version_text, "paused": was_active})
    log_admin_action(new, user, "new_version", {"of_workflow": old.pk, "previous_version": old.version_text})
    return new


def _fresh_queue(workflow: Workflow) -> None:
    """After an in-place major change (nothing classified yet): the queue's gold flags and priorities
    from the new tree, as ``link_subject_set`` would set them."""
    from projects.services import FRESH_JITTER, fresh_priority

    task_keys = set(workflow.tasks["tasks"])
    fresh = fresh_priority(workflow)
    states = list(SubjectWorkflowState.objects.filter(workflow=workflow).select_related("subject"))
    for state in states:
        state.is_gold = bool(state.subject.gold and task_keys & set(state.subject.gold))
        state.priority = fresh + random.random() * FRESH_JITTER
    SubjectWorkflowState.objects.bulk_update(states, ["is_gold", "priority"], batch_size=2000)


def _reset_engine_config(workflow: Workflow) -> None:
    """An in-place major change happens only before anything is classified, but the live loop may
    already keep engine settings built from the old tree: rebuild them (an empty log) from the new."""
    from live.engine import engine_config
    from live.models import WorkflowAggregation
    from live.services import reset_engine_config

    if WorkflowAggregation.objects.filter(workflow=workflow).exists():
        reset_engine_config(workflow.pk, engine_config(workflow.retirement or {}, workflow.tasks))


def log_tree_problem(workflow: Workflow) -> str | None:
    """Why the workflow's classifications must not be fed to an engine built from its current tree
    (None when they may): its tree means something else than the last version saved through the
    builder's services (or the Django admin), i.e. it was changed behind their back, and it has
    classifications. For the live loop to call where it builds an engine from the tree (replaying or
    catching up a log): two indexed queries."""
    from classifications.models import Classification

    latest = workflow.versions.order_by("-major", "-minor").first()
    if latest is None or tree_meaning(latest.tasks) == tree_meaning(workflow.tasks):
        return None
    if not Classification.objects.filter(workflow=workflow).exists():
        return None  # an empty log: nothing to reinterpret
    return (f"workflow {workflow.pk}: its task tree no longer means what version {latest.major}.{latest.minor} meant "
            "(changed outside the project builder); its classifications were made under that version. Restore that "
            "tree, or save the new one through the builder (a new version).")
