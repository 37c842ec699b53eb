"""A killed applier's lock is taken over in seconds, not 15 (issue 25), with the real Redis and real
processes: a holder SIGKILLed on this host is replaced at once (its pid is gone, or a zombie); a dead
holder elsewhere within the lock's short TTL; a live holder keeps its lock past the TTL through its
heartbeat; and a real worker whose task meets a dead holder's lock applies the vote within seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from classifications.models import Classification
from live import hot_state
from live.services import LOCK_SECONDS

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = 987_654  # no such workflow: these tests use only its lock

_HOLDER = """
import sys, time
from live import hot_state
lock = hot_state.lock(int(sys.argv[1]), float(sys.argv[2]))
assert lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder(workflow_id: int, seconds: float) -> subprocess.Popen:
    """Another process that takes the applier lock (heartbeat and all) and keeps it."""
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "chorus.settings_test", "CHORUS_DATA_DIR": str(settings.DATA_DIR),
        "REDIS_URL": settings.REDIS_URL, "DATABASE_URL": "postgresql://unused/unused",
        "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT}",
    }
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(workflow_id), str(seconds)], env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.fixture
def lock_key() -> str:
    hot_state.client().delete(hot_state.key(WORKFLOW, "lock"))
    yield hot_state.key(WORKFLOW, "lock")
    hot_state.client().delete(hot_state.key(WORKFLOW, "lock"))


def test_a_holder_sigkilled_on_this_host_is_taken_over_at_once(lock_key: str) -> None:
    holder = _holder(WORKFLOW, seconds=30)  # a long TTL: only the dead-holder check can free it soon
    try:
        assert not hot_state.lock(WORKFLOW, LOCK_SECONDS).acquire(), "a live holder keeps its lock"
        holder.send_signal(signal.SIGKILL)
        time.sleep(0.2)  # not reaped yet: a zombie, which kill(pid, 0) still finds
        assert hot_state.client().pttl(lock_key) > 20_000
        began = time.monotonic()
        successor = hot_state.lock(WORKFLOW, LOCK_SECONDS)
        assert successor.acquire()
        assert time.monotonic() - began < 0.5
        assert hot_state.client().get(lock_key).decode() == successor.token
        successor.release()
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_dead_holder_on_another_host_is_taken_over_within_the_ttl(lock_key: str) -> None:
    # What a holder on another machine leaves when it dies: its name, and a TTL nobody renews.
    hot_state.client().set(lock_key, "elsewhere|12345|0123abcd", px=int(LOCK_SECONDS * 1000))
    began = time.monotonic()
    successor = hot_state.lock(WORKFLOW, LOCK_SECONDS)
    assert not successor.acquire()  # it may be alive: wait for the TTL
    while not successor.acquire():
        assert time.monotonic() - began < LOCK_SECONDS + 1
        time.sleep(0.05)
    assert LOCK_SECONDS - 0.5 < time.monotonic() - began < LOCK_SECONDS + 1
    successor.release()
    assert hot_state.client().get(lock_key) is None


def test_a_live_holder_keeps_its_lock_past_the_ttl_by_its_heartbeat(lock_key: str) -> None:
    holder = _holder(WORKFLOW, seconds=1.0)
    try:
        deadline = time.monotonic() + 3.5  # more than three TTLs
        while time.monotonic() < deadline:
            assert not hot_state.lock(WORKFLOW, 1.0).acquire()
            time.sleep(0.25)
    finally:
        holder.terminate()
        holder.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_meeting_a_killed_appliers_lock_applies_within_seconds(make_workflow, token_client, payload, start_worker) -> None:
    workflow = make_workflow(n=3)
    start_worker("successor")
    client = token_client()
    holder = _holder(workflow.pk, seconds=60)  # as if the applier had died with a minute's lock
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    began = time.monotonic()
    assert client.post("/api/classifications/", payload(workflow, workflow.subject_states.first().subject_id), format="json").status_code == 201
    while not Classification.objects.filter(workflow=workflow, applied_seq__isnull=False).exists():
        assert time.monotonic() - began < 5, "the vote waited on a dead holder's lock"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_task_locked_out_by_a_holder_that_dies_elsewhere_retries_when_its_lock_expires(
    make_workflow, token_client, payload, start_worker
) -> None:
    workflow = make_workflow(n=3)
    start_worker("watcher")
    client = token_client()
    hot_state.client().set(hot_state.key(workflow.pk, "lock"), "elsewhere|12345|0123abcd", px=int(LOCK_SECONDS * 1000))
    began = time.monotonic()
    assert client.post("/api/classifications/", payload(workflow, workflow.subject_states.first().subject_id), format="json").status_code == 201
    while not Classification.objects.filter(workflow=workflow, applied_seq__isnull=False).exists():
        # The task is locked out; it must not be dropped until beat's recovery (10 s or more) finds the vote.
        assert time.monotonic() - began < LOCK_SECONDS + 3, "the locked-out vote was stranded"
        time.sleep(0.05)
