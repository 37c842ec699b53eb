"""The README's first command, end to end (after installation): ``manage.py demo`` brings up the web
server, a Celery worker and the scheduler on fresh embedded PostgreSQL and Redis; the next-subjects
endpoint serves real galaxies whose images load; a classification submitted over HTTP is aggregated
by the worker. The tests use the 48-galaxy sample (``--sample small``: seconds to import); the demo's
default, 2,000 galaxies, is the same code with a bigger manifest. With ``--crowd`` the simulated crowd
classifies through the same API, marked as simulated, and finishes by itself while the demo goes on."""

from __future__ import annotations

import contextlib
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
    _remove(data_dir)


def _remove(data_dir: Path) -> None:
    """Whatever a failed test left under ``data_dir``: its embedded servers stopped, any other process
    naming the folder (this test's own, the folder is unique to it) killed, the folder removed."""
    sys.path.insert(0, str(ROOT / "platform"))
    from chorus import embedded

    embedded.stop_embedded_servers(data_dir)
    for pid in _leftovers(data_dir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
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
        state = states[subjects[0]["id"]]
        # Applied and counted; a newcomer with no record yet (no gold answered) does not move the
        # posterior (aggregation.defaults.HALF_TRUST), so it is still a distribution over T0's answers.
        assert state["classification_count"] == 1
        assert abs(sum(state["posterior"]["T0"]) - 1) < 1e-6 and len(state["posterior"]["T0"]) == 4
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


def _leftovers(data_dir: Path) -> dict[int, str]:
    """The processes whose environment or command line names this data folder, by pid: whatever the
    demo started (its children and their workers inherit the environment; the embedded servers are
    given the folder, and Redis writes its title over its environment)."""
    needle = f"CHORUS_DATA_DIR={data_dir}".encode()
    found = {}
    for process in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (process / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(data_dir) in cmdline or needle in (process / "environ").read_bytes().split(b"\0"):
                found[int(process.name)] = cmdline
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _started_by(data_dir: Path) -> list[str]:
    return list(_leftovers(data_dir).values())


def _classifications(port: int, data_dir: Path) -> list[dict]:
    password = (data_dir / "demo-scientist.txt").read_text().strip()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/auth/token/", data=json.dumps(
        {"username": "scientist", "password": password}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        token = json.loads(response.read())["token"]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/projects/1/classifications/?limit=1000",
                                     headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        page = json.loads(response.read())
    return page["results"] if isinstance(page, dict) else page


def test_ctrl_c_stops_everything_it_started_and_a_restart_resumes(tmp_path: Path) -> None:
    """Ctrl-C mid-crowd: the crowd, web, worker, beat and the embedded PostgreSQL and Redis all stop;
    started again on the same folder, the same volunteers finish the galaxies, nothing imported or
    counted twice. A bad value from the command line leaves nothing running either."""
    port = _free_port()
    data_dir = Path("/tmp") / f"chorus-demo-stop-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "XDG_RUNTIME_DIR"}}
    env |= {"CHORUS_DATA_DIR": str(data_dir), "CHORUS_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "manage.py", "demo", "--port", str(port), "--web-workers", "1", "--sample", "small", "--crowd", "2"]
    demo = None
    try:
        bad = subprocess.run([sys.executable, "manage.py", "demo", "--crowd", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and "--crowd: '0': give at least 1" in bad.stderr, bad.stderr[-2000:]
        assert _started_by(data_dir) == []

        first = tmp_path / "first.log"
        demo = subprocess.Popen([*command, "--crowd-rate", "3"], cwd=ROOT, env=env, stdout=open(first, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
        deadline = time.monotonic() + 240
        while "simulated crowd: 2 volunteers" not in first.read_text():
            assert demo.poll() is None and time.monotonic() < deadline, first.read_text()[-3000:]
            time.sleep(0.5)
        # Part-way: a few classifications stored (2 volunteers × 48 galaxies at 3 a second take 32 s).
        while len(_classifications(port, data_dir)) < 6:
            assert demo.poll() is None and time.monotonic() < deadline, first.read_text()[-3000:]
            time.sleep(1)
        names = " ".join(_started_by(data_dir))
        assert all(what in names for what in ("gunicorn", "celery -A chorus worker", "celery -A chorus beat", "projects.demo_crowd",
                                              "postgres", "redis-server")), names
        demo.send_signal(signal.SIGINT)  # Ctrl+C
        assert demo.wait(timeout=60) == 0
        text = first.read_text()
        assert "simulated crowd stopped" in text and "Stopped the embedded PostgreSQL and Redis" in text, text[-3000:]
        assert _started_by(data_dir) == [], "left running after Ctrl-C"
        assert not (data_dir / "postgres" / "postmaster.pid").exists()

        second = tmp_path / "second.log"
        demo = subprocess.Popen([*command, "--crowd-rate", "40"], cwd=ROOT, env=env, stdout=open(second, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
        deadline = time.monotonic() + 180
        while "The simulated crowd finished" not in second.read_text():
            assert demo.poll() is None and time.monotonic() < deadline, second.read_text()[-3000:]
            time.sleep(0.5)
        text = second.read_text()
        assert "with 48 galaxies" in text
        rows = _classifications(port, data_dir)
        # Both volunteers (sessions kept) classified every galaxy once: 96, none twice, no third volunteer.
        assert len(rows) == 96
        assert len({row["volunteer"] for row in rows}) == 2
        assert len({(row["volunteer"], row["subject"]) for row in rows}) == 96
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 0
        assert _started_by(data_dir) == []
    finally:
        if demo is not None and demo.poll() is None:
            _stop(demo, data_dir, signal.SIGTERM)
        _remove(data_dir)


def test_a_killed_demo_takes_its_children_along_and_stop_servers_stops_the_rest(tmp_path: Path) -> None:
    """``kill -9`` of the demo: its web server, worker and scheduler stop by themselves (they get
    SIGTERM when it dies); the embedded servers it cannot stop any more are stopped by
    ``manage.py demo --stop-servers``."""
    port = _free_port()
    data_dir = Path("/tmp") / f"chorus-demo-killed-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "XDG_RUNTIME_DIR"}}
    env |= {"CHORUS_DATA_DIR": str(data_dir), "CHORUS_LOG_LEVEL": "WARNING"}
    log = tmp_path / "demo.log"
    demo = subprocess.Popen([sys.executable, "manage.py", "demo", "--port", str(port), "--web-workers", "1", "--sample", "small"],
                            cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:
        deadline = time.monotonic() + 180
        while "Chorus is running" not in log.read_text() or "gunicorn" not in " ".join(_started_by(data_dir)):
            assert demo.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        demo.kill()
        demo.wait(timeout=30)
        deadline = time.monotonic() + 60
        while any(name in cmd for cmd in _started_by(data_dir) for name in ("gunicorn", "celery")):
            assert time.monotonic() < deadline, _started_by(data_dir)
            time.sleep(0.5)
        names = " ".join(_started_by(data_dir))
        assert "postgres" in names and "redis-server" in names, names
        done = subprocess.run([sys.executable, "manage.py", "demo", "--stop-servers"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "Stopped the embedded PostgreSQL and Redis" in done.stdout, done.stdout + done.stderr
        assert _started_by(data_dir) == []
    finally:
        _remove(data_dir)
