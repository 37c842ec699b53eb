"""Services of the live loop: apply stored classifications exactly once, retire, refit, rebuild,
recover, and take statistics snapshots.

Design (why it never loses or double-counts a vote):
- PostgreSQL is the source of truth, including the *order* in which classifications were applied:
  each gets ``applied_seq`` when applied. Replaying classifications in that order (plus the refits
  recorded in ``WorkflowAggregation.refit_at_seq``) rebuilds the engine exactly.
- One applier per workflow at a time (a Redis lock), and a fencing token in PostgreSQL
  (``WorkflowAggregation.generation``): a batch commits only if the generation is still the one it
  started from, together with its ``applied_seq`` numbers and its retirements. A worker that lost its
  lock (paused past the lock's timeout) fails to commit and changes nothing. The lock is short and
  renewed by a heartbeat, and names its holder (``hot_state.ApplierLock``): a killed holder's lock is
  taken over at once on its host, within ``LOCK_SECONDS`` elsewhere.
- Liveness never rests on Redis or the broker: unapplied classifications are found in PostgreSQL
  (``applied_seq IS NULL``, a partial index). Whoever releases the lock looks there and goes on (or
  queues a task) if anything waits; a worker requeues every unapplied workflow whenever it connects
  to the broker (start, restart, reconnection after Redis came back: ``chorus.celery``); beat's
  ``requeue_unapplied`` is the last resort. So submissions taken while Redis was down are applied
  on their own once it returns.
- Redis holds the engine state tagged with the version it was built from; after every committed batch
  the worker writes it. If a worker dies between the commit and the write, or Redis restarts, the
  next applier finds the version behind PostgreSQL's and rebuilds from the log.
- Batches by watermark: a worker takes unapplied classifications in id order, up to BATCH_SIZE at a
  time, until none is left; under load batches grow, so the per-batch costs are shared.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Max, Min
from django.utils import timezone

from classifications.models import Classification
from live import engine as engine_lib
from live import hot_state
from live.models import StatisticsSnapshot, WorkflowAggregation
from projects.models import SubjectWorkflowState, Workflow
from projects.services import link_subject_set

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
# The applier lock's TTL, renewed every third of it by the holder's heartbeat: a holder that died on
# another host blocks its workflow at most this long (on its own host, not at all: see
# hot_state.ApplierLock). The lock survives a Redis restart in the append-only file.
LOCK_SECONDS = 3.0

# A per-process copy of the last engine this worker built, keyed by its version. Only a shortcut:
# it is used when PostgreSQL's version equals it, i.e. when it is exactly the state of the log.
_LOCAL_ENGINES: dict[int, tuple[str, Any]] = {}


def _local_key(agg: WorkflowAggregation) -> str:
    """What a process's cached engine must match: the log version and the engine settings (changed
    by ``reset_engine_config`` without moving the version)."""
    return f"{agg.state_version}|{json.dumps(agg.engine_config, sort_keys=True)}"


class LostLock(RuntimeError):
    """Another worker applied this workflow meanwhile; this worker's batch was not committed."""


def aggregation_of(workflow: Workflow) -> WorkflowAggregation:
    agg, _ = WorkflowAggregation.objects.get_or_create(
        workflow=workflow, defaults={"engine_config": engine_lib.engine_config(workflow.retirement or {}, workflow.tasks)}
    )
    return agg


def _entry(classification: Classification, machine_ids: frozenset[int] = frozenset()) -> engine_lib.LoggedClassification:
    return engine_lib.LoggedClassification(
        subject_id=classification.subject_id,
        volunteer_id=classification.volunteer_id,
        annotations=classification.annotations,
        counts=classification.counts,
        gold=classification.subject.gold if classification.is_gold else None,
        # Client metadata is the volunteer's to write: a retirement request counts only from a machine agent.
        machine_retire=classification.volunteer_id in machine_ids
        and bool((classification.metadata or {}).get(engine_lib.MACHINE_RETIRE_KEY)),
        # As machine.prediction stores them (only a machine agent's are read).
        machine_probabilities=(classification.metadata or {}).get("probabilities") if classification.volunteer_id in machine_ids else None,
    )


def _machine_ids(workflow_id: int) -> frozenset[int]:
    """The volunteers of this workflow that are machine agents (machine.models.MachineAgent)."""
    from machine.selectors import machine_volunteer_ids

    return frozenset(machine_volunteer_ids(workflow_id))


