"""Services of the volunteer side: who the volunteer is, and storing classifications exactly once.

A classification is always stored (Zooniverse keeps everything); it *counts* towards retirement
only when it is this volunteer's first look at a subject that was not retired. The idempotency key
is unique per volunteer: re-sending the same key returns the stored classification and changes
nothing.

Two bounds keep one client from buying influence or the gold set (issue 25; docs/sybil.md):

- New anonymous volunteers per client address (``CHORUS_THROTTLE_NEW_ANONYMOUS``, default 30 an
  hour; counted and addressed as the throttles count and address, through ``CHORUS_NUM_PROXIES``
  trusted proxies, in this process's counters while Redis cannot be reached). Over it a request
  that would need a new one is refused (``AnonymousVolunteerLimit``, an HTTP 429) and no row is
  written; a client that keeps its session cookie never needs a new one.
- Gold feedback: only in the answer to a stored classification, at the workflow's rate, and at
  most ``CHORUS_GOLD_FEEDBACK_PER_DAY`` (default 5) distinct gold subjects per volunteer per UTC
  day, decided from the stored classifications alone, so a re-sent key gets the same answer; and at
  most ``CHORUS_GOLD_FEEDBACK_PER_ADDRESS_PER_DAY`` (default 60) distinct gold subjects per client
  address per UTC day over all its volunteers (a Redis set; no feedback while Redis is down).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from classifications.models import Classification, Volunteer
from classifications.signals import classifications_stored
from classifications.throttles import FixedWindowRedisThrottle
from projects.models import SubjectWorkflowState, Workflow
from projects.task_tree import validate_annotations

SESSION_VOLUNTEER_KEY = "chorus_volunteer_id"
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_METADATA_BYTES = 4096


class ClassificationRejected(Exception):
    """Invalid input: ``errors`` maps field names to lists of messages (an HTTP 400)."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        self.errors = errors


def volunteer_for_user(user: AbstractBaseUser) -> Volunteer:
    try:
        return user.volunteer  # often already joined by the token authentication
    except Volunteer.DoesNotExist:
        volunteer, _ = Volunteer.objects.get_or_create(user=user)
        return volunteer


