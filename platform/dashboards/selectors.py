"""Read-only queries of the dashboards: live statistics with the projection, one subject's history,
the model versions, the audit log, and the rows of the downloads (iterated, never all in memory): results,
raw classifications, and the classifications in Zooniverse's (Panoptes') export format, with the column
types of their Parquet files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.apps import apps
from django.core.cache import cache
from django.db.models import Count, Min, QuerySet
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import TruncDay, TruncHour, TruncMinute
from django.utils import timezone

from classifications.models import Classification
from live import hot_state
from live.models import WorkflowAggregation
from live.selectors import workflow_statistics
from live.services import RISK_KEY, VALUE_KEY
from projects.models import AdminAction, SubjectWorkflowState, Workflow

STATISTICS_CACHE_SECONDS = 4
PROMOTABLE_STATES = {"trained", "rejected", "promoted", "rolled_back"}
PROJECTION_WINDOW = timedelta(hours=24)
HOURLY_BARS = 24


# --- the machine app (platform/machine), optional: pages work without it ---------------------------


def machine_installed() -> bool:
    return apps.is_installed("machine")


def machine_selectors() -> Any | None:
    if not machine_installed():
        return None
    from machine import selectors

    return selectors


def _retire_labels(workflow: Any, answers: list[int] | None) -> str | None:
    """The first question's labels of these answers, joined (None for None: any answer)."""
    if answers is None:
        return None
    tasks = workflow.tasks or {}
    labels = [a.get("label", str(i)) for i, a in enumerate(tasks.get("tasks", {}).get(tasks.get("first_task"), {}).get("answers", []))]
    return ", ".join(labels[a] if a < len(labels) else str(a) for a in answers)