def _parse_version(version: str | None) -> tuple[int, int] | None:
    if not version:
        return None
    seq, refits = version.split(":")
    return int(seq), int(refits)


def replay_log(workflow: Workflow, agg: WorkflowAggregation, engine: Any = None, after_seq: int = 0) -> Any:
    """Feed the applied log in order, with the recorded refits, into ``engine`` (default: a fresh one)
    from position ``after_seq`` on: the result is exactly the live state at ``agg``'s version."""
    engine = engine if engine is not None else engine_lib.new_engine(workflow.tasks, agg.engine_config)
    refits = Counter(agg.refit_at_seq)
    log = (
        Classification.objects.filter(
            workflow=workflow, applied_seq__isnull=False, applied_seq__gt=after_seq, applied_seq__lte=agg.applied_seq
        )
        .select_related("subject")
        .only("subject_id", "volunteer_id", "annotations", "counts", "is_gold", "applied_seq", "metadata", "subject__gold")
        .order_by("applied_seq")
    )
    machine_ids = _machine_ids(workflow.pk)
    for classification in log.iterator(chunk_size=2000):
        engine_lib.apply(engine, _entry(classification, machine_ids))
        for _ in range(refits.get(classification.applied_seq, 0)):
            engine_lib.refit(engine)
    return engine


def _current_engine(workflow: Workflow, agg: WorkflowAggregation) -> tuple[Any, bool]:
    """(engine at PostgreSQL's version, whether Redis's posteriors must be rewritten in full).

    From the fastest source that is exactly right: this process's copy at the same version; the
    engine saved in Redis plus the log's tail after it (no refit in between); or the whole log.
    """
    version = agg.state_version
    rewrite_results = hot_state.results_version(workflow.pk) != version
    cached = _LOCAL_ENGINES.get(workflow.pk)
    if cached is not None and cached[0] == _local_key(agg):
        return cached[1], rewrite_results
    blob, saved_version = hot_state.load_engine(workflow.pk)
    saved = _parse_version(saved_version)
    if blob is not None and saved is not None and saved[1] == len(agg.refit_at_seq) and saved[0] <= agg.applied_seq:
        try:
            saved_engine = engine_lib.from_bytes(blob)
        except ValueError:  # saved by an earlier release in another format: the log is the truth
            saved_engine = None
        if saved_engine is not None:
            return replay_log(workflow, agg, saved_engine, after_seq=saved[0]), rewrite_results
    logger.info("workflow %s: no usable engine state in Redis (%s, log at %s); replaying the log", workflow.pk, saved_version, version)
    return replay_log(workflow, agg), True


def _full_state(workflow: Workflow, engine: Any) -> tuple[dict[int, Any], dict[int, float | None]]:
    subject_ids = SubjectWorkflowState.objects.filter(workflow=workflow).exclude(posterior=None).values_list("subject_id", flat=True)
    posteriors = {sid: _posteriors(engine, sid) for sid in subject_ids}
    volunteers = Classification.objects.filter(workflow=workflow, applied_seq__isnull=False).order_by().values_list("volunteer_id", flat=True).distinct()
    return posteriors, {vid: engine_lib.skill_bits(engine, vid) for vid in volunteers}


RISK_KEY, VALUE_KEY = engine_lib.RISK_KEY, engine_lib.VALUE_KEY


def _posteriors(engine: Any, subject_id: int) -> dict[str, Any]:
    """What is stored for a subject (``live.engine.stored_posterior``), computed afresh."""
    return engine_lib.stored_posterior(engine, subject_id)


def queue_priority(value: float, machine_score: float | None) -> float:
    """A subject's place in the queue from its value for humans (bits) and, where the machine ranks
    the queue, its acquisition term (docs/queue.md): in [0, 1), higher served first."""
    total = max(float(value), 0.0) + (machine_score or 0.0)
    return total / (1.0 + total)


def has_unapplied(workflow_id: int) -> bool:
    return Classification.objects.filter(workflow_id=workflow_id, applied_seq__isnull=True).exists()


@dataclass
class ApplyReport:
    applied: int = 0
    retired: int = 0
    batches: int = 0
    locked_out: bool = False
    more: bool = False  # stopped after MAX_BATCHES_PER_TASK with work left
    retry_in: float = 0.0  # locked out: seconds until the holder's lock expires unless renewed


