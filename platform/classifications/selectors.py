"""Queries of the volunteer side: the next subjects to show (spread over concurrent volunteers), history, counts."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, Q, QuerySet
from redis.exceptions import RedisError

from classifications.models import Classification, Volunteer
from classifications.throttles import redis_failed, throttle_redis
from projects.models import SubjectWorkflowState, Workflow

MAX_NEXT_SUBJECTS = 20

# Spreading concurrent volunteers (docs/queue.md, "Many volunteers at once"). A subject's priority
# is what one more answer is worth, but the answers of the browsers it was just served to are not in
# it yet: with the top of the queue nearly tied, every volunteer who asked within the same minute got
# the same ten subjects (measured, 200 simulated volunteers: 440 of 2,000 galaxies classified in 11
# minutes, each ~30 times, 24% of the votes on galaxies retired meanwhile). So the queue counts, in
# Redis, how often each subject was served in the last one to two minutes (``SERVED_BUCKET_SECONDS``
# buckets, the current and the previous one), and ranks the ``CANDIDATES`` x count highest-priority
# candidates by ``priority / (1 + served)``: a subject just handed to three browsers waits behind
# one nearly as valuable that nobody holds. Without Redis, plain priority order.
SERVED_BUCKET_SECONDS = 60
CANDIDATES = 4


@dataclass(frozen=True)
class QueuedSubject:
    """A subject as the next-subjects queue serves it: images and public metadata, never gold."""

    subject_id: int
    retired: bool
    metadata: dict
    images: list[dict]  # {"name": storage name, "width", "height"}, in position order
    priority: float = 0.0


# Hand-written: it runs for every batch a volunteer's browser prefetches. It walks the
# (workflow, status, -priority, subject) index and stops after `count` unseen rows; the images come
# along as one JSON array per subject instead of a second query.
_NEXT_SUBJECTS = """
SELECT s.subject_id, s.status = 'retired', subject.metadata, s.priority,
       (SELECT coalesce(json_agg(json_build_object('name', i.file, 'width', i.width, 'height', i.height)
                                 ORDER BY i.position), '[]'::json)
          FROM projects_subjectimage i WHERE i.subject_id = s.subject_id)
  FROM projects_subjectworkflowstate s
  JOIN projects_subject subject ON subject.id = s.subject_id
 WHERE s.workflow_id = %(workflow)s AND s.status = %(status)s
   AND NOT (s.subject_id = ANY(%(exclude)s))
   AND NOT EXISTS (SELECT 1 FROM classifications_classification c
                    WHERE c.volunteer_id = %(volunteer)s AND c.workflow_id = %(workflow)s AND c.subject_id = s.subject_id)
 ORDER BY s.priority DESC, s.subject_id
 LIMIT %(count)s
"""


def _queued(workflow_id: int, volunteer_id: int, status: str, count: int, exclude: list[int]) -> list[QueuedSubject]:
    with connection.cursor() as cursor:
        cursor.execute(
            _NEXT_SUBJECTS,
            {"workflow": workflow_id, "volunteer": volunteer_id, "status": status, "count": count, "exclude": exclude},
        )
        rows = cursor.fetchall()
    return [
        QueuedSubject(
            subject_id,
            retired,
            {k: v for k, v in (_json(metadata) or {}).items() if not k.startswith(("#", "!"))},
            _json(images),
            priority,
        )
        for subject_id, retired, metadata, priority, images in rows
    ]


def _json(value: object) -> object:
    """Django has psycopg hand JSON back as text (its JSONField decodes); decode it here."""
    return json.loads(value) if isinstance(value, str) else value


def next_subjects(
    workflow: Workflow, volunteer: Volunteer, count: int, exclude: set[int] | frozenset[int] = frozenset()
) -> tuple[list[QueuedSubject], bool]:
    """Up to ``count`` subjects this volunteer has not classified, highest priority first.

    Unretired subjects come first; retired ones are served only when no unretired subject is left
    for this volunteer (so a volunteer can go on classifying, uncounted, as on Zooniverse).
    ``exclude`` holds subject ids the browser already has queued. Returns (subjects, finished) where
    finished means the volunteer has classified every subject of the workflow.
    """
    count = max(1, min(count, MAX_NEXT_SUBJECTS))
    excluded = sorted(exclude)
    candidates = _queued(workflow.pk, volunteer.pk, SubjectWorkflowState.Status.ACTIVE, count * CANDIDATES, excluded)
    if candidates:
        return _spread(workflow.pk, candidates, count), False
    retired = _queued(workflow.pk, volunteer.pk, SubjectWorkflowState.Status.RETIRED, count, excluded)
    return retired, not retired and not exclude


def _served_key(workflow_id: int, bucket: int) -> str:
    return f"chorus:queue:{workflow_id}:served:{bucket}"


def _discounted(priority: float, served: int) -> float:
    """Lower for every serving, whatever the priority's sign (a scientist may set any)."""
    return priority / (1 + served) if priority >= 0 else priority * (1 + served)


def _spread(workflow_id: int, candidates: list[QueuedSubject], count: int) -> list[QueuedSubject]:
    """``count`` of the candidates (highest priority first), each discounted by how often it was
    served in the last minute or two, and those chosen counted as served (see ``CANDIDATES``)."""
    redis = throttle_redis()
    if redis is None:
        return candidates[:count]
    bucket = int(time.time() // SERVED_BUCKET_SECONDS)
    ids = [str(subject.subject_id) for subject in candidates]
    try:
        pipe = redis.pipeline(transaction=False)
        pipe.hmget(_served_key(workflow_id, bucket), ids)
        pipe.hmget(_served_key(workflow_id, bucket - 1), ids)
        now, before = pipe.execute()
        served = [int(a or 0) + int(b or 0) for a, b in zip(now, before, strict=True)]
        order = sorted(range(len(candidates)), key=lambda i: (-_discounted(candidates[i].priority, served[i]), i))
        chosen = [candidates[i] for i in order[:count]]
        pipe = redis.pipeline(transaction=False)
        key = _served_key(workflow_id, bucket)
        for subject in chosen:
            pipe.hincrby(key, str(subject.subject_id), 1)
        pipe.expire(key, 3 * SERVED_BUCKET_SECONDS)
        pipe.execute()
    except RedisError as error:
        redis_failed(error)
        return candidates[:count]
    return chosen


def volunteer_history(volunteer: Volunteer) -> QuerySet[Classification]:
    return Classification.objects.filter(volunteer=volunteer).select_related("workflow").order_by("-id")


def volunteer_counts(volunteer: Volunteer) -> list[dict]:
    """Classifications per workflow, and how many of them counted towards retirement."""
    return list(
        Classification.objects.filter(volunteer=volunteer)
        .values("workflow_id", "workflow__name")
        .annotate(classifications=Count("id"), counted=Count("id", filter=Q(counts=True)))
        .order_by("workflow_id")
    )


def project_classifications(project_id: int) -> QuerySet[Classification]:
    return Classification.objects.filter(workflow__project_id=project_id).order_by("id")


def is_project_owner(user: object, project_id: int) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    return bool(user.is_staff or user.owned_projects.filter(pk=project_id).exists())