def _percent(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def _gate_text(metrics: dict[str, Any], bars: dict[str, Any]) -> str:
    """Why a version is not trained on a question, in a few words, from its metrics and bars: the
    first of the gate's conditions it fails (``machine.gold_gate.trained_criterion`` has the rest)."""
    n_gold, accuracy = metrics.get("n_gold_test") or 0, metrics.get("accuracy")
    needed, bar = bars.get("min_gold_subjects"), bars.get("min_gold_accuracy")
    if needed is not None and n_gold < needed:
        return f"gate not passed: {n_gold} gold subjects, needs {needed}"
    if bar is not None and (accuracy is None or accuracy < bar):
        return f"gate not passed: {_percent(accuracy)} on {n_gold} gold, needs {_percent(bar)}"
    n_retired, retired_accuracy = metrics.get("n_retired_gold") or 0, metrics.get("retired_gold_accuracy")
    if needed is not None and n_retired < needed:
        return f"gate not passed: would retire {n_retired} gold subjects, needs {needed}"
    retire_bar = bars.get("min_retire_accuracy")
    if retire_bar is not None and (retired_accuracy is None or retired_accuracy < retire_bar):
        return (f"gate not passed: {_percent(retired_accuracy, 1)} right on the {n_retired} gold it would retire, "
                f"needs {_percent(retire_bar)}")
    return f"gate not passed: {metrics.get('trained_reason') or 'not trained'}"


def machine_questions(version: Any) -> list[dict[str, Any]]:
    """Each question and drawing task of the tree: whether the version serving answers it (its answers
    count, and may retire the subject), and why, or why not; in the tree's order."""
    workflow = version.workflow
    tasks = workflow.tasks or {}
    first = tasks.get("first_task")
    scope = (workflow.retirement or {}).get("scope", "workflow")
    per_question = (version.metrics or {}).get("questions")
    out = []
    for key, task in tasks.get("tasks", {}).items():
        kind = task.get("type")
        entry: dict[str, Any] = {"task": key, "answers": False}
        if kind == "drawing":
            entry["reason"] = "humans only: a drawing task"
        elif kind == "multiple":
            entry["reason"] = "humans only: the machine answers single-choice questions"
        elif scope == "first_question" and key != first:
            entry["reason"] = "humans only: first-question retirement, the machine answers the first question"
        elif per_question is None and key != first:
            entry["reason"] = "humans only: this version answers the first question"
        else:
            metrics = version.question_metrics(key)
            if not metrics:
                entry["reason"] = "not measured by this version"
            elif version.trusted_on(key):
                answers = version.retire_answers_on(key)
                labels = [a.get("label", str(i)) for i, a in enumerate(task.get("answers", []))]
                entry |= {"answers": True, "reason": (
                    f"answers: {_percent(metrics.get('accuracy'))} on {metrics.get('n_gold_test') or 0} gold; "
                    f"{_percent(metrics.get('retired_gold_accuracy'), 1)} right on the {metrics.get('n_retired_gold') or 0} gold it would retire"
                    + ("" if answers is None else f"; retires with {', '.join(labels[a] for a in answers if a < len(labels)) or 'no answer'}"))}
            else:
                entry["reason"] = _gate_text(metrics, metrics.get("bars") or {})
        entry["text"] = f"{key}: {entry['reason']}"
        out.append(entry)
    order = {key: i for i, key in enumerate(_tree_order(tasks))}
    return sorted(out, key=lambda e: order.get(e["task"], len(order)))


def _tree_order(tasks: dict) -> list[str]:
    try:
        from aggregation.workflow import _topological_order  # the engine's order

        return _topological_order(tasks["tasks"], tasks["first_task"])
    except (KeyError, ValueError):
        return list(tasks.get("tasks", {}))


def model_summary(version: Any) -> dict[str, Any]:
    metrics = version.metrics or {}
    promoted_by = getattr(version, "promoted_by", None)
    return {
        "id": version.pk,
        "version": version.version,
        "state": version.state,
        "reason": getattr(version, "reason", ""),
        "accuracy": metrics.get("accuracy"),
        "ece": metrics.get("ece"),
        "confusion": metrics.get("confusion"),
        # Whether it may retire, and why (not): what an admin asks first when the machine retires nothing.
        "trained": bool(metrics.get("trained")),
        "trained_reason": metrics.get("trained_reason", ""),
        "n_retired_gold": metrics.get("n_retired_gold"),
        "retired_gold_accuracy": metrics.get("retired_gold_accuracy"),
        "retired_gold_by_answer": metrics.get("retired_gold_by_answer"),  # [retired, right] per answer
        # The answers it may retire with (None: any), and their labels for the admin page.
        "retire_answers": version.retire_answers,
        "retire_labels": _retire_labels(version.workflow, version.retire_answers),
        # Which questions it answers, and why not the others ("T1: gate not passed: 81% on 40 gold, needs 90%").
        "questions": machine_questions(version),
        "created_at": _iso(version.created_at),
        "promoted_at": _iso(getattr(version, "promoted_at", None)),
        "promoted_by": promoted_by.get_username() if promoted_by is not None else None,
    }


def current_model(workflow: Workflow) -> dict[str, Any] | None:
    selectors = machine_selectors()
    if selectors is None:
        return None
    version = selectors.current_model(workflow)
    return model_summary(version) if version is not None else None


def model_versions(workflow: Workflow, limit: int = 50) -> list[dict[str, Any]] | None:
    """Newest first; None when the machine app is not installed."""
    selectors = machine_selectors()
    if selectors is None:
        return None
    current = selectors.current_model(workflow)
    rows = []
    for version in list(selectors.model_versions(workflow))[:limit]:
        row = model_summary(version)
        row["current"] = current is not None and version.pk == current.pk
        row["promotable"] = not row["current"] and version.state in PROMOTABLE_STATES
        rows.append(row)
    return rows


# --- retirement reasons ------------------------------------------------------------------------------


def reason_parts(reason: str | None) -> tuple[str, str | None]:
    """A retirement reason's kind and task: whole-workflow retirement names the task that settled
    last ("consensus:T1" → ("consensus", "T1")); the other reasons name none ("limit", "machine", the
    first-question rule's "consensus")."""
    kind, _, task = (reason or "unknown").partition(":")
    return kind, task or None


def reason_label(reason: str | None) -> str:
    """A reason for people: "consensus on T1", "limit"."""
    kind, task = reason_parts(reason)
    return f"{kind} on {task}" if task else kind


def by_kind(by_reason: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Retirement counts by reason grouped by kind, each with its count by task (empty when the
    reasons name no task): {"consensus": {"count": 9, "by_task": {"T0": 7, "T2": 2}}, "limit": ...}."""
    out: dict[str, dict[str, Any]] = {}
    for reason, n in sorted(by_reason.items(), key=lambda item: str(item[0])):
        kind, task = reason_parts(reason)
        entry = out.setdefault(kind, {"count": 0, "by_task": {}})
        entry["count"] += n
        if task:
            entry["by_task"][task] = entry["by_task"].get(task, 0) + n
    return out


# --- live statistics ---------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def retired_over_time(workflow: Workflow, now: datetime) -> dict[str, Any]:
    """Cumulative retirements by reason, and by the reasons' kind (``by_kind``: "consensus" for every
    "consensus:<task>"), bucketed by minute, hour or day to suit the time span."""
    retired = SubjectWorkflowState.objects.filter(workflow=workflow, status=SubjectWorkflowState.Status.RETIRED, retired_at__isnull=False)
    first = retired.aggregate(first=Min("retired_at"))["first"]
    if first is None:
        return {"bucket": "hour", "points": []}
    span = now - first
    bucket, trunc, step = (
        ("minute", TruncMinute, timedelta(minutes=1)) if span <= timedelta(hours=3)
        else ("hour", TruncHour, timedelta(hours=1)) if span <= timedelta(days=5)
        else ("day", TruncDay, timedelta(days=1))
    )
    rows = retired.annotate(at=trunc("retired_at")).values("at", "retirement_reason").annotate(n=Count("id")).order_by("at")
    totals: dict[str, int] = {}
    points: list[dict[str, Any]] = []
    for row in rows:
        if not points or points[-1]["at"] != row["at"]:
            points.append({"at": row["at"], "by_reason": {}})
        reason = row["retirement_reason"] or "unknown"
        totals[reason] = totals.get(reason, 0) + row["n"]
        points[-1]["by_reason"] = dict(totals)
    start = {"at": points[0]["at"] - step, "by_reason": {reason: 0 for reason in totals}}
    # Every point names every reason, so each reason's line is drawn from the start.
    series = [start, *({"at": p["at"], "by_reason": {r: p["by_reason"].get(r, 0) for r in totals}} for p in points)]
    return {"bucket": bucket, "points": [
        {"at": _iso(p["at"]), "by_reason": p["by_reason"], "by_kind": {k: v["count"] for k, v in by_kind(p["by_reason"]).items()}}
        for p in series
    ]}


def classifications_per_hour(workflow: Workflow, now: datetime, hours: int = HOURLY_BARS) -> list[dict[str, Any]]:
    """The last ``hours`` whole hours up to the current one, zeros included."""
    current = now.replace(minute=0, second=0, microsecond=0)
    start = current - timedelta(hours=hours - 1)
    counts = dict(
        Classification.objects.filter(workflow=workflow, created_at__gte=start)
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour")
        .annotate(n=Count("id"))
    )
    counts = {hour.astimezone(now.tzinfo): n for hour, n in counts.items()}
    return [{"hour": _iso(start + timedelta(hours=i)), "count": counts.get(start + timedelta(hours=i), 0)} for i in range(hours)]


def projection(workflow: Workflow, subjects: int, retired: int, now: datetime) -> dict[str, Any]:
    """Subjects remaining and when they will be done at the recent retirement rate.

    The rate is the retirements of the last 24 hours over the time the workflow was actually
    collecting in that window (since its first classification, if that is more recent), so a new
    workflow is not projected as if it had been idle for a day.
    """
    remaining = subjects - retired
    window_start = now - PROJECTION_WINDOW
    states = SubjectWorkflowState.objects.filter(workflow=workflow)
    recent = states.filter(retired_at__gte=window_start).count()
    first_classification = Classification.objects.filter(workflow=workflow).aggregate(first=Min("created_at"))["first"]
    since = max(window_start, first_classification) if first_classification else window_start
    hours = max((now - since).total_seconds() / 3600, 1 / 60)
    rate = recent / hours
    result: dict[str, Any] = {
        "subjects": subjects,
        "retired": retired,
        "remaining": remaining,
        "window_hours": round(hours, 3),
        "retired_in_window": recent,
        "rate_per_hour": round(rate, 3),
        "complete": remaining == 0 and subjects > 0,
        "projected_completion": None,
    }
    if result["complete"]:
        result["projected_completion"] = _iso(states.order_by("-retired_at").values_list("retired_at", flat=True).first())
    elif rate > 0:
        result["projected_completion"] = _iso(now + timedelta(hours=remaining / rate))
    return result


# --- the running tally: human votes against a fixed-N majority, accuracy against known answers ----------

# A subject's known answers, for measuring only (never given to the engine): its gold answers, and
# hidden metadata ``#truth.<task>`` (a manifest column of that name: hidden from volunteers like
# every '#' column). Gold subjects never retire, so the accuracy of *retired* subjects rests on the
# hidden truth where a project has one (the demo's galaxies carry their GZ1 class as ``#truth.T0``
# and, for disks, ``#truth.T1``).
TRUTH_PREFIX = "#truth."
CROWD_KINDS = ("consensus", "limit")  # retired by the humans' votes alone; "machine": by the CNN


def fixed_n(workflow: Workflow) -> dict[str, Any]:
    """The N of the fixed-N majority the tally compares with: the workflow's budget, the most
    classifications a subject takes before it retires anyway (``limit``): 40 by default, Galaxy Zoo
    2's votes per galaxy (``aggregation.defaults.BUDGET``); under the first-question rule, its
    policy's ``max``."""
    from aggregation import defaults
    from live.engine import engine_config

    try:
        retirement = engine_config(workflow.retirement or {}, workflow.tasks)["retirement"]
    except ValueError:  # a stored setting the engine refuses: the default budget
        retirement = {"scope": "workflow", "budget": defaults.BUDGET}
    if retirement["scope"] == "workflow":
        n, where = int(retirement["budget"]), "the workflow's budget"
    else:
        maxima = [int(r["n"]) for r in retirement["policy"]["rules"] if r.get("type") == "max_classifications"]
        n, where = (min(maxima), "the policy's max") if maxima else (defaults.BUDGET, "the policy has no max")
    if n == defaults.BUDGET:
        where += ": Galaxy Zoo 2's votes per galaxy"
    return {"n": n, "source": where}


def known_answers(metadata: dict | None, gold: dict | None) -> dict[str, Any]:
    """A subject's known answers by task: its hidden ``#truth.<task>`` metadata, and its gold answers
    (which win where both give one). Cells that are not whole numbers are left out."""
    out: dict[str, Any] = {}
    for column, raw in (metadata or {}).items():
        if not column.startswith(TRUTH_PREFIX) or raw in ("", None):
            continue
        try:
            out[column.removeprefix(TRUTH_PREFIX)] = int(raw)
        except (TypeError, ValueError):
            continue
    return out | {k: v for k, v in (gold or {}).items() if isinstance(v, int) and not isinstance(v, bool)}


def _json(value: Any) -> Any:
    """A JSON key transform's value: psycopg may hand it back as text (Django's JSONField decodes its own)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _map_answer(posterior: Any) -> int | None:
    if not isinstance(posterior, list) or not posterior or not all(isinstance(p, (int, float)) for p in posterior):
        return None
    return max(range(len(posterior)), key=lambda i: posterior[i])


def _share(right: int, scored: int) -> dict[str, Any]:
    return {"scored": scored, "right": right, "accuracy": right / scored if scored else None}


class _Group:
    """One group's running totals (retired subjects, human votes, known answers scored)."""

    def __init__(self) -> None:
        self.retired = self.human_votes = self.scored = self.right = 0
        self.by_task: dict[str, list[int]] = {}

    def add(self, human_votes: int, verdicts: dict[str, bool]) -> None:
        self.retired += 1
        self.human_votes += human_votes
        if verdicts:
            self.scored += 1
            self.right += all(verdicts.values())
            for task, ok in verdicts.items():
                counts = self.by_task.setdefault(task, [0, 0])
                counts[0] += 1
                counts[1] += ok

    def summary(self, n: int) -> dict[str, Any]:
        fixed = n * self.retired
        return {
            "retired": self.retired,
            "human_votes": self.human_votes,
            "votes_per_subject": self.human_votes / self.retired if self.retired else None,
            "fixed_n_votes": fixed,
            "saved": fixed - self.human_votes,
            "fewer": fixed / self.human_votes if self.human_votes else None,
            "accuracy": _share(self.right, self.scored) | {
                "by_task": {task: _share(right, scored) for task, (scored, right) in sorted(self.by_task.items())},
            },
        }


def running_tally(workflow: Workflow) -> dict[str, Any]:
    """The dashboard's running tally over the subjects retired so far.

    - Human votes: counted classifications by people (not the machine's) of the retired subjects,
      against ``fixed_n`` votes for each, what a fixed-N majority (Galaxy Zoo's way) would have spent
      on them; ``fewer`` is that ratio.
    - Accuracy: each retired subject's most probable answer to every question it has a known
      answer for (``known_answers``), right when all are; by task too.
    - Groups: ``crowd``, the subjects the humans' votes retired (consensus, limit: the crowd alone);
      ``machine``, those the CNN retired; ``all``, every retired subject (the crowd with the machine).
    ``human_votes_total`` counts the people's counted votes on every subject, retired or not, gold
    included.
    """
    n = fixed_n(workflow)
    questions = {key for key, task in workflow.tasks["tasks"].items() if task.get("type") == "single"}
    machine_ids: set[int] = set()
    selectors = machine_selectors()
    if selectors is not None:
        machine_ids = selectors.machine_volunteer_ids(workflow.pk)
    counted = Classification.objects.filter(workflow=workflow, counts=True)
    machine_counted: dict[int, int] = {}
    if machine_ids:
        for subject_id, k in (counted.filter(volunteer_id__in=machine_ids).values_list("subject_id")
                              .annotate(k=Count("id")).order_by()):
            machine_counted[subject_id] = k
    groups = {"crowd": _Group(), "machine": _Group(), "all": _Group()}
    # Only what the tally reads of the JSON columns: each question's posterior, truth cell and gold answer.
    keys = sorted(questions)
    columns = {}
    for i, key in enumerate(keys):
        columns |= {f"p{i}": KeyTransform(key, "posterior"), f"t{i}": KeyTextTransform(TRUTH_PREFIX + key, "subject__metadata"),
                    f"g{i}": KeyTransform(key, "subject__gold")}
    retired = (
        SubjectWorkflowState.objects.filter(workflow=workflow, status=SubjectWorkflowState.Status.RETIRED)
        .annotate(**columns).values_list("subject_id", "retirement_reason", "classification_count", *columns)
    )
    for subject_id, reason, count, *cells in retired.iterator(chunk_size=2000):
        human = max(0, count - machine_counted.get(subject_id, 0))
        posterior = {key: _json(cells[3 * i]) for i, key in enumerate(keys)}
        truth = known_answers({TRUTH_PREFIX + key: cells[3 * i + 1] for i, key in enumerate(keys)},
                              {key: _json(cells[3 * i + 2]) for i, key in enumerate(keys) if cells[3 * i + 2] is not None})
        verdicts = {k: _map_answer(posterior.get(k)) == v for k, v in truth.items()}
        kind = reason_parts(reason)[0]
        groups["all"].add(human, verdicts)
        if kind in CROWD_KINDS:
            groups["crowd"].add(human, verdicts)
        elif kind == "machine":
            groups["machine"].add(human, verdicts)
    human_total = counted.exclude(volunteer_id__in=machine_ids).count() if machine_ids else counted.count()
    return {
        "fixed_n": n,
        "groups": {name: group.summary(n["n"]) for name, group in groups.items()},
        "human_votes_total": human_total,
    }


def dashboard_statistics(workflow: Workflow) -> dict[str, Any]:
    """Everything the dashboard charts; cached a few seconds, since every open dashboard polls it."""
    cache_key = f"chorus:dashboard:{workflow.pk}"
    cached = cache.get(cache_key)
    if cached is not None:
        return cached
    now = timezone.now()
    base = workflow_statistics(workflow.pk)
    stats = {
        **base,
        "retired_by_kind": by_kind(base["retired_by_reason"]),
        "workflow": {"id": workflow.pk, "name": workflow.name, "active": workflow.active, "project": workflow.project.slug},
        "retired_over_time": retired_over_time(workflow, now),
        "classifications_per_hour": classifications_per_hour(workflow, now),
        "projection": projection(workflow, base["subjects"], base["retired"], now),
        "model": current_model(workflow),
        "tally": running_tally(workflow),
    }
    cache.set(cache_key, stats, STATISTICS_CACHE_SECONDS)
    return stats


def recent_events(workflow: Workflow, after: str = "0-0", count: int = 50) -> dict[str, Any]:
    """Retirement events of the Redis stream after the cursor ``after`` (no waiting), newest last."""
    if after == "0-0":
        # First call: only the last ``count`` events, not the whole stream.
        raw = hot_state.client().xrevrange(hot_state.key(workflow.pk, "events"), count=count)
        events = [(event_id.decode(), json.loads(fields[b"data"])) for event_id, fields in reversed(raw)]
    else:
        events = hot_state.read_events(workflow.pk, after=after, block_ms=None, count=count)
    return {"cursor": events[-1][0] if events else after, "events": [event for _, event in events]}


def engine_config_in_effect(workflow: Workflow) -> dict | None:
    agg = WorkflowAggregation.objects.filter(workflow=workflow).only("engine_config").first()
    return agg.engine_config if agg else None


def audit_log(workflow: Workflow, limit: int = 100) -> QuerySet[AdminAction]:
    return AdminAction.objects.filter(workflow=workflow).select_related("user").order_by("-at", "-id")[:limit]


# --- one subject -------------------------------------------------------------------------------------


def question_keys(workflow: Workflow) -> list[str]:
    return [key for key, task in workflow.tasks["tasks"].items() if task.get("type") in {"single", "multiple"}]


def drawing_keys(workflow: Workflow) -> list[str]:
    return [key for key, task in workflow.tasks["tasks"].items() if task.get("type") == "drawing"]


def map_label(task: dict, posterior: Any) -> str | None:
    """The most probable answer's label (single), or the answers more likely yes than no (multiple)."""
    answers = task.get("answers", [])
    if not isinstance(posterior, list) or not posterior:
        return None
    if task.get("type") == "single":
        best = max(range(len(posterior)), key=lambda i: posterior[i])
        return answers[best]["label"] if best < len(answers) else str(best)
    chosen = [answers[i]["label"] for i, p in enumerate(posterior) if isinstance(p, list) and len(p) == 2 and p[1] > 0.5 and i < len(answers)]
    return "; ".join(chosen)


def volunteer_label(classification: Classification) -> str:
    user = classification.volunteer.user
    return user.get_username() if user is not None else f"anonymous-{classification.volunteer_id}"


def _stored_risks(posterior: dict) -> dict[str, dict]:
    """``posterior["@risk"]``: each task's risk as the live loop stored it. The '@'-keys of a posterior
    are not tasks: tasks are read from the tree, never from a posterior's keys."""
    risks = posterior.get(RISK_KEY)
    return risks if isinstance(risks, dict) else {}


def task_risks(workflow: Workflow, posterior: dict) -> list[dict[str, Any]]:
    """Each task's risk as the engine last stored it, in the tree's order: kind, reach, risk,
    weighted risk, bar (None: not required), settled, answers."""
    risks = _stored_risks(posterior)
    return [{"task": key, "required": risks[key].get("bar") is not None, **risks[key]} for key in workflow.tasks["tasks"] if key in risks]


def subject_detail(workflow: Workflow, state: SubjectWorkflowState) -> dict[str, Any]:
    """A subject's images, every classification in the order the engine applied them, the
    posterior's path vote by vote, each task's risk against its bar, the aggregated boxes, its
    retirement (the reason naming the task that settled last), and its gold answers."""
    subject = state.subject
    posterior = state.posterior or hot_state.posterior(workflow.pk, subject.pk) or {}
    classifications = list(
        Classification.objects.filter(workflow=workflow, subject=subject)
        .select_related("volunteer__user")
        .order_by("applied_seq", "id")
    )
    questions = question_keys(workflow)
    path = {key: [] for key in questions}
    rows = []
    for number, classification in enumerate(classifications, start=1):
        after = classification.posterior_after or {}
        for key in questions:
            if isinstance(after.get(key), list):
                path[key].append({"n": number, "classification": classification.pk, "posterior": after[key]})
        rows.append(
            {
                "n": number,
                "id": classification.pk,
                "volunteer": volunteer_label(classification),
                "created_at": _iso(classification.created_at),
                "counts": classification.counts,
                "is_gold": classification.is_gold,
                "applied_seq": classification.applied_seq,
                "annotations": classification.annotations,
                "answers": _answer_labels(workflow, classification.annotations),
                "posterior_after": classification.posterior_after,
            }
        )
    tasks = workflow.tasks["tasks"]
    return {
        "subject": {"id": subject.pk, "external_id": subject.external_id, "metadata": subject.metadata, "gold": subject.gold},
        "state": {
            "status": state.status,
            "retirement_reason": state.retirement_reason,
            "retired_at": _iso(state.retired_at),
            "classification_count": state.classification_count,
            "is_gold": state.is_gold,
            "priority": state.priority,
        },
        "retirement": _retirement(state.retirement_reason) if state.retirement_reason else None,
        "queue": queue_standing(workflow, state, posterior),
        "scope": (workflow.retirement or {}).get("scope", "workflow"),
        "risk": task_risks(workflow, posterior),
        "images": [{"url": image.file.url, "width": image.width, "height": image.height} for image in subject.images.all()],
        "tasks": tasks,
        "questions": questions,
        "posterior": posterior,
        "map": {key: map_label(tasks[key], posterior.get(key)) for key in questions},
        "path": path,
        "boxes": {
            key: posterior[key] for key in drawing_keys(workflow) if isinstance(posterior.get(key), dict)
        },
        "classifications": rows,
    }


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n:,}{suffix}"