def apply_pending(workflow_id: int) -> ApplyReport:
    """Apply every unapplied classification of a workflow; safe to call from any worker at any time."""
    report = ApplyReport()
    while True:
        lock = hot_state.lock(workflow_id, LOCK_SECONDS)
        if not lock.acquire():
            # This task gives up the pending flag it was queued under, so that the next submission
            # queues a task of its own (a flag left set would strand every vote until it expired: a
            # benchmark stalled 10 minutes on it). Whoever holds the lock looks for unapplied work when
            # it lets go (below, and applier_lock); work already waiting makes one task watch the
            # holder in case it dies (live.tasks.apply_workflow retries when its lock would expire).
            hot_state.clear_pending(workflow_id)
            report.locked_out = True
            report.retry_in = lock.remaining()
            return report
        try:
            hot_state.clear_pending(workflow_id)
            _drain(workflow_id, lock, report)
        finally:
            lock.release()
        # A classification stored after the last batch was read, whose task was locked out by this
        # applier meanwhile, is found here, in PostgreSQL, whether or not its flag is still set.
        if report.more or not (hot_state.is_pending(workflow_id) or has_unapplied(workflow_id)):
            return report


ENGINE_SAVE_SECONDS = 5.0
MAX_BATCHES_PER_TASK = 20
_ENGINE_SAVED_AT: dict[int, float] = {}  # when this process last saved each workflow's engine


def _save_engine(workflow_id: int, engine: Any, agg: WorkflowAggregation) -> None:
    hot_state.save_engine(workflow_id, engine_lib.to_bytes(engine), agg.state_version)
    _ENGINE_SAVED_AT[workflow_id] = time.monotonic()


def _drain(workflow_id: int, lock: Any, report: ApplyReport) -> None:
    workflow = Workflow.objects.get(pk=workflow_id)
    agg = aggregation_of(workflow)
    engine, rewrite_all = _current_engine(workflow, agg)
    while True:
        batch = list(
            Classification.objects.filter(workflow_id=workflow_id, applied_seq__isnull=True)
            .select_related("subject")
            .only("id", "subject_id", "volunteer_id", "annotations", "counts", "is_gold", "metadata", "subject__gold")
            .order_by("id")[:BATCH_SIZE]
        )
        if not batch:
            if rewrite_all:
                posteriors, skills = _full_state(workflow, engine)
                hot_state.save_results(workflow_id, agg.state_version, posteriors, skills)
            # Saving the whole engine costs more than applying a batch of hundreds (it is every
            # subject's state), so under load it is saved every ENGINE_SAVE_SECONDS, not after
            # every task: a later task with nothing to apply saves the final state, and until then
            # a successor catches up from the saved one through the log's tail (_current_engine).
            recently_saved = time.monotonic() - _ENGINE_SAVED_AT.get(workflow_id, -math.inf) < ENGINE_SAVE_SECONDS
            if (report.batches and not recently_saved) or (
                not report.batches and hot_state.engine_version(workflow_id) != agg.state_version
            ):
                _save_engine(workflow_id, engine, agg)
            elif report.batches and hot_state.claim_engine_save(workflow_id, ENGINE_SAVE_SECONDS):
                from live.tasks import apply_workflow

                apply_workflow.apply_async((workflow_id,), countdown=ENGINE_SAVE_SECONDS)
            return
        agg, retired = _apply_batch(workflow, agg, engine, batch, rewrite_all)
        rewrite_all = False
        report.applied += len(batch)
        report.retired += retired
        report.batches += 1
        if report.batches >= MAX_BATCHES_PER_TASK:
            # Fairness: a workflow with a huge backlog must not hold a worker while another
            # workflow's votes wait; the task re-queues itself behind them (see live.tasks).
            report.more = True
            _save_engine(workflow_id, engine, agg)
            return
        if time.monotonic() - _ENGINE_SAVED_AT.get(workflow_id, -math.inf) > ENGINE_SAVE_SECONDS:
            _save_engine(workflow_id, engine, agg)
        if lock.lost:  # its heartbeat found it taken over: another applier goes on, the fence refuses ours
            raise LostLock(f"workflow {workflow_id}: the applier lock was lost")


