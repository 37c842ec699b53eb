"""``bench/fault_run.py`` at a tiny size (issue 25's "Must show", end to end): its own embedded
PostgreSQL and Redis in a fresh folder, gunicorn, beat and a worker; 20 s of load with the worker
SIGKILLed twice and redis-server once, duplicates included. Nothing acknowledged is lost or counted
twice, no 5xx, and the rebuild reproduces the live posteriors. About a minute."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir() -> Path:
    """A fresh folder for the run's own servers, under var/ (pgserver's postgres user must reach it)."""
    path = ROOT / "var" / f"test-fault-run-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_fault_run_loses_nothing_and_answers_no_5xx(data_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env["CHORUS_DATA_DIR"] = str(data_dir)
    output = tmp_path / "fault_run.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fault_run.py"), "--seconds", "20", "--rate", "30", "--subjects", "300",
         "--volunteers", "100", "--port", "8947", "--json", "--output", str(output)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    line = json.loads(completed.stdout.strip().splitlines()[-1])
    assert line["acknowledged"] > 400 and line["stored"] >= line["acknowledged"]
    assert line["lost"] == 0 and line["double_counted"] == 0 and line["http_5xx"] == 0
    assert line["applied"] == line["stored"] and line["rebuild_matches"] is True
    assert line["max_lag_s"] < 15  # the goal is 5 s; a shared CI machine restarts a worker slowly
    report = json.loads(output.read_text())
    assert [event["fault"] for event in report["faults"]] == ["worker SIGKILL", "redis SIGKILL", "worker SIGKILL"]
    assert report["same_instant_duplicates"]["requests"] > 0 and report["log_gapless"]
    # Every server it started is stopped: nothing answers on the data folder's sockets.
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    assert not (data_dir / "redis.sock").exists()