def queue_standing(workflow: Workflow, state: SubjectWorkflowState, posterior: dict) -> dict[str, Any]:
    """Why the queue serves this subject when it does (docs/queue.md): its place among the active
    subjects by priority, the priority's two terms (its value for humans, in bits, and the machine's
    term, the rank of its acquisition score), the acquisition score of the latest prediction and the
    version that made it, or that it was drawn at random to explore; ``text`` says it in a sentence."""
    from projects.services import fresh_value

    active = SubjectWorkflowState.objects.filter(workflow=workflow, status=SubjectWorkflowState.Status.ACTIVE)
    value = posterior.get(VALUE_KEY)
    seen = isinstance(value, (int, float))
    value = float(value) if seen else fresh_value(workflow)
    prediction = None
    selectors = machine_selectors()
    if selectors is not None:
        machine_ids = selectors.machine_volunteer_ids(workflow.pk)
        prediction = (
            Classification.objects.filter(workflow=workflow, subject_id=state.subject_id, volunteer_id__in=machine_ids)
            .order_by("-id").values_list("metadata__acquisition", "metadata__model_version").first()
        ) if machine_ids else None
    acquisition, version = prediction if prediction else (None, None)
    method = None
    if acquisition is not None:
        from machine.config import machine_settings

        method = machine_settings(workflow)["acquisition"]
    out: dict[str, Any] = {
        "status": state.status,
        "priority": state.priority,
        "rank": None,
        "active": active.count(),
        "value": value,
        "value_seen": seen,
        "machine_score": state.machine_score,
        "acquisition": acquisition,
        "acquisition_method": method,
        "model_version": version,
        "explored": acquisition is not None and state.machine_score is None and not state.is_gold,
    }
    if state.status == SubjectWorkflowState.Status.RETIRED:
        out["text"] = ("Retired: no longer served to count; a volunteer who has seen every active subject may still "
                       "get it, uncounted.")
        return out
    out["rank"] = active.filter(priority__gt=state.priority).count() + 1
    place = (f"Served {_ordinal(out['rank'])} of {out['active']:,} active subjects to a volunteer who has seen none of them "
             f"(priority {state.priority:.3f}, highest first)")
    if state.is_gold:
        out["text"] = f"{place}. A gold subject: worth nothing to the engine (its answers are known), never retired."
        return out
    why = f"its value for humans, {value:.3f} bits" + ("" if seen else " (nobody has classified it yet)")
    if out["explored"]:
        machine = ("no machine term: the machine's last ranking drew it at random to explore (a random priority, "
                   "until its next classification)")
    elif state.machine_score is not None and acquisition is not None:
        machine = (f"plus the machine's term {state.machine_score:.3f}: the rank of its acquisition score "
                   f"({method}) {acquisition:.4f}, from model version {version}, among the active subjects")
    elif state.machine_score is not None:
        machine = f"plus the machine's term {state.machine_score:.3f}"
    elif selectors is not None and selectors.current_model(workflow) is not None:
        machine = "the model serving has not predicted it yet: no machine term"
    else:
        machine = "no model version ranks the queue yet"
    out["text"] = f"{place}: {why}; {machine}."
    return out


