"""Processes the platform benchmarks start beside themselves: a Celery worker as production starts it,
pointed at the benchmark's own (embedded or external) PostgreSQL and Redis. No Django at import: the
caller has set up Django before it calls these."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]


def database_url() -> str:
    """The URL of the database Django is connected to (the embedded server's socket included)."""
    from django.db import connection

    s = connection.settings_dict
    host = quote(s["HOST"], safe="") if s["HOST"].startswith("/") else s["HOST"]
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgresql://{s['USER']}:{s['PASSWORD'] or ''}@{host}{port}/{s['NAME']}"


def start_worker(name: str, queue: str, log: Path) -> subprocess.Popen:
    """One Celery worker process on ``queue`` (solo pool), its output in ``log``; returns once it is ready."""
    from django.conf import settings

    env = os.environ | {
        "DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL, "CHORUS_DATA_DIR": str(settings.DATA_DIR),
        "CHORUS_MEDIA_ROOT": str(settings.MEDIA_ROOT), "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT}",
    }
    with open(log, "w") as output:  # the worker keeps its own descriptor
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "chorus", "worker", "-Q", queue, "--pool", "solo",
             "--hostname", f"{name}@%h", "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
            cwd=ROOT / "platform", env=env, stdout=output, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 90
    while "ready." not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker {name} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return process


def reset_platform(data_dir: Path) -> None:
    """A clean database, Redis and media folder for this benchmark's own servers."""
    from django.conf import settings
    from django.core.cache import cache
    from django.core.management import call_command

    from live import hot_state

    settings.MEDIA_ROOT = data_dir / "bench-media"
    shutil.rmtree(settings.MEDIA_ROOT, ignore_errors=True)
    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    hot_state.client().flushdb()
    cache.clear()
    import redis

    url = settings.REDIS_URL
    broker = (redis.Redis(unix_socket_path=url.removeprefix("redis+socket://")) if url.startswith("redis+socket://")
              else redis.Redis.from_url(url))
    broker.flushdb()  # no task left from an earlier run


def stop_embedded_servers() -> None:
    """Stop the embedded PostgreSQL and Redis this run started (external servers, DATABASE_URL /
    REDIS_URL, are left alone): every benchmark stops what it started."""
    from django.conf import settings
    from django.db import connections

    from chorus import embedded

    connections.close_all()
    data_dir = Path(settings.DATA_DIR)
    if not os.environ.get("REDIS_URL"):
        embedded.stop_redis(data_dir)
    if not os.environ.get("DATABASE_URL"):
        embedded.stop_postgres(data_dir)