class AnonymousVolunteerLimit(Exception):
    """This address has had its budget of new anonymous volunteers for the window (an HTTP 429):
    ``wait`` seconds until the next window."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"too many new anonymous volunteers from this address; try again in {wait:.0f} s")
        self.wait = wait


class NewAnonymousVolunteerThrottle(FixedWindowRedisThrottle):
    """The budget of new anonymous volunteers per client address (rate "new_anonymous",
    ``CHORUS_THROTTLE_NEW_ANONYMOUS``): the throttles' own counting (Redis fixed windows, this
    process's counters while Redis cannot be reached) and address (REMOTE_ADDR, or the
    X-Forwarded-For entry that ``CHORUS_NUM_PROXIES`` trusted proxies give, never the header as the
    client sent it). Charged by ``charge_new_anonymous_volunteer``, not by every request."""

    scope = "new_anonymous"

    def ident_for(self, request: Any) -> str | None:
        return self.get_ident(request)


def charge_new_anonymous_volunteer(request: HttpRequest) -> None:
    """Count one new anonymous volunteer against the request's address; raises
    ``AnonymousVolunteerLimit`` when the address is over its budget (nothing is created then)."""
    budget = NewAnonymousVolunteerThrottle()
    if not budget.allow_request(request, None):
        raise AnonymousVolunteerLimit(budget.wait())


def volunteer_for_request(request: HttpRequest, create: bool = True) -> Volunteer | None:
    """The request's volunteer: the signed-in user's, or the anonymous one kept in the session.

    A new anonymous volunteer is charged to the request's address first: over the address's budget
    this raises ``AnonymousVolunteerLimit`` and creates nothing.
    """
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return volunteer_for_user(user)
    session = getattr(request, "session", None)
    if session is None:
        return None
    volunteer_id = session.get(SESSION_VOLUNTEER_KEY)
    if volunteer_id is not None:
        volunteer = Volunteer.objects.filter(pk=volunteer_id, user__isnull=True).first()
        if volunteer is not None:
            return volunteer
    if not create:
        return None
    charge_new_anonymous_volunteer(request)
    volunteer = Volunteer.objects.create()
    session[SESSION_VOLUNTEER_KEY] = volunteer.pk
    return volunteer


def claim_anonymous_volunteer(request: HttpRequest, user: AbstractBaseUser) -> Volunteer:
    """On sign-up or log-in, the session's anonymous history becomes the user's."""
    volunteer_id = request.session.get(SESSION_VOLUNTEER_KEY)
    anonymous = Volunteer.objects.filter(pk=volunteer_id, user__isnull=True).first() if volunteer_id else None
    existing = Volunteer.objects.filter(user=user).first()
    if anonymous is None:
        return existing or volunteer_for_user(user)
    if existing is None:
        anonymous.user = user
        anonymous.save(update_fields=["user"])
        return anonymous
    # Both exist: move the anonymous history over; a key clash means the same submission twice.
    with transaction.atomic():
        for classification in anonymous.classifications.all():
            if not existing.classifications.filter(idempotency_key=classification.idempotency_key).exists():
                Classification.objects.filter(pk=classification.pk).update(volunteer=existing)
        anonymous.delete()
    return existing


@dataclass(frozen=True)
class SubmissionResult:
    classification: Classification
    created: bool
    gold: dict | None


_WORKFLOW_CACHE: dict[int, tuple[float, Workflow]] = {}
WORKFLOW_CACHE_SECONDS = 5.0


def cached_workflow(workflow_id: int) -> Workflow | None:
    """The workflow, cached in this process for a few seconds: it is read by every submission and
    changes rarely (pausing or editing a workflow takes effect within WORKFLOW_CACHE_SECONDS)."""
    now = time.monotonic()
    cached = _WORKFLOW_CACHE.get(workflow_id)
    if cached is not None and now - cached[0] < WORKFLOW_CACHE_SECONDS:
        return cached[1]
    workflow = Workflow.objects.filter(pk=workflow_id).first()
    if workflow is not None:
        _WORKFLOW_CACHE[workflow_id] = (now, workflow)
    return workflow


@dataclass(frozen=True)
class SubjectForSubmission:
    """What storing a classification needs to know of its subject in the workflow."""

    state_id: int
    subject_id: int
    status: str
    is_gold: bool
    gold: dict | None
    image_width: int | None
    image_height: int | None
    seen: bool


# Hand-written because it runs on every submission: the ORM spent more time building this query
# (two subqueries and an EXISTS) than PostgreSQL spent answering it.
_SUBJECT_FOR_SUBMISSION = """
SELECT s.id, s.subject_id, s.status, s.is_gold, subject.gold, image.width, image.height,
       EXISTS (SELECT 1 FROM classifications_classification c
                WHERE c.volunteer_id = %(volunteer)s AND c.workflow_id = s.workflow_id AND c.subject_id = s.subject_id)
  FROM projects_subjectworkflowstate s
  JOIN projects_subject subject ON subject.id = s.subject_id
  LEFT JOIN LATERAL (SELECT width, height FROM projects_subjectimage i
                      WHERE i.subject_id = s.subject_id ORDER BY i.position LIMIT 1) image ON true
 WHERE s.workflow_id = %(workflow)s AND s.subject_id = %(subject)s
