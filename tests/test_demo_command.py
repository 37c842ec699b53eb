"""The README's first command, end to end (after installation): ``manage.py demo`` brings up the web
server, a Celery worker and the scheduler on fresh embedded PostgreSQL and Redis; the next-subjects
endpoint serves real galaxies whose images load; a classification submitted over HTTP is aggregated
by the worker. The tests use the 48-galaxy sample (``--sample small``: seconds to import); the demo's
default, 2,000 galaxies, is the same code with a bigger manifest. With ``--crowd`` the simulated crowd
classifies through the same API, marked as simulated, and finishes by itself while the demo goes on."""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



def _stop(demo: subprocess.Popen, data_dir: Path, how: signal.Signals) -> None:
    """Stop a demo process, then the embedded servers it left under ``data_dir``, and remove them."""
    demo.send_signal(how)
    try:
        demo.wait(timeout=30)
    except subprocess.TimeoutExpired:
        demo.kill()
    sys.path.insert(0, str(ROOT / "platform"))
    from chorus import embedded

    embedded.stop_embedded_servers(data_dir)
    import shutil

    shutil.rmtree(data_dir, ignore_errors=True)

def test_the_demo_serves_galaxies_and_aggregates_a_classification(tmp_path: Path) -> None:
    port = _free_port()
    data_dir = Path("/tmp") / f"chorus-demo-test-{os.getpid()}"  # short: unix socket paths are limited
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env |= {"CHORUS_DATA_DIR": str(data_dir), "CHORUS_LOG_LEVEL": "WARNING"}
    log = tmp_path / "demo.log"
    demo = subprocess.Popen(
        [sys.executable, "manage.py", "demo", "--port", str(port), "--web-workers", "1", "--sample", "small"],
        cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115 - open for the demo's life
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while "Chorus is running" not in log.read_text():
            assert demo.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar := http.cookiejar.CookieJar()))

        def call(path: str, body: dict | None = None) -> dict:
            headers = {"Content-Type": "application/json"}
            csrf = next((c.value for c in jar if c.name == "csrftoken"), None)
            if csrf:
                headers["X-CSRFToken"] = csrf
            request = urllib.request.Request(base + path, data=json.dumps(body).encode() if body else None, headers=headers)
            with opener.open(request, timeout=30) as response:
                return json.loads(response.read())

        deadline = time.monotonic() + 60
        while True:  # gunicorn may need a moment after the banner
            try:
                projects = call("/api/projects/")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        workflow_id = projects[0]["workflows"][0]["id"]
        call("/api/session/")
        subjects = call(f"/api/workflows/{workflow_id}/next-subjects/?count=3")["subjects"]
        assert len(subjects) == 3
        with opener.open(subjects[0]["images"][0]["url"], timeout=30) as response:
            assert response.headers["Content-Type"] == "image/jpeg" and len(response.read()) > 5000
        result = call("/api/classifications/", {
            "workflow": workflow_id, "subject": subjects[0]["id"], "idempotency_key": "demo-test-0001",
            "annotations": [{"task": "T0", "value": 0}, {"task": "T2", "value": []}],
        })
        assert result["counts"] is True
        # The worker applies it: the scientist (owner) sees the subject's posterior.
        password = (data_dir / "demo-scientist.txt").read_text().strip()
        token = call("/api/auth/token/", {"username": "scientist", "password": password})["token"]
        deadline = time.monotonic() + 60
        while True:
            request = urllib.request.Request(f"{base}/api/workflows/{workflow_id}/subjects/?limit=100",
                                             headers={"Authorization": f"Token {token}"})
            with urllib.request.urlopen(request, timeout=30) as response:
                states = {s["id"]: s for s in json.loads(response.read())["results"]}
            if states[subjects[0]["id"]]["posterior"]:
                break
            assert time.monotonic() < deadline, "the demo's worker did not aggregate the classification"
            time.sleep(0.5)
        assert states[subjects[0]["id"]]["posterior"]["T0"][0] > 0.25
    finally:
        _stop(demo, data_dir, signal.SIGTERM)


def test_the_demo_runs_a_simulated_crowd_that_finishes(tmp_path: Path) -> None:
    port = _free_port()
    data_dir = Path("/tmp") / f"chorus-demo-crowd-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env |= {"CHORUS_DATA_DIR": str(data_dir), "CHORUS_LOG_LEVEL": "WARNING"}
    log = tmp_path / "demo.log"
    command = [sys.executable, "manage.py", "demo", "--port", str(port), "--web-workers", "1", "--sample", "small",
               "--crowd", "3", "--crowd-rate", "30"]
    demo = subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:
        deadline = time.monotonic() + 240
        while "The simulated crowd finished" not in log.read_text():
            assert demo.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert demo.poll() is None  # the demo goes on
        text = log.read_text()
        assert "simulated crowd finished: nothing left to classify" in text
        assert "refused" not in text
        password = (data_dir / "demo-scientist.txt").read_text().strip()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/auth/token/", data=json.dumps(
            {"username": "scientist", "password": password}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            token = json.loads(response.read())["token"]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/projects/1/classifications/?limit=200",
                                         headers={"Authorization": f"Token {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            page = json.loads(response.read())
        rows = page["results"] if isinstance(page, dict) else page
        assert rows and all(row["metadata"]["simulated"] is True for row in rows)
    finally:
        _stop(demo, data_dir, signal.SIGINT)  # Ctrl+C
