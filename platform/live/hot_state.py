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
  enqueueing under load); ``chorus:live:w:lock``: the applier's lock (``ApplierLock``: who holds it,
  renewed by a heartbeat); ``chorus:live:w:watch``: the one locked-out task that watches the holder.

The per-workflow queue of unretired subjects is deliberately *not* copied into Redis: PostgreSQL's
(workflow, status, -priority, subject) index already answers next-subjects in a few milliseconds at
100,000 subjects (bench/http_api.py), and it must also skip what each volunteer has seen, which only
PostgreSQL knows; a Redis copy would be a second truth to keep consistent. Retirement updates that
index in the transaction that records it, so a retired subject leaves every queue at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import uuid
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

EVENTS_MAX_LENGTH = 10_000
# Retirement events that could not be published (Redis down) wait here, in this process, and go out
# before the next ones; at most this many per workflow (the retirements themselves are in PostgreSQL).
UNPUBLISHED_MAX = 10_000
_UNPUBLISHED: dict[int, list[dict]] = {}


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
    """Append events to the workflow's stream. Never raises for Redis: they are called after their
    transaction committed, and the retirements they announce are stored; while Redis is down they wait
    in this process and go out, in order, with the next events published."""
    backlog = _UNPUBLISHED.pop(workflow_id, [])
    events = backlog + list(events)
    if not events:
        return
    try:
        pipe = client().pipeline(transaction=False)
        for event in events:
            pipe.xadd(key(workflow_id, "events"), {"data": json.dumps(event)}, maxlen=EVENTS_MAX_LENGTH, approximate=True)
        pipe.execute()
    except RedisError as exc:
        # A partly executed pipeline may have sent some of them: a dashboard may see one twice, never miss one.
        _UNPUBLISHED[workflow_id] = events[-UNPUBLISHED_MAX:]
        logger.warning("workflow %s: %d events not published (%s); kept for the next publication", workflow_id, len(events), exc)


def read_events(workflow_id: int, after: str = "0-0", block_ms: int | None = None, count: int = 100) -> list[tuple[str, dict]]:
    """Events after the stream id ``after`` ("$" for only new ones), waiting up to ``block_ms``."""
    reply = client().xread({key(workflow_id, "events"): after}, count=count, block=block_ms)
    if not reply:
        return []
    return [(event_id.decode(), json.loads(fields[b"data"])) for event_id, fields in reply[0][1]]


# Short: a flag whose task was lost (a killed worker's unacknowledged message, a retry the broker
# refused while it was down) holds back new tasks only this long.
PENDING_SECONDS = 5


def mark_pending(workflow_id: int, seconds: int = PENDING_SECONDS) -> bool:
    """True if no application task was already queued for this workflow (so one should be)."""
    return bool(client().set(key(workflow_id, "pending"), b"1", nx=True, ex=seconds))


def claim_watch(workflow_id: int, seconds: float) -> bool:
    """True for the first locked-out task in ``seconds``: it alone retries to watch the holder."""
    return bool(client().set(key(workflow_id, "watch"), b"1", nx=True, px=max(1, int(seconds * 1000))))


def claim_engine_save(workflow_id: int, seconds: float) -> bool:
    """True for the first caller in ``seconds``: it schedules the deferred save of the engine."""
    return bool(client().set(key(workflow_id, "engine_save"), b"1", nx=True, ex=max(1, math.ceil(seconds))))


def is_pending(workflow_id: int) -> bool:
    return bool(client().exists(key(workflow_id, "pending")))


def clear_pending(workflow_id: int) -> None:
    client().delete(key(workflow_id, "pending"))


# Renew the holder's TTL; a lock that expired while nobody else took it (the heartbeat starved on a
# busy machine, Redis restarting) is taken back: the fence, not the lock, keeps batches apart.
_RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not holder then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def _holder_token() -> str:
    """What the lock holds: this process's host and pid (so that a successor can tell that it died)
    and a random part (so that this process's next acquisition is a different holder)."""
    return f"{socket.gethostname()}|{os.getpid()}|{uuid.uuid4().hex}"


