""""Send these to volunteers first": a scientist's picks jump the queue, through the queue's own
priority (docs/queue.md), recorded in the workflow's audit log.

The queue serves the highest ``priority = v / (1 + v)`` first, ``v`` = the subject's value for
humans (bits) + the machine's term (``SubjectWorkflowState.machine_score``, the CNN's acquisition
rank, in (0, 1)). A subject sent first gets ``SEND_FIRST_SCORE`` as its machine term: a hundred
bits, far more than any subject's value (a question of k answers is worth at most log2 k bits to
it), so the picks come before every other subject, in the order of their own value among themselves. The live loop keeps the term as it rewrites the priority
after each classification (``live.services.queue_priority``), so a pick stays first until it
retires, and leaves the queue as any subject does. The machine's next ranking (a new version's
predictions, ``machine.prediction``) rewrites every term: ``restore_sent_first`` then puts the
picks' back (the one hook in the machine's code). ``cancel_sent_first`` gives them back the
machine's rank (0 until its next ranking) and the engine's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction

from projects.models import SubjectWorkflowState, Workflow
from projects.services import fresh_value, log_admin_action
from similarity.models import SentFirst

SEND_FIRST_SCORE = 100.0
MAX_SENT = 5000


def _set_machine_term(workflow: Workflow, subject_ids: Sequence[int], score: float | None) -> int:
    """Set the active subjects' machine term to ``score`` (None: back to 0 until the machine ranks
    them) and recompute their priority as the live loop does; rows locked in id order first (as the
    applier locks them), so the two never deadlock. Returns how many were changed."""
    if not subject_ids:
        return 0
    table = SubjectWorkflowState._meta.db_table
    unseen = fresh_value(workflow)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {table} WHERE workflow_id = %s AND subject_id = ANY(%s) AND status = %s ORDER BY id FOR UPDATE",
            [workflow.pk, [int(i) for i in subject_ids], SubjectWorkflowState.Status.ACTIVE],
        )
        ids = [row[0] for row in cursor.fetchall()]
        if not ids:
            return 0
        # queue_priority (live.services) in SQL: v = max(value, 0) + term, priority = v / (1 + v).
        cursor.execute(
            f"""UPDATE {table} AS s SET machine_score = %s,
                       priority = (GREATEST(COALESCE((s.posterior->>'@value')::float, %s), 0) + COALESCE(%s, 0))
                                  / (1 + GREATEST(COALESCE((s.posterior->>'@value')::float, %s), 0) + COALESCE(%s, 0))
                 WHERE s.id = ANY(%s)""",
            [score, unseen, score, unseen, score, ids],
        )
        return cursor.rowcount


def send_first(workflow: Workflow, subject_ids: Sequence[int], user: Any = None) -> dict[str, int]:
    """Send the subjects to volunteers first (see the module); logged. Retired subjects are
    skipped (nobody is served them), subjects of other workflows are refused (ValueError)."""
    ids = sorted({int(i) for i in subject_ids})
    if not ids:
        raise ValueError("choose at least one subject")
    if len(ids) > MAX_SENT:
        raise ValueError(f"at most {MAX_SENT} subjects at once")
    known = set(SubjectWorkflowState.objects.filter(workflow=workflow, subject_id__in=ids).values_list("subject_id", flat=True))
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ValueError(f"subjects {unknown[:10]} are not in this workflow")
    with transaction.atomic():
        changed = _set_machine_term(workflow, ids, SEND_FIRST_SCORE)
        created = SentFirst.objects.bulk_create(
            [SentFirst(workflow=workflow, subject_id=i, requested_by=user if getattr(user, "is_authenticated", False) else None) for i in ids],
            ignore_conflicts=True,
        )
        log_admin_action(workflow, user, "send_first", {"subjects": ids[:200], "n_subjects": len(ids), "n_queued": changed})
    return {"requested": len(ids), "queued": changed, "retired_or_gone": len(ids) - changed, "recorded": len(created)}


def cancel_sent_first(workflow: Workflow, subject_ids: Sequence[int] | None, user: Any = None) -> int:
    """Withdraw the request for these subjects (None: all of them); logged. Returns how many."""
    rows = SentFirst.objects.filter(workflow=workflow)
    if subject_ids is not None:
        rows = rows.filter(subject_id__in=[int(i) for i in subject_ids])
    ids = sorted(rows.values_list("subject_id", flat=True))
    with transaction.atomic():
        rows.filter(subject_id__in=ids).delete()
        _set_machine_term(workflow, ids, None)
        log_admin_action(workflow, user, "cancel_send_first", {"subjects": ids[:200], "n_subjects": len(ids)})
    return len(ids)


def sent_first_ids(workflow: Workflow) -> list[int]:
    return sorted(SentFirst.objects.filter(workflow=workflow).values_list("subject_id", flat=True))


def restore_sent_first(workflow: Workflow) -> int:
    """After the machine ranked the queue again: the picks still active get their place back."""
    return _set_machine_term(workflow, sent_first_ids(workflow), SEND_FIRST_SCORE)