def _retirement(reason: str) -> dict[str, Any]:
    kind, task = reason_parts(reason)
    return {"reason": reason, "kind": kind, "task": task, "label": reason_label(reason)}


def _answer_labels(workflow: Workflow, annotations: list[dict]) -> list[str]:
    tasks = workflow.tasks["tasks"]
    out = []
    for annotation in annotations or []:
        task = tasks.get(annotation.get("task"), {})
        value = annotation.get("value")
        if task.get("type") == "single" and isinstance(value, int) and 0 <= value < len(task.get("answers", [])):
            out.append(f"{annotation['task']}: {task['answers'][value]['label']}")
        elif task.get("type") == "multiple" and isinstance(value, list):
            labels = [task["answers"][i]["label"] for i in value if isinstance(i, int) and 0 <= i < len(task.get("answers", []))]
            out.append(f"{annotation['task']}: {', '.join(labels) or 'none'}")
        elif task.get("type") == "drawing" and isinstance(value, list):
            out.append(f"{annotation['task']}: {len(value)} box{'es' if len(value) != 1 else ''}")
        else:
            out.append(f"{annotation.get('task')}: {value!r}")
    return out


# --- downloads -----------------------------------------------------------------------------------------


def result_columns(workflow: Workflow) -> list[str]:
    columns = ["subject_id", "external_id", "status", "retirement_reason", "retired_at", "classification_count", "is_gold"]
    for key in question_keys(workflow):
        columns += [f"{key}.answer", f"{key}.probability", f"{key}.posterior", *_risk_columns(key)]
    for key in drawing_keys(workflow):
        columns += [f"{key}.objects", f"{key}.expected_risk", *_risk_columns(key)]
    return columns


