"""A training run's heartbeat, on real PostgreSQL and Redis and the real (tiny) CNN: a run that beats
blocks retraining, one silent longer than ``HEARTBEAT_LIMIT_SECONDS`` (its worker killed) no longer
does and its version ends FAILED; a queued run blocks for ``TRAINING_QUEUED_SECONDS`` at most, a
started one's key lapses within the limit; a run beats through training, evaluation and its
predictions."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from live.services import apply_pending
from machine import heartbeat, training, training_data
from machine.config import machine_settings
from machine.models import ModelVersion
from projects.models import SubjectWorkflowState
from tests.machine.conftest import vote

pytestmark = pytest.mark.django_db
State = ModelVersion.State
LIMIT = heartbeat.HEARTBEAT_LIMIT_SECONDS


class _Killed(BaseException):
    """Stands for the worker process killed mid-run: like SIGKILL, no ``except Exception`` sees it,
    so the version stays TRAINING (what follows in a real worker, the task's ``finally``, never runs)."""


def _silent_for(version: ModelVersion, seconds: float) -> None:
    ModelVersion.objects.filter(pk=version.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=seconds))


def _ready(machine_workflow):
    workflow = machine_workflow({"retrain_every": 5})
    vote(workflow)
    apply_pending(workflow.pk)
    assert training.retraining_due(workflow)
    return workflow


def test_a_training_version_blocks_retraining_while_it_beats_and_is_failed_once_silent(
    machine_workflow, django_capture_on_commit_callbacks,
) -> None:
    workflow = _ready(machine_workflow)
    version = ModelVersion.objects.create(workflow=workflow, version=1, state=State.TRAINING, retired_seen=0)
    assert cache.get(heartbeat.training_key(workflow.pk)) is None  # the row alone blocks (Redis may forget)
    assert not training.retraining_due(workflow)
    _silent_for(version, LIMIT - 30)
    assert not training.retraining_due(workflow)  # silent, not yet for long enough
    _silent_for(version, LIMIT + 30)
    heartbeat.heartbeat(version)  # it beat again just in time
    assert not training.retraining_due(workflow)
    version.refresh_from_db()
    assert version.state == State.TRAINING and version.error == ""

    _silent_for(version, LIMIT + 1)
    with django_capture_on_commit_callbacks() as callbacks:
        assert training.check_retraining() == [workflow.pk]  # what beat runs: no longer waits
    assert len(callbacks) == 1  # the new run's task
    version.refresh_from_db()
    assert version.state == State.FAILED and version.error == heartbeat.LOST_RUN_ERROR and "worker lost" in version.error
    assert not training.retraining_due(workflow)  # the new run is queued


def test_an_older_lost_version_is_failed_while_a_newer_run_beats(machine_workflow) -> None:
    """Celery redelivers a killed task at once (acks_late, reject on worker lost): its new run starts
    while the lost one's version still looks alive; that one must still end FAILED."""
    workflow = _ready(machine_workflow)
    lost = ModelVersion.objects.create(workflow=workflow, version=1, state=State.TRAINING)
    redelivered = ModelVersion.objects.create(workflow=workflow, version=2, state=State.TRAINING)
    _silent_for(lost, LIMIT + 1)
    assert not training.retraining_due(workflow)
    assert dict(ModelVersion.objects.filter(workflow=workflow).values_list("version", "state")) == {
        1: State.FAILED, 2: State.TRAINING}
    redelivered.refresh_from_db()
    assert redelivered.error == ""