def _apply_batch(
    workflow: Workflow, agg: WorkflowAggregation, engine: Any, batch: list[Classification], rewrite_all: bool
) -> tuple[WorkflowAggregation, int]:
    posteriors: dict[int, Any] = {}
    paths: list[dict] = []  # each classification's view of its subject: the posterior's path
    newly_retired: dict[int, str] = {}
    machine_ids = _machine_ids(workflow.pk)
    first_seq = agg.applied_seq + 1
    now = timezone.now()
    try:
        for classification in batch:
            applied = engine_lib.apply(engine, _entry(classification, machine_ids))
            posteriors[classification.subject_id] = applied.stored
            paths.append(posteriors[classification.subject_id])
            if applied.newly_retired and applied.retired_reason:
                newly_retired[classification.subject_id] = applied.retired_reason
        with transaction.atomic():
            fenced = WorkflowAggregation.objects.filter(pk=agg.pk, generation=agg.generation).update(
                generation=F("generation") + 1, applied_seq=agg.applied_seq + len(batch), last_applied_at=now
            )
            if fenced != 1:
                raise LostLock(f"workflow {workflow.pk}: generation moved past {agg.generation}")
            _number_batch(batch, first_seq, now, paths)
            _store_posteriors(workflow, posteriors)
            events = _retire(workflow, newly_retired, now)
            transaction.on_commit(lambda: hot_state.publish_events(workflow.pk, events))
    except BaseException:
        # This engine saw a batch that never committed (lost lock, deadlock, lost connection, a bad
        # entry): it is no longer the state at the cached version, and a retry must not reuse it.
        _LOCAL_ENGINES.pop(workflow.pk, None)
        raise
    agg.refresh_from_db()
    _LOCAL_ENGINES[workflow.pk] = (_local_key(agg), engine)
    skills = {vid: engine_lib.skill_bits(engine, vid) for vid in {c.volunteer_id for c in batch}}
    if rewrite_all:
        all_posteriors, all_skills = _full_state(workflow, engine)
        posteriors, skills = all_posteriors | posteriors, all_skills | skills
    hot_state.save_results(workflow.pk, agg.state_version, posteriors, skills)
    return agg, len(events)


def _number_batch(batch: list[Classification], first_seq: int, now: Any, paths: list[dict]) -> None:
    """One UPDATE numbers the whole batch (and keeps each posterior after it); it must find every
    row still unapplied."""
    ids = [c.pk for c in batch]
    seqs = list(range(first_seq, first_seq + len(batch)))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE classifications_classification AS c
               SET applied_seq = v.seq, applied_at = %s, posterior_after = v.posterior
              FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, seq bigint, posterior jsonb)
             WHERE c.id = v.id AND c.applied_seq IS NULL
            """,
            # One JSON document, not a text[] of them: psycopg quotes each array element with a
            # regular expression, which cost a third of a batch's time.
            [now, orjson.dumps([{"id": i, "seq": q, "posterior": p} for i, q, p in zip(ids, seqs, paths, strict=True)]).decode()],
        )
        if cursor.rowcount != len(batch):
            raise LostLock("some classifications of the batch were applied by another worker")


def _store_posteriors(workflow: Workflow, posteriors: dict[int, Any]) -> None:
    """Write each touched subject's posterior and queue priority: two statements (the ORM's
    bulk_update built a CASE per row and cost more than applying the batch)."""
    with connection.cursor() as cursor:
        # Lock the rows in id order first: submissions also update these rows (their counts), in id
        # order too, so the two can never wait on each other in a cycle (no deadlock).
        cursor.execute(
            "SELECT id, subject_id, machine_score FROM projects_subjectworkflowstate"
            " WHERE workflow_id = %s AND subject_id = ANY(%s) ORDER BY id FOR UPDATE",
            [workflow.pk, list(posteriors)],
        )
        states = cursor.fetchall()
        # The queue follows the engine: each applied classification moves its subject's priority.
        priorities = [queue_priority(posteriors[subject_id].get(VALUE_KEY, 0.0), score) for _, subject_id, score in states]
        cursor.execute(
            """
            UPDATE projects_subjectworkflowstate AS s SET posterior = v.posterior, priority = v.priority
              FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, posterior jsonb, priority double precision)
             WHERE s.id = v.id
            """,
            [orjson.dumps([{"id": state_id, "posterior": posteriors[subject_id], "priority": priority}
                           for (state_id, subject_id, _), priority in zip(states, priorities, strict=True)]).decode()],
        )


def _retire(workflow: Workflow, reasons: dict[int, str], now: Any) -> list[dict]:
    """Retire subjects (the first reason wins); they leave every volunteer's queue at once."""
    events = []
    for subject_id, reason in reasons.items():
        updated = SubjectWorkflowState.objects.filter(
            workflow=workflow, subject_id=subject_id, status=SubjectWorkflowState.Status.ACTIVE
        ).update(status=SubjectWorkflowState.Status.RETIRED, retired_at=now, retirement_reason=reason)
        if updated:
            events.append({"type": "retired", "subject": subject_id, "reason": reason, "at": now.isoformat()})
    return events