def _risk_columns(key: str) -> list[str]:
    """The task's risk weighted by its reach, and whether it is under its bar (empty: not required)."""
    return [f"{key}.weighted_risk", f"{key}.settled"]


def result_rows(workflow: Workflow) -> Iterator[dict[str, Any]]:
    """One row per subject of the workflow: status, retirement, counts, posteriors, MAP answers and
    each task's weighted risk."""
    tasks = workflow.tasks["tasks"]
    questions, drawings = question_keys(workflow), drawing_keys(workflow)
    states = (
        SubjectWorkflowState.objects.filter(workflow=workflow)
        .select_related("subject")
        .only("id", "status", "retirement_reason", "retired_at", "classification_count", "is_gold", "posterior",
              "subject__id", "subject__external_id")
        .order_by("id")
    )
    for state in states.iterator(chunk_size=2000):
        posterior = state.posterior or {}
        row: dict[str, Any] = {
            "subject_id": state.subject_id,
            "external_id": state.subject.external_id,
            "status": state.status,
            "retirement_reason": state.retirement_reason or None,
            "retired_at": _iso(state.retired_at),
            "classification_count": state.classification_count,
            "is_gold": state.is_gold,
        }
        risks = _stored_risks(posterior)
        for key in questions:
            p = posterior.get(key)
            row[f"{key}.answer"] = map_label(tasks[key], p)
            row[f"{key}.probability"] = max(p) if tasks[key]["type"] == "single" and isinstance(p, list) and p else None
            row[f"{key}.posterior"] = p
            row.update(_risk_cells(key, risks))
        for key in drawings:
            boxes = posterior.get(key) if isinstance(posterior.get(key), dict) else {}
            row[f"{key}.objects"] = boxes.get("objects")
            row[f"{key}.expected_risk"] = boxes.get("expected_risk")
            row.update(_risk_cells(key, risks))
        yield row


