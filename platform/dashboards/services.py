"""Admin actions on a workflow: retirement rules, gold rate, active-learning settings, pause and
resume, retraining, promotion and roll-back of model versions. Each validates its input (raising
``SettingsError`` with field errors and changing nothing), applies it, and records who did what in
the audit log (``projects.AdminAction``)."""

from __future__ import annotations

import json
from typing import Any

from django.apps import apps
from django.db import transaction

from live import engine as engine_lib
from machine.config import ACQUISITIONS, DEFAULTS
from projects.models import Workflow
from projects.services import log_admin_action

# The machine app owns the active-learning settings and their defaults; the admin page edits a few.
ACQUISITION_STRATEGIES = ACQUISITIONS
ACTIVE_LEARNING_DEFAULTS: dict[str, Any] = DEFAULTS
_CHECKED = {"on", "true", "1", "yes"}


class SettingsError(ValueError):
    """Invalid admin input: ``errors`` maps each field to its problems."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{field}: {', '.join(problems)}" for field, problems in errors.items()))
        self.errors = errors


class MachineUnavailable(RuntimeError):
    """The machine app (platform/machine) is not installed, so there is no model to act on."""


def _float(raw: Any, field: str, low: float, high: float, errors: dict[str, list[str]]) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        errors.setdefault(field, []).append("must be a number")
        return None
    if not low <= value <= high:
        errors.setdefault(field, []).append(f"must lie between {low:g} and {high:g}")
        return None
    return value


PER_TASK_BAR = "bar."  # "bar.<task>": that task's own bar


def _number(raw: str) -> Any:
    """A form's number as int or float; anything else as the text typed, for the engine's validation
    to reject with its own message (one place says what a valid setting is)."""
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    return raw


def parse_retirement_form(data: Any) -> dict:
    """The retirement settings from the admin form (a QueryDict or dict), without judging them: that
    is ``update_retirement_settings``' job, through ``live.engine.validate_engine_config``.

    ``scope``: "workflow" or "first_question". With "workflow": ``required`` (checkboxes, one task key
    each), ``bar`` (one bar for every required task), ``bar.<task>`` (a task's own bar, over ``bar``),
    ``min``, ``budget``; with "first_question": ``policy`` (see POLICY_SYNTAX). The other scope's
    fields are ignored (switching scope never needs them emptied first); an empty field is left out
    (the engine's default). ``estimator``: its options as a JSON object (may be empty)."""
    def text(name: str) -> str:
        return str(data.get(name, "") or "").strip()

    settings: dict[str, Any] = {"scope": text("scope")}
    if settings["scope"] == "workflow":
        getlist = getattr(data, "getlist", None)
        required = getlist("required") if getlist else data.get("required", [])
        settings["required"] = [required] if isinstance(required, str) else list(required)
        common = text("bar")
        own = {key.removeprefix(PER_TASK_BAR): text(key) for key in data if key.startswith(PER_TASK_BAR) and text(key)}
        if own:
            # Each required task without its own bar takes the common one (or its kind's default).
            bars = {key: _number(common) for key in settings["required"] if key not in own} if common else {}
            settings["bar"] = bars | {key: _number(value) for key, value in own.items()}
        elif common:
            settings["bar"] = _number(common)
        for name in ("min", "budget"):
            if text(name):
                settings[name] = _number(text(name))
    elif settings["scope"] == "first_question" and text("policy"):
        settings["policy"] = text("policy")
    estimator = text("estimator")
    if estimator:
        try:
            settings["estimator"] = json.loads(estimator)
        except json.JSONDecodeError as error:
            raise SettingsError({"estimator": [f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"]}) from None
    else:
        settings["estimator"] = {}
    return settings


RETIREMENT_FIELDS = {"scope", "required", "bar", "min", "budget", "policy", "estimator"}


def update_retirement_settings(workflow: Workflow, settings: dict, user: Any) -> int:
    """Validate and save new retirement settings, log them, and re-aggregate the workflow's whole log
    under them so the new rules apply at once. Returns the subjects the new rules retired now
    (subjects retired earlier stay retired). Invalid settings raise ``SettingsError`` by field and
    change nothing: neither the workflow's settings nor the config its log is applied with."""
    from live.services import reset_engine_config

    # The form edits when subjects retire and the estimator; how the machine's answers enter and how far
    # new volunteers are trusted (half_trust, docs/sybil.md) stay as set.
    settings = {k: v for k, v in (workflow.retirement or {}).items() if k in ("machine_agents", "half_trust")} | settings
    problems = engine_lib.validate_engine_config(settings, workflow.tasks)
    if problems:
        errors: dict[str, list[str]] = {}
        for problem in problems:
            field, _, message = problem.partition(": ")
            if field in RETIREMENT_FIELDS:
                errors.setdefault(field, []).append(message)
            else:
                errors.setdefault("retirement", []).append(problem)
        raise SettingsError(errors)
    before = workflow.retirement
    # The log is re-aggregated first: if that fails (the applier held the lock too long) nothing is
    # saved, so the workflow's settings and the config its log was applied with never disagree.
    retired = reset_engine_config(workflow.pk, engine_lib.engine_config(settings, workflow.tasks))
    with transaction.atomic():
        workflow.retirement = settings
        workflow.save(update_fields=["retirement", "updated_at"])
        log_admin_action(workflow, user, "retirement_updated", {"before": before, "after": settings, "retired_now": retired})
    return retired


def update_gold_rate(workflow: Workflow, raw: Any, user: Any) -> float:
    errors: dict[str, list[str]] = {}
    rate = _float(raw, "gold_feedback_rate", 0.0, 1.0, errors)
    if rate is None:
        raise SettingsError(errors)
    before = workflow.gold_feedback_rate
    with transaction.atomic():
        workflow.gold_feedback_rate = rate
        workflow.save(update_fields=["gold_feedback_rate", "updated_at"])
        log_admin_action(workflow, user, "gold_rate_updated", {"before": before, "after": rate})
    return rate


def parse_active_learning_form(data: Any) -> dict[str, Any]:
    """Active-learning settings from the admin form (a QueryDict or dict); unknown keys are ignored."""
    errors: dict[str, list[str]] = {}
    acquisition = data.get("acquisition", "")
    if acquisition not in ACQUISITION_STRATEGIES:
        errors["acquisition"] = [f"must be one of {', '.join(ACQUISITION_STRATEGIES)}"]
    share = _float(data.get("exploration_share"), "exploration_share", 0.0, 1.0, errors)
    threshold = _float(data.get("machine_threshold"), "machine_threshold", 0.5, 1.0, errors)
    every = _float(data.get("retrain_every"), "retrain_every", 1, 1_000_000, errors)
    if every is not None and every != int(every):
        errors.setdefault("retrain_every", []).append("must be a whole number")
    if errors:
        raise SettingsError(errors)
    return {
        "acquisition": acquisition,
        "exploration_share": share,
        "enabled": str(data.get("enabled", "")).lower() in _CHECKED,
        "machine_retirement": str(data.get("machine_retirement", "")).lower() in _CHECKED,
        "machine_threshold": threshold,
        "retrain_every": int(every),
    }


def update_active_learning(workflow: Workflow, settings: dict[str, Any], user: Any) -> dict[str, Any]:
    before = dict(workflow.active_learning or {})
    after = {**before, **settings}
    if apps.is_installed("machine"):
        from machine.config import validate_active_learning

        problems = validate_active_learning(after)
        if problems:
            raise SettingsError({"active_learning": problems})
    with transaction.atomic():
        workflow.active_learning = after
        workflow.save(update_fields=["active_learning", "updated_at"])
        log_admin_action(workflow, user, "active_learning_updated", {"before": before, "after": after})
    return after


def set_active(workflow: Workflow, active: bool, user: Any) -> bool:
    """Pause (no subjects served) or resume a workflow; returns whether anything changed."""
    if workflow.active == active:
        return False
    with transaction.atomic():
        workflow.active = active
        workflow.save(update_fields=["active", "updated_at"])
        log_admin_action(workflow, user, "resumed" if active else "paused")
    return True


def _require_machine() -> None:
    if not apps.is_installed("machine"):
        raise MachineUnavailable("the machine classifier (platform/machine) is not installed")


def retrain_now(workflow: Workflow, user: Any) -> None:
    """Queue a training run now (the machine app logs it as "retrain")."""
    _require_machine()
    from machine import training

    training.request_retraining(workflow, user=user, reason="manual")


def promote(workflow: Workflow, version_id: int, user: Any) -> Any:
    """Serve this trained version (the machine app logs it as "promote"); ValueError if it is not
    trained."""
    _require_machine()
    from machine import promotion
    from machine.models import ModelVersion

    version = ModelVersion.objects.filter(pk=version_id, workflow=workflow).defer("model").first()
    if version is None:
        raise SettingsError({"version": [f"no model version {version_id} in this workflow"]})
    version = ModelVersion.objects.get(pk=version.pk)  # with its model bytes, which promotion checks
    promotion.promote_model_version(version, user=user)
    return version


def roll_back(workflow: Workflow, user: Any) -> Any:
    """Serve again the version promoted before the current one (the machine app logs it as
    "roll_back"); LookupError when there is none."""
    _require_machine()
    from machine import promotion

    previous = promotion.roll_back(workflow, user=user)
    if previous is None:
        raise LookupError("there is no earlier promoted version to roll back to")
    return previous