class LockBusy(RuntimeError):
    """Another worker holds the workflow's applier lock; try again later."""


@contextlib.contextmanager
def applier_lock(workflow_id: int, wait_seconds: float) -> Iterator[Any]:
    """Hold the workflow's applier lock (waiting up to ``wait_seconds``) for a refit, a rebuild or a
    reset: nothing else may apply the workflow meanwhile."""
    lock = hot_state.lock(workflow_id, LOCK_SECONDS)
    deadline = time.monotonic() + wait_seconds
    while not lock.acquire():
        if time.monotonic() > deadline:
            raise LockBusy(f"workflow {workflow_id}: the applier holds the lock; try again")
        time.sleep(0.2)
    try:
        yield lock
    finally:
        lock.release()
        # Tasks locked out meanwhile gave up: votes that arrived during a refit are applied now.
        try:
            waiting = has_unapplied(workflow_id)
        except DatabaseError:  # the body's own error (if any) is the one to see; recovery requeues
            waiting = False
        if waiting:
            queue_apply(workflow_id)


def queue_apply(workflow_id: int) -> bool:
    """Queue a task to apply the workflow, whatever its pending flag says; False (logged) when the
    broker cannot be reached: the next connection of a worker, or beat, requeues it from PostgreSQL."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import RedisError

    from live.tasks import apply_workflow

    try:
        hot_state.mark_pending(workflow_id)
        apply_workflow.delay(workflow_id)
        return True
    except (RedisError, OperationalError) as exc:
        logger.warning("workflow %s: could not queue its application (%s); it is requeued from PostgreSQL later", workflow_id, exc)
        return False


def refit_workflow(workflow_id: int) -> int:
    """The scheduled batch EM refit (warm-started); recorded in the log so rebuilds repeat it.

    Returns the number of subjects it retired."""
    try:
        with applier_lock(workflow_id, wait_seconds=30) as lock:
            return _refit_holding_lock(workflow_id, lock)
    except LockBusy:
        logger.warning("workflow %s: refit skipped, the applier held the lock for 30 s", workflow_id)
        return 0


# A refit also when a workflow's log has doubled since its last one (from GROWTH_REFIT_MIN applied
# classifications), besides the scheduled hourly refit. Why: skills count only as far as the evidence
# behind them (docs/sybil.md), so a new project without gold retired nothing until its first hourly
# refit taught the engine who is reliable. Doubling makes them early while the log is small, and
# rare (logarithmic in its size) once the hourly refits take over.
GROWTH_REFIT_MIN = 200


def refit_is_due_for_growth(agg: WorkflowAggregation) -> bool:
    last = agg.refit_at_seq[-1] if agg.refit_at_seq else 0
    return agg.applied_seq >= max(GROWTH_REFIT_MIN, 2 * last)


def refit_grown_workflow(workflow_id: int) -> int | None:
    """``refit_workflow`` if the log has doubled since the last refit (checked again under the lock,
    so a duplicate task is a no-op); ``None`` when it was not due. Returns the number retired."""
    agg = WorkflowAggregation.objects.filter(workflow_id=workflow_id).first()
    if agg is None or not refit_is_due_for_growth(agg):
        return None
    try:
        with applier_lock(workflow_id, wait_seconds=30) as lock:
            return _refit_holding_lock(workflow_id, lock, only_if_grown=True)
    except LockBusy:
        logger.warning("workflow %s: growth refit skipped, the applier held the lock for 30 s", workflow_id)
        return None


def grown_workflows() -> list[int]:
    """The active workflows whose log has doubled since their last refit."""
    return [agg.workflow_id for agg in WorkflowAggregation.objects.filter(workflow__active=True).only("workflow_id", "applied_seq", "refit_at_seq")
            if refit_is_due_for_growth(agg)]


def _refit_holding_lock(workflow_id: int, lock: Any, only_if_grown: bool = False) -> int | None:
    report = ApplyReport()
    _drain(workflow_id, lock, report)  # refit at a clean point of the log
    workflow = Workflow.objects.get(pk=workflow_id)
    agg = aggregation_of(workflow)
    if agg.applied_seq == 0:
        return 0
    if only_if_grown and not refit_is_due_for_growth(agg):
        return None
    engine, _ = _current_engine(workflow, agg)
    try:
        engine_lib.refit(engine)
    except BaseException:
        _LOCAL_ENGINES.pop(workflow_id, None)  # refitted in memory, never committed: not the log's state
        raise
    return _commit_whole_engine(workflow, agg, engine, refit_at_seq=[*agg.refit_at_seq, agg.applied_seq])


def _commit_whole_engine(workflow: Workflow, agg: WorkflowAggregation, engine: Any, **fenced_changes: Any) -> int:
    """After a change to the whole engine (a refit, new settings): fenced, store every posterior,
    retire the active subjects it retires, then rewrite Redis. Returns the number retired now."""
    retired_now = engine_lib.retired_subjects(engine)
    active = set(
        SubjectWorkflowState.objects.filter(workflow=workflow, status=SubjectWorkflowState.Status.ACTIVE, subject_id__in=list(retired_now))
        .values_list("subject_id", flat=True)
    )
    now = timezone.now()
    try:
        with transaction.atomic():
            fenced = WorkflowAggregation.objects.filter(pk=agg.pk, generation=agg.generation).update(
                generation=F("generation") + 1, **fenced_changes
            )
            if fenced != 1:
                raise LostLock(f"workflow {workflow.pk}: generation moved during a whole-engine change")
            posteriors, skills = _full_state(workflow, engine)
            _store_posteriors(workflow, posteriors)
            events = _retire(workflow, {sid: retired_now[sid] for sid in active}, now)
            transaction.on_commit(lambda: hot_state.publish_events(workflow.pk, events))
    except BaseException:
        _LOCAL_ENGINES.pop(workflow.pk, None)  # changed in memory, never committed: not the log's state
        raise
    agg.refresh_from_db()
    hot_state.clear(workflow.pk)
    hot_state.save_results(workflow.pk, agg.state_version, posteriors, skills)
    hot_state.save_engine(workflow.pk, engine_lib.to_bytes(engine), agg.state_version)
    _LOCAL_ENGINES[workflow.pk] = (_local_key(agg), engine)
    return len(events)


@dataclass
class RebuildReport:
    applied: int
    subjects: int
    max_posterior_difference: float
    retirement_mismatches: list[int]


def rebuild_hot_state(workflow_id: int) -> RebuildReport:
    """Replay the log from PostgreSQL into a fresh engine, compare it with the live results stored
    in PostgreSQL (posteriors and retirements), and rewrite Redis from it."""
    with applier_lock(workflow_id, wait_seconds=60):
        workflow = Workflow.objects.get(pk=workflow_id)
        agg = aggregation_of(workflow)
        engine = replay_log(workflow, agg)
        retired = engine_lib.retired_subjects(engine)
        worst, mismatches, compared = 0.0, [], 0
        for state in SubjectWorkflowState.objects.filter(workflow=workflow).only("subject_id", "posterior", "status", "retirement_reason"):
            if state.posterior:
                compared += 1
                worst = max(worst, _difference(_questions_only(engine, state.posterior),
                                               _questions_only(engine, _posteriors(engine, state.subject_id))))
            live_retired = state.status == SubjectWorkflowState.Status.RETIRED
            if live_retired != (state.subject_id in retired) or (live_retired and retired[state.subject_id] != state.retirement_reason):
                mismatches.append(state.subject_id)
        hot_state.clear(workflow_id)
        posteriors, skills = _full_state(workflow, engine)
        hot_state.save_results(workflow_id, agg.state_version, posteriors, skills)
        hot_state.save_engine(workflow_id, engine_lib.to_bytes(engine), agg.state_version)
        _LOCAL_ENGINES[workflow_id] = (_local_key(agg), engine)
        return RebuildReport(agg.applied_seq, compared, worst, sorted(mismatches))


def _questions_only(engine: Any, posterior: dict) -> dict:
    """The part of a stored posterior that is a function of its subject's own log and the refits: the
    question posteriors. The boxes and the whole-workflow risks are snapshots taken when the subject
    was last applied: they read engine-wide box skills and rates, which move whenever another subject
    retires, so they are rewritten (in Redis) by a rebuild, not compared."""
    return {key: value for key, value in posterior.items() if key in engine.estimators}


def _difference(a: Any, b: Any) -> float:
    """The largest numeric difference between two posterior structures (inf if their shapes differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return float("inf")
        return max((_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return float("inf")
        return max((_difference(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b))
    return 0.0 if a == b else float("inf")


def requeue_unapplied(older_than_seconds: float = 10.0) -> list[int]:
    """Recovery: queue every workflow with a classification left unapplied for ``older_than_seconds``
    whose applier committed nothing for as long (a worker killed mid-task, Redis restarted, the broker
    down at submission); a workflow that is being applied, however far behind, is left to its applier.
    Found in PostgreSQL, so it works whatever Redis lost. Returns the workflows queued."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    workflow_ids = list(
        Classification.objects.filter(applied_seq__isnull=True, created_at__lte=cutoff).order_by().values_list("workflow_id", flat=True).distinct()
    )
    busy = set(WorkflowAggregation.objects.filter(workflow_id__in=workflow_ids, last_applied_at__gt=cutoff).values_list("workflow_id", flat=True))
    queued = []
    for workflow_id in workflow_ids:
        if workflow_id in busy and older_than_seconds > 0:
            continue
        logger.warning("workflow %s: unapplied classifications older than %.0f s; re-queued", workflow_id, older_than_seconds)
        if queue_apply(workflow_id):
            queued.append(workflow_id)
    return queued


def check_ingest(quiet_minutes: float = 15.0) -> dict[str, Any]:
    """Alert (in the logs) when active workflows receive nothing for a while, or applying falls behind."""
    now = timezone.now()
    status: dict[str, Any] = {"quiet": False, "backlog": 0, "oldest_unapplied_seconds": None}
    if Workflow.objects.filter(active=True).exists():
        last = Classification.objects.aggregate(last=Max("created_at"))["last"]
        if last is None or now - last > timedelta(minutes=quiet_minutes):
            status["quiet"] = True
            logger.error("ALERT ingest quiet: no classification stored for %s minutes (last: %s)", quiet_minutes, last)
    unapplied = Classification.objects.filter(applied_seq__isnull=True)
    oldest = unapplied.aggregate(oldest=Min("created_at"))["oldest"]
    if oldest is not None:
        status["backlog"] = unapplied.count()
        status["oldest_unapplied_seconds"] = (now - oldest).total_seconds()
        if status["oldest_unapplied_seconds"] > 120:
            logger.error("ALERT aggregation behind: %s classifications unapplied, oldest %.0f s", status["backlog"], status["oldest_unapplied_seconds"])
    return status


def refresh_queue(workflow_id: int) -> int:
    """Queue refresh: every subject of the workflow's subject sets has its place in the queue."""
    workflow = Workflow.objects.get(pk=workflow_id)
    return sum(link_subject_set(workflow, subject_set) for subject_set in workflow.subject_sets.all())


def snapshot_statistics(workflow_id: int) -> StatisticsSnapshot:
    from live.selectors import workflow_statistics

    return StatisticsSnapshot.objects.create(workflow_id=workflow_id, statistics=workflow_statistics(workflow_id))


def reset_engine_config(workflow_id: int, config: dict) -> int:
    """Re-aggregate a workflow's whole log under new engine settings (a changed retirement policy or
    estimator), so they apply at once: under the applier's lock, replay the log with ``config``,
    store it as the log's config, rewrite the posteriors in PostgreSQL and Redis, and retire the
    active subjects the new policy retires. Subjects retired earlier stay retired (volunteers' work
    on them is done). Returns the number of subjects retired now."""
    with applier_lock(workflow_id, wait_seconds=60):
        workflow = Workflow.objects.get(pk=workflow_id)
        agg = aggregation_of(workflow)
        _LOCAL_ENGINES.pop(workflow_id, None)
        agg.engine_config = config
        engine = replay_log(workflow, agg)
        return _commit_whole_engine(workflow, agg, engine, engine_config=config)
