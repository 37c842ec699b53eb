"""The demo's whole human–machine loop in headless Chromium: ``manage.py demo`` with a small simulated
crowd on 300 of the demo's galaxies and a tiny machine (32 px, two epochs, no pretraining, a retraining
every 10 human retirements, no accuracy bars), exactly the processes ``scripts/demo.sh --crowd`` runs
(gunicorn, a Celery worker, beat, the crowd, embedded PostgreSQL and Redis). The scientist's dashboard
shows, touching nothing, a promoted model version and machine retirements beside the consensus ones
in the retirement chart, with the running tally (human votes against a fixed 40-vote majority,
accuracy against the galaxies' GZ1 answers, crowd alone and with the machine); a subject still in
the queue says why it is served when it is (its acquisition score). Ctrl-C then stops everything.
Saves tests/browser/screenshots/dashboard_demo_loop.png.

The tiny machine is there to make the loop happen within a test's minutes on two shared cores; its
retirements are not meant to be accurate (the demo's own settings are ``DEMO_ACTIVE_LEARNING``, and
``bench/demo_loop.py`` times the real thing)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_demo_command import _free_port, _remove, _started_by, _stop

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
TINY_MACHINE = {
    "image_size": 32, "pretrain_epochs": 0, "epochs": 2, "warm_epochs": 1, "min_steps": 10, "batch_size": 32,
    "min_train": 10, "retrain_every": 10, "min_gold_subjects": 5, "min_gold_accuracy": 0.0, "min_retire_accuracy": 0.0,
    "stable_versions": 1, "retirement_versions": 1, "machine_threshold": 0.5, "mc_samples": 4, "calibration_folds": 0,
}
LOOP_SECONDS = 300  # bound on the wait for the loop (about 2 minutes here with other jobs running)


def test_the_dashboard_shows_the_machine_promoted_and_retiring_beside_the_crowd(new_page, screenshot, tmp_path: Path) -> None:
    port = _free_port()
    data_dir = Path("/tmp") / f"chorus-demo-loop-{os.getpid()}"  # short: unix socket paths are limited
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "XDG_RUNTIME_DIR"}}
    env |= {"CHORUS_DATA_DIR": str(data_dir), "CHORUS_LOG_LEVEL": "WARNING", "CHORUS_MACHINE_CHECK_SECONDS": "5"}
    log = tmp_path / "demo.log"
    command = [sys.executable, "manage.py", "demo", "--port", str(port), "--sample", "gz1_2000",
               "--galaxies", "300", "--crowd", "15", "--crowd-rate", "30", "--machine-settings", json.dumps(TINY_MACHINE)]
    demo = subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while "Simulated crowd:" not in log.read_text():
            assert demo.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        started = time.monotonic()
        password = (data_dir / "demo-scientist.txt").read_text().strip()
        page = new_page(viewport={"width": 1280, "height": 1400})
        page.set_default_timeout(60_000)  # the web server shares two cores with the crowd, the worker and training
        dashboard = "/projects/galaxy-demo/workflows/1/dashboard/"
        page.goto(f"{base}/accounts/login/?next={dashboard}")
        page.fill("#id_username", "scientist")
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/dashboard/$"))
        page.wait_for_selector("#chorus-dashboard[data-updated-at]")
        # The page polls its statistics every 5 s: wait for a promoted version and a few machine retirements.
        page.wait_for_function(
            """() => /version \\d+ \\(promoted\\)/.test(document.querySelector('[data-stat=model]').textContent)
                  && Number((document.querySelector('[data-stat=retired_by_reason]').textContent.match(/machine (\\d+)/) || [0, 0])[1]) >= 5""",
            timeout=LOOP_SECONDS * 1000, polling=1000,
        )
        loop_seconds = time.monotonic() - started

        def stat(name: str) -> str:
            return page.text_content(f"[data-stat={name}]").strip()

        by_kind = stat("retired_by_reason")
        assert re.search(r"consensus \d+", by_kind) and re.search(r"machine \d+", by_kind), by_kind
        # The retirement chart: the machine's line beside the consensus line.
        series = page.eval_on_selector_all("#chart-retired path.series", "els => els.map(e => e.dataset.series)")
        assert {"consensus", "machine"} <= set(series), series
        # The running tally: human votes per retired galaxy against 40, accuracy crowd alone and with the machine.
        assert re.fullmatch(r"\d+\.\d vs 40", stat("tally_votes")), stat("tally_votes")
        assert "N = 40: the workflow's budget: Galaxy Zoo 2's votes per galaxy" in stat("tally_votes_note")
        assert re.fullmatch(r"\d+\.\d%", stat("tally_accuracy")), stat("tally_accuracy")
        note = stat("tally_accuracy_note")
        assert re.search(r"crowd alone \d+\.\d% \(\d+\)", note) and re.search(r"with the machine \d+\.\d% \(\d+\)", note), note
        assert re.search(r"the machine's retirements \d+\.\d% \(\d+\)", note), note
        statistics = page.request.get(f"{base}/dashboards/workflows/1/statistics/").json()
        assert statistics["model"]["state"] == "promoted" and statistics["model"]["trained"]
        assert statistics["tally"]["groups"]["machine"]["retired"] >= 5
        screenshot(page, "dashboard_demo_loop")

        # A galaxy still in the queue: its page says why it is served when it is.
        results = page.request.get(f"{base}/dashboards/workflows/1/download/results.json").json()
        waiting = next(r["subject_id"] for r in results if r["status"] == "active" and not r["is_gold"])
        page.goto(f"{base}/projects/galaxy-demo/workflows/1/subjects/{waiting}/")
        reason = page.text_content("[data-testid=queue-reason]")
        assert re.match(r"Served [\d,]+(st|nd|rd|th) of [\d,]+ active subjects", reason), reason
        assert "its value for humans" in reason and ("acquisition score (bald)" in reason or "drew it at random" in reason), reason

        demo.send_signal(signal.SIGINT)  # Ctrl+C
        assert demo.wait(timeout=60) == 0
        assert "Stopped the embedded PostgreSQL and Redis" in log.read_text()
        assert _started_by(data_dir) == []
        print(f"promoted model and 5 machine retirements {loop_seconds:.0f} s after the crowd started")
    finally:
        if demo.poll() is None:
            _stop(demo, data_dir, signal.SIGTERM)
        _remove(data_dir)