"""


def _subject_for_submission(workflow_id: int, volunteer_id: int, subject_id: int) -> SubjectForSubmission | None:
    with connection.cursor() as cursor:
        cursor.execute(_SUBJECT_FOR_SUBMISSION, {"workflow": workflow_id, "volunteer": volunteer_id, "subject": subject_id})
        row = cursor.fetchone()
    if row is None:
        return None
    state_id, subject_id, status, is_gold, gold, width, height, seen = row
    if isinstance(gold, str):  # Django has psycopg hand JSON back as text (its JSONField decodes)
        gold = json.loads(gold)
    return SubjectForSubmission(state_id, subject_id, status, is_gold, gold, width, height, seen)


def _check_payload(volunteer: Volunteer, data: dict[str, Any]) -> tuple[Workflow, SubjectForSubmission, list[dict]]:
    """Validate one submission completely before anything is written.

    One query reads the subject's state, its first image's size and whether this volunteer has
    already classified it (``state.seen``).
    """
    errors: dict[str, list[str]] = {}
    workflow = cached_workflow(data["workflow"]) if isinstance(data.get("workflow"), int) else None
    if workflow is None:
        raise ClassificationRejected({"workflow": ["unknown workflow"]})
    if not workflow.active:
        raise ClassificationRejected({"workflow": ["this workflow is paused"]})
    state = _subject_for_submission(workflow.pk, volunteer.pk, data["subject"]) if isinstance(data.get("subject"), int) else None
    if state is None:
        raise ClassificationRejected({"subject": ["unknown subject for this workflow"]})
    size = (state.image_width, state.image_height) if state.image_width else None
    annotations, annotation_errors = validate_annotations(workflow.tasks, data.get("annotations"), size)
    if annotation_errors:
        errors["annotations"] = annotation_errors
    started, finished = data.get("started_at"), data.get("finished_at")
    if isinstance(started, datetime) and isinstance(finished, datetime) and finished < started:
        errors["finished_at"] = ["finished_at is before started_at"]
    if errors:
        raise ClassificationRejected(errors)
    return workflow, state, annotations


def _feedback_drawn(volunteer_id: int, subject_id: int, rate: float) -> bool:
    """Whether this volunteer is one of the share ``rate`` of volunteers shown this gold subject's
    answers (stable per pair, so asking again never draws again)."""
    digest = hashlib.sha256(f"{volunteer_id}:{subject_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < rate


def _within_daily_gold_feedback(volunteer_id: int, classifications: list[Classification]) -> set[int]:
    """Of these stored classifications of one volunteer (on gold subjects, drawn for feedback), the
    ids that may show it: each UTC day, feedback goes to the first ``CHORUS_GOLD_FEEDBACK_PER_DAY``
    distinct gold subjects drawn for it that the volunteer classified that day, in the order stored.
    Decided from the stored rows alone (one query), so a re-sent key gets the same answer and a batch
    of junk on gold subjects gets no more than the cap."""
    cap = int(settings.CHORUS_GOLD_FEEDBACK_PER_DAY)
    if cap <= 0 or not classifications:
        return set()
    days = sorted({c.created_at.astimezone(UTC).date() for c in classifications})
    start = datetime(days[0].year, days[0].month, days[0].day, tzinfo=UTC)
    end = datetime(days[-1].year, days[-1].month, days[-1].day, tzinfo=UTC) + timedelta(days=1)
    wanted = {c.pk for c in classifications}
    rows = (
        Classification.objects.filter(volunteer_id=volunteer_id, is_gold=True, created_at__gte=start,
                                      created_at__lt=end, pk__lte=max(wanted))
        .order_by("pk")
        .values_list("pk", "workflow_id", "subject_id", "created_at", "workflow__gold_feedback_rate")
    )
    shown: dict[Any, set[tuple[int, int]]] = {}
    allowed: set[int] = set()
    for pk, workflow_id, subject_id, created_at, rate in rows:
        day = shown.setdefault(created_at.astimezone(UTC).date(), set())
        pair = (workflow_id, subject_id)
        if pair not in day and len(day) < cap and _feedback_drawn(volunteer_id, subject_id, rate):
            day.add(pair)
        if pk in wanted and pair in day:
            allowed.add(pk)
    return allowed


# Gold subjects one client address may be shown per UTC day, over all its volunteers: a Redis set of
# (workflow, subject) per address and day, so showing one subject again costs nothing and a re-sent
# key is answered as before while the set lasts. Atomic: check, add and expire in one script.
_ADDRESS_GOLD_SCRIPT = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 172800)
return 1
"""


