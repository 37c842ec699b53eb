"""The test suite stops the embedded servers it starts: a pytest run in its own data folder leaves no
PostgreSQL or Redis behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_pytest_run_stops_the_embedded_servers_it_started(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "def test_uses_both_servers(db):\n"
        "    from django.core.cache import cache\n"
        "    from django.db import connection\n"
        "    cache.set('probe', 1)\n"
        "    with connection.cursor() as cursor:\n"
        "        cursor.execute('select 1')\n"
    )
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "REDIS_URL", "CHORUS_KEEP_TEST_SERVERS"}}
    env["CHORUS_DATA_DIR"] = str(data_dir)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         "-c", str(ROOT / "pyproject.toml"), "--confcutdir", str(ROOT / "tests"),
         str(ROOT / "tests" / "conftest.py"), str(probe)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert (data_dir / "postgres").is_dir(), "the run did not use the embedded PostgreSQL"
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "PostgreSQL was left running"
    assert not (data_dir / "redis.sock").exists() or not _redis_answers(data_dir / "redis.sock"), "Redis was left running"


def _redis_answers(socket_path: Path) -> bool:
    import redis

    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except redis.ConnectionError:
        return False