def _risk_cells(key: str, risks: dict) -> dict[str, Any]:
    risk = risks.get(key) or {}
    required = risk.get("bar") is not None
    return {f"{key}.weighted_risk": risk.get("weighted_risk"), f"{key}.settled": risk.get("settled") if required else None}


CLASSIFICATION_COLUMNS = [
    "id", "subject_id", "external_id", "volunteer_id", "user", "created_at", "started_at", "finished_at", "counts",
    "already_seen", "subject_was_retired", "is_gold", "applied_seq", "annotations", "metadata",
]


def classification_rows(workflow: Workflow) -> Iterator[dict[str, Any]]:
    """Every classification of the workflow in id order, read in chunks from a server-side cursor."""
    classifications = (
        Classification.objects.filter(workflow=workflow)
        .select_related("subject", "volunteer__user")
        .only("id", "subject_id", "subject__external_id", "volunteer_id", "volunteer__user__username", "created_at",
              "started_at", "finished_at", "counts", "already_seen", "subject_was_retired", "is_gold", "applied_seq",
              "annotations", "metadata")
        .order_by("id")
    )
    for c in classifications.iterator(chunk_size=2000):
        yield {
            "id": c.pk,
            "subject_id": c.subject_id,
            "external_id": c.subject.external_id,
            "volunteer_id": c.volunteer_id,
            "user": c.volunteer.user.get_username() if c.volunteer.user is not None else None,
            "created_at": _iso(c.created_at),
            "started_at": _iso(c.started_at),
            "finished_at": _iso(c.finished_at),
            "counts": c.counts,
            "already_seen": c.already_seen,
            "subject_was_retired": c.subject_was_retired,
            "is_gold": c.is_gold,
            "applied_seq": c.applied_seq,
            "annotations": c.annotations,
            "metadata": c.metadata,
        }