def _process_is_dead(pid: int) -> bool:
    """True only when ``pid`` certainly runs nothing on this host: no such process, or a zombie."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: alive
        return False
    try:  # a SIGKILLed child not yet reaped by its parent still answers kill(0)
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


class ApplierLock:
    """The workflow's applier lock: a short TTL renewed by a heartbeat thread, naming its holder.

    Why this and not one long TTL: correctness never rests on the lock (the fencing token in
    PostgreSQL refuses a batch from a worker that lost it), only liveness does: a holder killed
    with a 15-second lock stalled its workflow for 15 s. Now
    - the TTL is ``seconds`` (a few), and a daemon thread renews it every third of that while the
      holder runs, however long one step takes (a replay of the whole log, a refit);
    - the lock's value names the holder's host and pid: a successor on the same host that finds the
      holder dead (no such process, or a zombie) deletes the lock at once, if it still holds that
      value, instead of waiting for it to expire. On another host it waits at most the TTL.
    A process that is alive but stuck keeps its heartbeat, as the old lock kept its TTL if extended;
    a paused one (SIGSTOP, a long GC) loses the lock after the TTL and its next commit is fenced.
    """

    def __init__(self, workflow_id: int, seconds: float) -> None:
        self.workflow_id = workflow_id
        self.name = key(workflow_id, "lock")
        self.seconds = float(seconds)
        self.token: str | None = None
        self.lost = False  # the heartbeat found someone else holding it
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lock if it is free or its holder is dead; never waits."""
        token = _holder_token()
        ms = int(self.seconds * 1000)
        acquired = bool(client().set(self.name, token, nx=True, px=ms))
        if not acquired and self._break_if_holder_dead():
            acquired = bool(client().set(self.name, token, nx=True, px=ms))
        if not acquired:
            return False
        self.token, self.lost = token, False
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, args=(token, self._stop), daemon=True,
                                           name=f"applier-lock-{self.workflow_id}")
        self._heartbeat.start()
        return True

    def _break_if_holder_dead(self) -> bool:
        raw = client().get(self.name)
        if raw is None:
            return True  # expired or released meanwhile
        host, _, rest = raw.decode(errors="replace").partition("|")
        pid_text = rest.partition("|")[0]
        if host != socket.gethostname() or not pid_text.isdigit() or not _process_is_dead(int(pid_text)):
            return False
        if client().eval(_RELEASE, 1, self.name, raw):
            logger.warning("workflow %s: the applier lock's holder (pid %s on this host) is dead; lock taken over",
                           self.workflow_id, pid_text)
        return True

    def _beat(self, token: str, stop: threading.Event) -> None:
        interval = self.seconds / 3
        while not stop.wait(interval):
            try:
                if not client().eval(_RENEW, 1, self.name, token, int(self.seconds * 1000)):
                    self.lost = True
                    logger.warning("workflow %s: the applier lock was taken over by another holder", self.workflow_id)
                    return
            except RedisError as exc:  # Redis restarting: try again at the next beat
                logger.warning("workflow %s: could not renew the applier lock: %s", self.workflow_id, exc)

    def remaining(self) -> float:
        """Seconds until the lock (whoever holds it) expires unless renewed; 0 when it is free."""
        ms = client().pttl(self.name)
        return max(0.0, ms / 1000) if ms and ms > 0 else 0.0

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=self.seconds)
            self._heartbeat = None
        token, self.token = self.token, None
        if token is None:
            return
        try:
            released = client().eval(_RELEASE, 1, self.name, token)
        except RedisError as exc:  # it expires on its own within the TTL
            logger.warning("workflow %s: could not release the applier lock: %s", self.workflow_id, exc)
            return
        if not released:
            logger.warning("workflow %s: aggregation lock expired before release", self.workflow_id)


def lock(workflow_id: int, seconds: float) -> ApplierLock:
    return ApplierLock(workflow_id, seconds)
