"""Signal receivers: new classifications (after their transaction committed) wake the workers."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from live import hot_state

logger = logging.getLogger(__name__)

# While the broker (Redis) cannot be reached, a submission does not wait on it again for this long:
# it would add the broker's connection attempts to every request.
BROKER_RETRY_SECONDS = 1.0
WARNING_SECONDS = 10.0

_state_lock = threading.Lock()
_owed: set[int] = set()  # workflows of this process whose task could not be queued
_broker_down_until = 0.0
_last_warning = 0.0


def request_aggregation(sender: Any, workflow_ids: list[int], **kwargs: Any) -> None:
    """Queue one application task per workflow, unless one is already queued.

    The submission must not fail here: the classification is safe in PostgreSQL. If Redis or the
    broker is down, the workflow is remembered and queued (whatever its pending flag says, since the
    flag may be left from before) by this process's first submission once the broker answers again;
    a worker that reconnects and beat's recovery task find it in PostgreSQL anyway.
    """
    global _owed
    now = time.monotonic()
    with _state_lock:
        if now < _broker_down_until:
            _owed.update(workflow_ids)
            return
        owed, _owed = _owed, set()
    failed: list[int] = []
    error: Exception | None = None
    for workflow_id in sorted(set(workflow_ids) | owed):
        if error is not None:
            failed.append(workflow_id)
            continue
        try:
            from live.tasks import apply_workflow

            if hot_state.mark_pending(workflow_id) or workflow_id in owed:
                apply_workflow.delay(workflow_id)
        except (RedisError, OperationalError, OSError) as exc:
            error = exc
            failed.append(workflow_id)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the stored vote must not get a 500
            logger.exception("could not queue aggregation of workflow %s; it is queued later", workflow_id)
            error = exc
            failed.append(workflow_id)
    if error is not None:
        _broker_unreachable(failed, error)


def _broker_unreachable(workflow_ids: list[int], error: Exception) -> None:
    global _broker_down_until, _last_warning
    now = time.monotonic()
    with _state_lock:
        _owed.update(workflow_ids)
        _broker_down_until = now + BROKER_RETRY_SECONDS
        warn = now - _last_warning > WARNING_SECONDS
        if warn:
            _last_warning = now
    if warn:
        logger.warning("could not queue aggregation of workflows %s (%s: %s); queued when the broker answers again",
                       workflow_ids, type(error).__name__, error)


def owed_workflows() -> set[int]:
    """Workflows this process still has to queue (for tests and diagnostics)."""
    with _state_lock:
        return set(_owed)