# --- column types of the Parquet downloads ("json": the JSON text the CSV cell holds) --------------------


CLASSIFICATION_COLUMN_TYPES = {
    "id": "int", "subject_id": "int", "volunteer_id": "int", "counts": "bool", "already_seen": "bool",
    "subject_was_retired": "bool", "is_gold": "bool", "applied_seq": "int", "annotations": "json", "metadata": "json",
}


def result_column_types(workflow: Workflow) -> dict[str, str]:
    types = {"subject_id": "int", "classification_count": "int", "is_gold": "bool"}
    for key in question_keys(workflow):
        types |= {f"{key}.probability": "float", f"{key}.posterior": "json"} | _risk_types(key)
    for key in drawing_keys(workflow):
        types |= {f"{key}.objects": "json", f"{key}.expected_risk": "float"} | _risk_types(key)
    return types


def _risk_types(key: str) -> dict[str, str]:
    return {f"{key}.weighted_risk": "float", f"{key}.settled": "bool"}


# --- the classification export in Zooniverse's (Panoptes') format -----------------------------------------


PANOPTES_COLUMNS = [
    "classification_id", "user_name", "user_id", "workflow_id", "workflow_name", "workflow_version", "created_at",
    "metadata", "annotations", "subject_data", "subject_ids",
]
PANOPTES_COLUMN_TYPES = {
    "classification_id": "int", "user_id": "int", "workflow_id": "int", "metadata": "json", "annotations": "json",
    "subject_data": "json",
}
CHORUS_WORKFLOW_VERSION = "1.0"  # Chorus workflows are not versioned; imported ones keep Panoptes' version