def _within_address_gold_feedback(address: str | None, pairs: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """Of these (workflow, subject) pairs, those the client at ``address`` may be shown today
    (``CHORUS_GOLD_FEEDBACK_PER_ADDRESS_PER_DAY``). Fails closed: with Redis unreachable, or no
    address known, no feedback (the classification itself is stored and counted as ever)."""
    cap = int(settings.CHORUS_GOLD_FEEDBACK_PER_ADDRESS_PER_DAY)
    if cap <= 0 or not pairs or not address:
        return set()
    from classifications.throttles import redis_failed, throttle_redis

    client = throttle_redis()
    if client is None:
        return set()
    key = f"chorus:gold-feedback:{address}:{datetime.now(UTC).date().isoformat()}"
    try:
        return {pair for pair in pairs if client.eval(_ADDRESS_GOLD_SCRIPT, 1, key, f"{pair[0]}:{pair[1]}", cap) == 1}
    except Exception as error:  # noqa: BLE001 - any Redis failure: no feedback, never a failed submission
        redis_failed(error)
        return set()


def _gold_feedback_many(volunteer: Volunteer, stored: list[tuple[Classification, Workflow, SubjectForSubmission]],
                        address: str | None) -> list[dict | None]:
    """The experts' answers for each stored classification: only in the answer to a classification
    already stored, only on a gold subject, at the workflow's rate, within the volunteer's daily cap
    (``_within_daily_gold_feedback``) and the client address's (``_within_address_gold_feedback``),
    so that neither a session nor one client with many sessions can collect the gold set."""
    drawn = [c for c, workflow, state in stored
             if state.is_gold and state.gold and _feedback_drawn(volunteer.pk, state.subject_id, workflow.gold_feedback_rate)]
    allowed = _within_daily_gold_feedback(volunteer.pk, drawn)
    by_address = _within_address_gold_feedback(address, sorted({(c.workflow_id, c.subject_id) for c in drawn if c.pk in allowed}))
    return [_gold_answers(workflow, state) if c.pk in allowed and (c.workflow_id, c.subject_id) in by_address else None
            for c, workflow, state in stored]


def _gold_answers(workflow: Workflow, state: SubjectForSubmission) -> dict:
    """The feedback itself: the gold answers and a sentence naming them."""
    gold = state.gold
    tasks = workflow.tasks["tasks"]
    labels = []
    for key, value in gold.items():
        task = tasks.get(key)
        if task and task["type"] in {"single", "multiple"}:
            values = value if isinstance(value, list) else [value]
            labels.extend(task["answers"][v]["label"] for v in values if isinstance(v, int) and 0 <= v < len(task["answers"]))
    return {"answers": {k: v for k, v in gold.items() if k in tasks}, "feedback": "Experts said: " + ", ".join(labels)}


def _stored(volunteer: Volunteer, key: str) -> Classification | None:
    return Classification.objects.filter(volunteer=volunteer, idempotency_key=key).first()


def _replay(existing: Classification, data: dict[str, Any], address: str | None) -> SubmissionResult:
    if existing.workflow_id != data.get("workflow") or existing.subject_id != data.get("subject"):
        raise ClassificationRejected(
            {"idempotency_key": ["this key was already used for another subject; use a new key per classification"]}
        )
    state = _subject_for_submission(existing.workflow_id, existing.volunteer_id, existing.subject_id)
    return SubmissionResult(existing, False, _gold_feedback_many(existing.volunteer, [(existing, existing.workflow, state)], address)[0])


def submit_classification(volunteer: Volunteer, data: dict[str, Any], address: str | None = None) -> SubmissionResult:
    """Store one classification exactly once; see the module docstring for what counts. ``address``:
    the client's (as the throttles see it), for the gold feedback's per-address cap; without one
    (an import, a script in-process) no gold feedback is given."""
    return submit_classifications(volunteer, [data], address)[0]


def submit_classifications(volunteer: Volunteer, items: list[dict[str, Any]], address: str | None = None) -> list[SubmissionResult]:
    """Store a batch all-or-nothing: every item is validated before any is written.

    Optimistic: the common case (a new key, a first look) costs one read and one short transaction.
    A unique constraint catches the rare races (the same key sent twice at once, or two requests of
    one volunteer counting the same subject); the whole batch is then retried once, and the retry
    sees the row that won: the key is replayed, or the classification is stored without counting.
    """
    keys = [item.get("idempotency_key") for item in items]
    for index, key in enumerate(keys):
        if not isinstance(key, str) or not IDEMPOTENCY_KEY.match(key):
            raise ClassificationRejected(_at(index, len(items), {"idempotency_key": ["8 to 64 characters of A-Z, a-z, 0-9, '_' or '-'"]}))
    if len(set(keys)) != len(keys):
        raise ClassificationRejected({"idempotency_key": ["the same key appears twice in the batch"]})
    try:
        return _submit_once(volunteer, items, look_up_keys=False, address=address)
    except IntegrityError:
        return _submit_once(volunteer, items, look_up_keys=True, address=address)


def _submit_once(volunteer: Volunteer, items: list[dict[str, Any]], look_up_keys: bool, address: str | None) -> list[SubmissionResult]:
    stored: dict[str, Classification] = {}
    if look_up_keys:
        stored = {c.idempotency_key: c for c in Classification.objects.filter(volunteer=volunteer, idempotency_key__in=[i["idempotency_key"] for i in items])}
    checked: list[tuple[Workflow, SubjectForSubmission, list[dict]] | Classification] = []
    for index, item in enumerate(items):
        if item["idempotency_key"] in stored:
            checked.append(stored[item["idempotency_key"]])
            continue
        try:
            checked.append(_check_payload(volunteer, item))
        except ClassificationRejected as rejected:
            if not look_up_keys:  # a re-sent key replays even if the workflow changed since
                existing = _stored(volunteer, item["idempotency_key"])
                if existing is not None:
                    checked.append(existing)
                    continue
            raise ClassificationRejected(_at(index, len(items), rejected.errors)) from None
    replays = [(index, check) for index, check in enumerate(checked) if isinstance(check, Classification)]
    fresh = [(index, check) for index, check in enumerate(checked) if not isinstance(check, Classification)]
    # A batch that holds one subject twice: the first look counts, a later one is "already seen".
    looked: set[tuple[int, int]] = set()
    for position, (index, (workflow, state, item_annotations)) in enumerate(fresh):
        if (workflow.pk, state.subject_id) in looked:
            fresh[position] = (index, (workflow, replace(state, seen=True), item_annotations))
        looked.add((workflow.pk, state.subject_id))
    results: dict[int, SubmissionResult] = {}
    if fresh:
        stored_now = _store(volunteer, [(items[index], *check) for index, check in fresh])
        feedback = _gold_feedback_many(
            volunteer, [(c, workflow, state) for (_, (workflow, state, _)), c in zip(fresh, stored_now, strict=True)], address)
        for (index, _), classification, gold in zip(fresh, stored_now, feedback, strict=True):
            results[index] = SubmissionResult(classification, True, gold)
        new_ids = [classification.pk for classification in stored_now]
        workflow_ids = sorted({classification.workflow_id for classification in stored_now})
        # In autocommit (the API) the statement has committed and this runs now; inside a caller's
        # transaction it waits for that commit.
        transaction.on_commit(
            lambda: classifications_stored.send(sender=Classification, classification_ids=new_ids, workflow_ids=workflow_ids)
        )
    for index, existing in replays:
        results[index] = _replay(existing, items[index], address)
    return [results[index] for index in range(len(items))]


def _at(index: int, total: int, errors: dict[str, list[str]]) -> dict[str, list[str]]:
    """Name the batch item in field errors (single submissions keep plain field names)."""
    if total == 1:
        return errors
    return {f"classifications[{index}].{field}": messages for field, messages in errors.items()}


# One statement stores a whole batch and counts it: PostgreSQL commits it on its own (autocommit),
# one round trip instead of an INSERT per row, an UPDATE per counted subject and a COMMIT; the
# ORM's query building cost more than PostgreSQL's work. A unique violation (a re-sent key, a
# second counted look) aborts the statement, so nothing of the batch is written. Counted subjects
# are locked in id order, as the live loop locks them, so that a batch and a worker never deadlock.
_INSERT_COLUMNS = (
    "workflow_id, subject_id, volunteer_id, annotations, started_at, finished_at, created_at, metadata, "
    "idempotency_key, counts, already_seen, subject_was_retired, is_gold"
)
_ROW = "(%s, %s, %s, %s::jsonb, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s)"
_STORE = """
WITH new AS (
  INSERT INTO classifications_classification ({columns}) VALUES {rows} RETURNING id, idempotency_key
), locked AS (
  SELECT id FROM projects_subjectworkflowstate WHERE id = ANY(%s) ORDER BY id FOR UPDATE
), counted AS (
  UPDATE projects_subjectworkflowstate s SET classification_count = s.classification_count + 1
    FROM locked WHERE s.id = locked.id
)
SELECT id, idempotency_key FROM new
"""


def _store(
    volunteer: Volunteer, rows: list[tuple[dict[str, Any], Workflow, SubjectForSubmission, list[dict]]]
) -> list[Classification]:
    """Insert new classifications and count those that count, in one statement (see ``_STORE``)."""
    now = timezone.now()
    classifications: list[Classification] = []
    params: list[Any] = []
    for data, workflow, state, checked_annotations in rows:
        retired = state.status == SubjectWorkflowState.Status.RETIRED
        classification = Classification(
            workflow_id=workflow.pk,
            subject_id=state.subject_id,
            volunteer=volunteer,
            annotations=checked_annotations,
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            created_at=now,
            metadata=data.get("metadata") or {},
            idempotency_key=data["idempotency_key"],
            counts=not (state.seen or retired),
            already_seen=state.seen,
            subject_was_retired=retired,
            is_gold=state.is_gold,
        )
        classification.workflow = workflow
        params += [
            workflow.pk, state.subject_id, volunteer.pk, json.dumps(checked_annotations), classification.started_at,
            classification.finished_at, now, json.dumps(classification.metadata), classification.idempotency_key,
            classification.counts, classification.already_seen, retired, state.is_gold,
        ]
        classifications.append(classification)
    counted_states = [state.state_id for (_, _, state, _), c in zip(rows, classifications, strict=True) if c.counts]
    sql = _STORE.format(columns=_INSERT_COLUMNS, rows=", ".join([_ROW] * len(rows)))
    # Inside a caller's transaction a savepoint keeps a unique violation from breaking it (the
    # caller retries); on its own the statement is its transaction.
    with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
        cursor.execute(sql, [*params, counted_states])
        ids = {key: pk for pk, key in cursor.fetchall()}
    for classification in classifications:
        classification.pk = ids[classification.idempotency_key]
        classification._state.adding = False
    return classifications
