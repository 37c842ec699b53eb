"""Shared fixtures: a small galaxy workflow with real images in a temporary media folder, and clients.

The database is the embedded PostgreSQL (or DATABASE_URL) and the cache/throttles the embedded Redis
(or REDIS_URL) of ``chorus.settings_test``; nothing is mocked.
"""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[1]

_key_counter = itertools.count()


def new_key() -> str:
    """A fresh, valid idempotency key."""
    return f"test-key-{next(_key_counter):08d}"


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def _clear_throttles() -> None:
    """Throttle counters live in Redis and would leak from one test to the next; so would a test's
    unreachable Redis, remembered by this process for a while (``throttles.redis_failed``)."""
    from django.core.cache import cache

    from classifications import throttles

    throttles._redis_state["down_until"] = 0.0
    cache.clear()


def _png_bytes(size: tuple[int, int] = (100, 80), colour: tuple[int, int, int] = (20, 30, 40)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def make_workflow(db) -> Callable[..., object]:
    """Build a workflow with the demo's task tree (or ``tasks``) and ``n`` subjects of 100x80 px (some gold)."""
    from django.core.files.base import ContentFile

    from projects.models import Project, Subject, SubjectSet
    from projects.services import DEMO_TASKS, add_subject_image, create_workflow, link_subject_set

    def build(n: int = 6, gold_every: int = 0, slug: str = "test-galaxies", tasks: dict | None = None, **workflow_settings: object):
        project = Project.objects.create(slug=slug, title="Test galaxies")
        workflow = create_workflow(project, "Shapes", tasks or DEMO_TASKS, **workflow_settings)
        subject_set = SubjectSet.objects.create(project=project, name="set")
        for i in range(n):
            gold = {"T0": 0} if gold_every and i % gold_every == 0 else None
            subject = Subject.objects.create(
                subject_set=subject_set, external_id=f"s{i}", metadata={"ra": i, "#secret": "hidden"}, gold=gold
            )
            add_subject_image(subject, 0, f"s{i}.png", ContentFile(_png_bytes(colour=(i * 20 % 255, 30, 40))))
        link_subject_set(workflow, subject_set)
        return workflow

    return build


@pytest.fixture
def token_client(db) -> Callable[[str], object]:
    """An API client for a registered volunteer using token auth (as a script would)."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    def build(username: str = "alice"):
        user = get_user_model().objects.create_user(username=username, password="pw-" + username)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
        client.user = user
        return client

    return build


@pytest.fixture
def browser_client(db) -> object:
    """An anonymous browser: session cookie and CSRF checks, as the classifier page uses the API."""
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    response = client.get("/api/session/")
    assert response.status_code == 200
    client.csrf = response.cookies["csrftoken"].value
    return client


@pytest.fixture
def payload() -> Callable[..., dict]:
    """Builds a valid classification payload: smooth, no boxes, unless ``answers`` say otherwise."""
    return classification_payload


def classification_payload(workflow, subject_id: int, answers: list[dict] | None = None, key: str | None = None) -> dict:
    return {
        "workflow": workflow.pk,
        "subject": subject_id,
        "annotations": answers if answers is not None else [{"task": "T0", "value": 0}, {"task": "T2", "value": []}],
        "idempotency_key": key or new_key(),
        "started_at": "2026-11-21T10:00:00Z",
        "finished_at": "2026-11-21T10:00:09Z",
        "metadata": {"user_agent": "pytest"},
    }


@pytest.fixture
def clean_redis() -> None:
    """Empty the broker and the hot state: tasks queued by earlier tests name workflows that are gone."""
    import redis
    from django.conf import settings

    from live import hot_state

    hot_state.client().flushdb()
    broker = settings.REDIS_URL
    if broker.startswith("redis+socket://"):
        redis.Redis(unix_socket_path=broker.removeprefix("redis+socket://")).flushdb()
    else:
        redis.Redis.from_url(broker).flushdb()


def _database_url() -> str:
    from django.db import connection

    s = connection.settings_dict
    host = quote(s["HOST"], safe="") if s["HOST"].startswith("/") else s["HOST"]
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgresql://{s['USER']}:{s['PASSWORD'] or ''}@{host}{port}/{s['NAME']}"


@pytest.fixture
def start_worker(transactional_db, clean_redis) -> Iterator[Callable[..., subprocess.Popen]]:
    """Real ``celery worker`` processes against the test database; all stopped afterwards."""
    from django.conf import settings

    processes: list[subprocess.Popen] = []

    def start(name: str = "w1", queues: str = "aggregation", concurrency: int = 1) -> subprocess.Popen:
        log = Path(settings.DATA_DIR) / "worker-logs" / f"{name}.log"  # kept after the test, for post-mortems
        log.parent.mkdir(exist_ok=True)
        env = os.environ | {
            "DJANGO_SETTINGS_MODULE": "chorus.settings_test",
            "DATABASE_URL": _database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "CHORUS_DATA_DIR": str(settings.DATA_DIR),
            "CHORUS_MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT}",
        }
        with open(log, "w") as output:  # the worker keeps its own descriptor
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / "celery"), "-A", "chorus", "worker", "-Q", queues, "--pool", "solo"
                 if concurrency == 1 else "prefork", "--concurrency", str(concurrency), "--hostname", f"{name}@%h",
                 "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
                cwd=ROOT / "platform", env=env, stdout=output, stderr=subprocess.STDOUT,
            )
        process.log_path = log  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the embedded PostgreSQL and Redis the suite started (var/test/), after every fixture's
    teardown; external servers (DATABASE_URL / REDIS_URL) are never touched.
    ``CHORUS_KEEP_TEST_SERVERS=1`` keeps them up, for several pytest runs at once in one checkout."""
    if os.environ.get("CHORUS_KEEP_TEST_SERVERS") == "1":
        return
    from django.conf import settings

    if not settings.configured:
        return
    from chorus import embedded

    data_dir = Path(settings.DATA_DIR)
    if not os.environ.get("REDIS_URL"):
        embedded.stop_redis(data_dir)
    if not os.environ.get("DATABASE_URL"):
        embedded.stop_postgres(data_dir)