def panoptes_created_at(moment: datetime) -> str:
    """Panoptes' ``created_at``: "2024-02-23 16:17:42 UTC"."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def panoptes_annotations(workflow: Workflow, annotations: list[dict]) -> list[dict[str, Any]]:
    """Chorus annotations as Panoptes writes them: ``{"task", "task_label", "value"}``, the value an answer
    index (single), a list of indices (multiple) or a list of marks ``{tool, x, y, width, height,
    tool_label}`` (drawing)."""
    tasks = workflow.tasks["tasks"]
    out = []
    for annotation in annotations or []:
        key, value = annotation.get("task"), annotation.get("value")
        task = tasks.get(key, {})
        label = task.get("question") or task.get("instruction")
        if task.get("type") == "drawing" and isinstance(value, list):
            tools = task.get("tools", [])
            value = [
                {**{name: mark.get(name) for name in ("tool", "x", "y", "width", "height")},
                 "tool_label": tools[mark["tool"]]["label"] if isinstance(mark.get("tool"), int) and mark["tool"] < len(tools) else None}
                for mark in value
            ]
        out.append({"task": key, "task_label": label, "value": value})
    return out


def panoptes_rows(workflow: Workflow) -> Iterator[dict[str, Any]]:
    """Every classification of the workflow as a row of a Panoptes classification export.

    ``subject_ids`` is the Chorus subject id, and ``subject_data`` that subject's metadata with its
    ``#external_id``. Classifications imported from Zooniverse (projects.zooniverse) keep their
    Panoptes user name, user id, workflow version and metadata; others have the Chorus user's name and
    id, or ``not-logged-in-<volunteer id>`` and no user id for an anonymous volunteer.
    """
    classifications = (
        Classification.objects.filter(workflow=workflow)
        .select_related("subject", "volunteer__user")
        .only("id", "subject_id", "subject__external_id", "subject__metadata", "volunteer_id", "volunteer__user__id",
              "volunteer__user__username", "created_at", "started_at", "finished_at", "annotations", "metadata")
        .order_by("id")
    )
    for c in classifications.iterator(chunk_size=2000):
        imported = c.metadata.get("zooniverse") if isinstance(c.metadata.get("zooniverse"), dict) else None
        user = c.volunteer.user
        if imported is not None:
            user_name = imported.get("user_name") or f"not-logged-in-{c.volunteer_id}"
            user_id = int(imported["user_id"]) if str(imported.get("user_id") or "").isdigit() else None
            version = imported.get("workflow_version") or CHORUS_WORKFLOW_VERSION
            metadata = dict(c.metadata.get("panoptes") or {})
        else:
            user_name = user.get_username() if user is not None else f"not-logged-in-{c.volunteer_id}"
            user_id = user.pk if user is not None else None
            version = CHORUS_WORKFLOW_VERSION
            metadata = dict(c.metadata)
        metadata.setdefault("started_at", _iso(c.started_at))
        metadata.setdefault("finished_at", _iso(c.finished_at))
        metadata.setdefault("source", "chorus")
        yield {
            "classification_id": c.pk,
            "user_name": user_name,
            "user_id": user_id,
            "workflow_id": workflow.pk,
            "workflow_name": workflow.name,
            "workflow_version": version,
            "created_at": panoptes_created_at(c.created_at),
            "metadata": metadata,
            "annotations": panoptes_annotations(workflow, c.annotations),
            "subject_data": {str(c.subject_id): {**(c.subject.metadata or {}), "#external_id": c.subject.external_id}},
            "subject_ids": str(c.subject_id),
        }
