"""One training run of a workflow's machine at a time, and a lost one found out.

A request sets the workflow's Redis key (``training_key``) until its task ends, but a worker killed
mid-run never clears it nor ends its version, left TRAINING. So a run beats (``heartbeat``): at
every optimiser step, every batch of predictions and between its stages (at most every
``HEARTBEAT_SECONDS``) it stamps its version's ``heartbeat_at`` and cuts the key's time to live to
``HEARTBEAT_LIMIT_SECONDS``. A run silent longer than that is lost: ``training_in_progress`` (asked by
``retraining_due``) marks its version FAILED and no longer waits for it (Celery redelivers the killed
task itself: ``acks_late``, ``task_reject_on_worker_lost``). The verdict rests on the row, in
PostgreSQL, not on the key: Redis is hot state that may be flushed, and a live run must not be
failed because a cache forgot it. The key covers what has no TRAINING row: a run still queued
(``TRAINING_QUEUED_SECONDS`` at most), a pretraining run (``machine.pretraining``) and the
predictions that end a run once its version is promoted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from django.core.cache import cache
from django.utils import timezone

from machine.models import ModelVersion
from projects.models import Workflow

logger = logging.getLogger(__name__)

State = ModelVersion.State
# A requested run's key lasts this long until the run starts (its first heartbeat cuts it to the
# limit below). The "ml" queue carries every workflow's training and prediction tasks, so a run may
# wait behind several; a task lost before it starts (the broker lost it, publishing failed) blocks
# its workflow's retraining this long, and a run still queued after it may be requested twice.
TRAINING_QUEUED_SECONDS = 1800
# A running run beats at most this often: one UPDATE and one Redis command, nothing at this rate.
HEARTBEAT_SECONDS = 30
# A run silent this long is lost. It beats at every optimiser step and every prediction batch, so
# its longest silence is a stage done in one call: loading the training images, or calibrating on
# the gold subjects. Ten minutes is several times the longest of those measured, even on contended
# cores (docs/machine.md, step 1). Beating per epoch instead would not do: an epoch of
# ``max_train`` subjects can itself take longer than that.
HEARTBEAT_LIMIT_SECONDS = 600
LOST_RUN_ERROR = f"worker lost: its training run sent no heartbeat for {HEARTBEAT_LIMIT_SECONDS} s"


def training_key(workflow_id: int) -> str:
    """Set (in Redis) from the request of a training run until its task ends: one run at a time.
    Its run's heartbeats keep it for ``HEARTBEAT_LIMIT_SECONDS`` at a time (see the module docstring)."""
    return f"machine:training-queued:{workflow_id}"


def heartbeat(version: ModelVersion) -> None:
    """Mark ``version``'s training run alive now: its ``heartbeat_at``, and the workflow's training
    key for ``HEARTBEAT_LIMIT_SECONDS`` more. ``touch`` only shortens or extends a key that is set:
    a run started in this process (``manage.py train_model``) was never requested, holds none, and
    must not leave one behind it."""
    version.heartbeat_at = timezone.now()  # and in memory, or the run's final save() would put back the first one
    ModelVersion.objects.filter(pk=version.pk).update(heartbeat_at=version.heartbeat_at)
    keep_training_key(version.workflow_id)


def keep_training_key(workflow_id: int) -> None:
    """The workflow's training key (a run queued or alive) lasts ``HEARTBEAT_LIMIT_SECONDS`` more, if set."""
    cache.touch(training_key(workflow_id), HEARTBEAT_LIMIT_SECONDS)


def every_heartbeat_seconds(signal: Callable[[], None]) -> Callable[..., None]:
    """A callback for every optimiser step, prediction batch or stage of a run (whatever it is
    passed) that calls ``signal()`` once ``HEARTBEAT_SECONDS`` have passed since the last call."""
    last = time.monotonic()

    def beat(*_: object) -> None:
        nonlocal last
        if time.monotonic() - last >= HEARTBEAT_SECONDS:
            signal()
            last = time.monotonic()

    return beat


def heartbeat_every(version: ModelVersion) -> Callable[..., None]:
    """``heartbeat(version)`` at most every ``HEARTBEAT_SECONDS``, for every step of its run."""
    return every_heartbeat_seconds(lambda: heartbeat(version))


def fail_lost_runs(workflow: Workflow) -> int:
    """Mark FAILED the workflow's versions still training whose run has been silent longer than
    ``HEARTBEAT_LIMIT_SECONDS`` (its worker was killed: nothing else would ever end them); returns
    how many. The condition is in the UPDATE, so a heartbeat committed meanwhile saves its run. A
    run wrongly found lost (one stage silent longer than the limit) still ends as usual, its final
    save() overwriting the verdict; the run requested meanwhile is then merely one more version."""
    silent_since = timezone.now() - timedelta(seconds=HEARTBEAT_LIMIT_SECONDS)
    lost = ModelVersion.objects.filter(workflow=workflow, state=State.TRAINING, heartbeat_at__lt=silent_since)
    n = lost.update(state=State.FAILED, error=LOST_RUN_ERROR)
    if n:
        logger.warning("workflow %s: %s training run(s) lost (no heartbeat for %s s); marked failed", workflow.pk, n, HEARTBEAT_LIMIT_SECONDS)
    return n


def training_in_progress(workflow: Workflow) -> bool:
    """Whether a training run of ``workflow`` is queued or alive: its key is set, or a version is
    training whose run beats (lost runs are marked FAILED first, ``fail_lost_runs``)."""
    fail_lost_runs(workflow)
    return bool(cache.get(training_key(workflow.pk))) or ModelVersion.objects.filter(workflow=workflow, state=State.TRAINING).exists()