def test_a_queued_run_blocks_for_a_bounded_time_and_a_killed_one_within_the_limit(
    machine_workflow, monkeypatch, django_capture_on_commit_callbacks,
) -> None:
    workflow = machine_workflow({"retrain_every": 5})
    non_gold = sorted(SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).values_list("subject_id", flat=True))
    vote(workflow, subject_ids=non_gold[::2])  # half now, half while the run is lost
    apply_pending(workflow.pk)
    assert training.retraining_due(workflow)
    key = heartbeat.training_key(workflow.pk)
    with django_capture_on_commit_callbacks():
        training.request_retraining(workflow, reason="manual")
    # Queued, no version yet: blocked, but the key lapses by itself if the task is lost.
    assert LIMIT < cache.ttl(key) <= heartbeat.TRAINING_QUEUED_SECONDS
    assert not training.retraining_due(workflow)

    # The run starts and its worker is killed in its first optimiser step.
    beats: list[int | None] = []
    real = heartbeat.heartbeat

    def beat_then_die(version: ModelVersion) -> None:
        real(version)
        beats.append(cache.ttl(key))
        if len(beats) == 3:  # at the version's creation, after loading the images, first step
            raise _Killed

    monkeypatch.setattr(heartbeat, "HEARTBEAT_SECONDS", 0)
    monkeypatch.setattr(heartbeat, "heartbeat", beat_then_die)
    with pytest.raises(_Killed):
        training.train_model_version(workflow.pk, reason="manual")
    version = ModelVersion.objects.get(workflow=workflow)
    assert version.state == State.TRAINING
    assert all(0 < ttl <= LIMIT for ttl in beats)  # from its first beat, the key outlives it by the limit at most
    vote(workflow, subject_ids=non_gold[1::2], seed=1)
    apply_pending(workflow.pk)
    assert training_data.human_retired_count(workflow) - version.retired_seen >= 5  # enough for the next run ...
    assert not training.retraining_due(workflow)  # ... but for all anyone can tell, this one still runs

    cache.delete(key)  # what Redis does within LIMIT seconds of its last beat
    assert not training.retraining_due(workflow)  # its row still speaks for it
    _silent_for(version, LIMIT + 1)
    assert training.retraining_due(workflow)
    version.refresh_from_db()
    assert version.state == State.FAILED and "worker lost" in version.error

    monkeypatch.setattr(heartbeat, "heartbeat", real)
    after = training.train_model_version(workflow.pk, reason="retirements")  # the next run is unaffected
    after.refresh_from_db()
    assert after.version == 2 and after.state == State.PROMOTED and after.parent is None


def test_a_run_beats_through_training_evaluation_and_its_predictions(machine_workflow, monkeypatch) -> None:
    workflow = _ready(machine_workflow)
    key = heartbeat.training_key(workflow.pk)
    beats: list[tuple[str, object]] = []
    real = heartbeat.heartbeat

    def recording(version: ModelVersion) -> None:
        real(version)
        beats.append((ModelVersion.objects.get(pk=version.pk).state, version.heartbeat_at))

    monkeypatch.setattr(heartbeat, "HEARTBEAT_SECONDS", 0)
    monkeypatch.setattr(heartbeat, "heartbeat", recording)
    v1 = training.train_model_version(workflow.pk)
    cfg = machine_settings(workflow)
    n_train, n_validation = v1.metrics["n_train"], v1.metrics["n_validation"]
    n_active = SubjectWorkflowState.objects.filter(workflow=workflow, status="active").count()
    while_training = [b for b in beats if b[0] == State.TRAINING]
    predicting = [b for b in beats if b[0] == State.PROMOTED]
    # Created, images loaded, every step, calibrated, every batch of validation subjects; then
    # every batch of predictions, once promoted.
    steps = n_train // cfg["batch_size"] + (n_train % cfg["batch_size"] >= 2)
    assert len(while_training) >= 3 + steps + math.ceil(n_validation / cfg["inference_batch"])
    assert len(predicting) == math.ceil(n_active / cfg["inference_batch"])
    v1.refresh_from_db()
    assert v1.heartbeat_at == beats[-1][1]
    assert cache.get(key) is None  # never requested (as by ``manage.py train_model``): it leaves no key behind

    # Not promoted: the final save keeps the last beat, not the one of the version's creation.
    beats.clear()
    v2 = training.train_model_version(workflow.pk, promote=False)
    v2.refresh_from_db()
    assert v2.state == State.TRAINED and len(beats) >= 3 and v2.heartbeat_at == beats[-1][1] > v2.created_at
