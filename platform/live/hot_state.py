"""The live loop's hot state in Redis, and its key layout. Everything here can be rebuilt from
PostgreSQL (``manage.py rebuild_aggregation``), so losing Redis loses no vote.

Per workflow ``w``:
- ``chorus:live:w:engine``: the engine state (bytes), saved every few seconds, and
  ``...:engine_version``, the ``WorkflowAggregation.state_version`` it was saved at; a worker
  catches up from it by applying the log's tail;
- ``chorus:live:w:posteriors``: hash subject id → JSON posteriors by task (what dashboards read) and
  ``chorus:live:w:skills``: hash volunteer id → skill in bits, written after every batch, complete
  up to ``...:results_version``;
- ``chorus:live:w:events``: a capped stream of events (retirements) that dashboards follow live;
- ``chorus:live:w:pending``: set while a task to apply this workflow is queued (de-duplicates
  enqueueing under load); ``chorus:live:w:lock``: the applier's lock.

The per-workflow queue of unretired subjects is deliberately *not* copied into Redis: PostgreSQL's
(workflow, status, -priority, subject) index already answers next-subjects in a few milliseconds at
100,000 subjects (bench/http_api.py), and it must also skip what each volunteer has seen, which only
PostgreSQL knows; a Redis copy would be a second truth to keep consistent. Retirement updates that
index in the transaction that records it, so a retired subject leaves every queue at once.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings

EVENTS_MAX_LENGTH = 10_000


@lru_cache(maxsize=1)
def client() -> redis.Redis:
    return redis.Redis.from_url(settings.HOT_STATE_REDIS_URL, socket_timeout=10, health_check_interval=30)


def key(workflow_id: int, name: str) -> str:
    return f"chorus:live:{workflow_id}:{name}"


def load_engine(workflow_id: int) -> tuple[bytes | None, str | None]:
    """The last saved engine state and the log version it was saved at (it may lag the log)."""
    blob, version = client().mget(key(workflow_id, "engine"), key(workflow_id, "engine_version"))
    return blob, version.decode() if version else None


def engine_version(workflow_id: int) -> str | None:
    """The log version of the saved engine, without reading the engine."""
    raw = client().get(key(workflow_id, "engine_version"))
    return raw.decode() if raw else None


def save_engine(workflow_id: int, blob: bytes, version: str) -> None:
    pipe = client().pipeline(transaction=True)
    pipe.set(key(workflow_id, "engine"), blob)
    pipe.set(key(workflow_id, "engine_version"), version)
    pipe.execute()


def results_version(workflow_id: int) -> str | None:
    raw = client().get(key(workflow_id, "results_version"))
    return raw.decode() if raw else None


def save_results(workflow_id: int, version: str, posteriors: dict[int, Any], skills: dict[int, float | None]) -> None:
    """Write touched posteriors and skills and the log version they are complete up to, in one MULTI/EXEC."""
    pipe = client().pipeline(transaction=True)
    if posteriors:
        pipe.hset(key(workflow_id, "posteriors"), mapping={str(k): json.dumps(v) for k, v in posteriors.items()})
    clean_skills = {str(k): v for k, v in skills.items() if v is not None}
    if clean_skills:
        pipe.hset(key(workflow_id, "skills"), mapping=clean_skills)
    pipe.set(key(workflow_id, "results_version"), version)
    pipe.execute()


def clear(workflow_id: int) -> None:
    names = ("engine", "engine_version", "results_version", "posteriors", "skills")
    client().delete(*(key(workflow_id, name) for name in names))


def posterior(workflow_id: int, subject_id: int) -> dict | None:
    raw = client().hget(key(workflow_id, "posteriors"), str(subject_id))
    return json.loads(raw) if raw else None


def skills(workflow_id: int) -> dict[int, float]:
    return {int(k): float(v) for k, v in client().hgetall(key(workflow_id, "skills")).items()}


def publish_events(workflow_id: int, events: list[dict]) -> None:
    if not events:
        return
    pipe = client().pipeline(transaction=False)
    for event in events:
        pipe.xadd(key(workflow_id, "events"), {"data": json.dumps(event)}, maxlen=EVENTS_MAX_LENGTH, approximate=True)
    pipe.execute()


def read_events(workflow_id: int, after: str = "0-0", block_ms: int | None = None, count: int = 100) -> list[tuple[str, dict]]:
    """Events after the stream id ``after`` ("$" for only new ones), waiting up to ``block_ms``."""
    reply = client().xread({key(workflow_id, "events"): after}, count=count, block=block_ms)
    if not reply:
        return []
    return [(event_id.decode(), json.loads(fields[b"data"])) for event_id, fields in reply[0][1]]


def mark_pending(workflow_id: int, seconds: int = 30) -> bool:
    """True if no application task was already queued for this workflow (so one should be)."""
    return bool(client().set(key(workflow_id, "pending"), b"1", nx=True, ex=seconds))


def claim_engine_save(workflow_id: int, seconds: float) -> bool:
    """True for the first caller in ``seconds``: it schedules the deferred save of the engine."""
    return bool(client().set(key(workflow_id, "engine_save"), b"1", nx=True, ex=max(1, math.ceil(seconds))))


def is_pending(workflow_id: int) -> bool:
    return bool(client().exists(key(workflow_id, "pending")))


def clear_pending(workflow_id: int) -> None:
    client().delete(key(workflow_id, "pending"))


def lock(workflow_id: int, seconds: int = 120) -> redis.lock.Lock:
    return client().lock(key(workflow_id, "lock"), timeout=seconds, blocking=False)
