"""The demo's human–machine loop as a newcomer sees it: ``manage.py demo --crowd N`` from an empty data
folder, timed through the dashboard's own JSON, touching nothing.

    .venv/bin/python bench/demo_loop.py                                  # the issue's run: --crowd 200, 2,000 galaxies
    .venv/bin/python bench/demo_loop.py --crowd 20 --max-seconds 1800    # the README's --crowd 20
    .venv/bin/python bench/demo_loop.py --crowd 30 --galaxies 200 --max-seconds 240 \
        --machine-settings '{"image_size": 32, "pretrain_epochs": 0, "epochs": 2, "min_steps": 10}' \
        --out /tmp/demo_loop_small.json                                  # a small check that it works

It starts the demo exactly as ``scripts/demo.sh --crowd N`` does after installing (its own data folder
under /tmp, fresh unless ``--keep-data``: migrate, import the galaxies, web, worker, beat, the simulated
crowd), signs in as the demo's scientist and polls ``/dashboards/workflows/1/statistics/`` every
``--poll`` seconds, as the dashboard page does. It stops at ``--max-seconds`` after the crowd started,
or earlier once the loop has settled (the crowd finished, nothing left unapplied, no retirement for
``--settle-seconds``), then downloads the results (each subject's retirement reason and time) and
stops the demo with SIGINT, as Ctrl-C would, checking that it stopped everything.

Measured, in seconds from the crowd's start (and ``setup_seconds``, from the command to the crowd):
the first retirement by consensus, the first model version promoted (and whether it may retire:
``trained``), the first machine retirement, 50% of the galaxies retired; at the end, retirements by
kind, human votes per retired galaxy against the fixed-N majority (N: the workflow's budget, 40,
Galaxy Zoo 2's), and accuracy against the galaxies' GZ1 classes (the hidden ``#truth.*`` columns of
the demo's manifest) for the crowd alone, with the machine, and of the machine's own retirements:
the dashboard's running tally, ``dashboards.selectors.running_tally``. ``goals`` checks the issue's
"done when" (within 10 minutes: a promoted model, at least 100 machine retirements). Writes
``bench/results/demo_loop.json`` (``--out``), with a timeline of the polls.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
from projects.demo_options import positive_int, positive_rate  # noqa: E402  (stdlib only)

GOAL_SECONDS = 600  # the issue: what a newcomer sees within 10 minutes
GOAL_MACHINE_RETIREMENTS = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Dashboard:
    """The scientist's browser session: login form with CSRF, then the dashboard's JSON and downloads."""

    def __init__(self, base: str, password: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.opener.open(f"{base}/accounts/login/", timeout=30).read()
        csrf = next(c.value for c in self.jar if c.name == "csrftoken")
        form = urllib.parse.urlencode({"username": "scientist", "password": password, "csrfmiddlewaretoken": csrf}).encode()
        request = urllib.request.Request(f"{base}/accounts/login/", data=form, headers={"Referer": f"{base}/accounts/login/"})
        self.opener.open(request, timeout=30).read()
        if not any(c.name == "sessionid" for c in self.jar):
            raise RuntimeError("could not sign in as the demo's scientist")

    def get(self, path: str) -> bytes:
        with self.opener.open(self.base + path, timeout=60) as response:
            return response.read()

    def statistics(self, workflow: int) -> dict[str, Any]:
        return json.loads(self.get(f"/dashboards/workflows/{workflow}/statistics/"))


def seconds_since(start_epoch: float, iso: str | None) -> float | None:
    from datetime import datetime

    if not iso:
        return None
    return round(datetime.fromisoformat(iso).timestamp() - start_epoch, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crowd", type=positive_int, default=200, help="simulated volunteers (the issue's run: 200)")
    parser.add_argument("--crowd-rate", type=positive_rate, default=None, help="classifications a second (the demo's default: 20)")
    parser.add_argument("--galaxies", type=positive_int, default=None, help="only the sample's first N galaxies (default: all 2,000)")
    parser.add_argument("--machine-settings", default=None, help="JSON overrides of the demo's machine settings")
    parser.add_argument("--max-seconds", type=positive_rate, default=1800.0, help="stop this long after the crowd started")
    parser.add_argument("--settle-seconds", type=positive_rate, default=120.0,
                        help="stop earlier once the crowd finished, nothing is unapplied and nothing retired for this long")
    parser.add_argument("--poll", type=positive_rate, default=5.0, help="seconds between two reads of the dashboard")
    parser.add_argument("--data-dir", type=Path, default=None, help="the demo's data folder (default: a fresh one under /tmp)")
    parser.add_argument("--keep-data", action="store_true", help="keep --data-dir as it is (resume), and afterwards")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "demo_loop.json")
    args = parser.parse_args()

    data_dir = args.data_dir or Path("/tmp") / f"chorus-bench-demo-{os.getpid()}"  # short: unix socket paths are limited
    if not args.keep_data:
        shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    demo_args = ["--port", str(port), "--crowd", str(args.crowd)]
    if args.crowd_rate is not None:
        demo_args += ["--crowd-rate", f"{args.crowd_rate:g}"]
    if args.galaxies is not None:
        demo_args += ["--galaxies", str(args.galaxies)]
    if args.machine_settings is not None:
        demo_args += ["--machine-settings", args.machine_settings]
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env |= {"CHORUS_DATA_DIR": str(data_dir)}
    log_path = data_dir / "demo.log"
    load_before = os.getloadavg()
    started = time.time()
    demo = subprocess.Popen([sys.executable, "manage.py", "demo", *demo_args], cwd=ROOT, env=env,
                            stdout=open(log_path, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115 - the demo's log
    report: dict[str, Any] = {
        "command": " ".join(["bench/demo_loop.py", *sys.argv[1:]]),
        "demo_command": " ".join(["manage.py demo", *demo_args]),
        "machine": {"cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before]},
    }
    timeline: list[dict[str, Any]] = []
    try:
        crowd_started = wait_for(log_path, demo, "Simulated crowd:", 900)
        report["setup_seconds"] = round(crowd_started - started, 1)
        password = (data_dir / "demo-scientist.txt").read_text().strip()
        dashboard = Dashboard(f"http://127.0.0.1:{port}", password)
        workflow = int(re.search(r"workflow (\d+) with", log_path.read_text()).group(1))
        first_model: dict[str, Any] | None = None
        last_retired, last_change = -1, time.time()
        stats: dict[str, Any] = {}
        while True:
            now = time.time()
            stats = dashboard.statistics(workflow)
            elapsed = round(now - crowd_started, 1)
            model = stats.get("model")
            if model and first_model is None:
                first_model = {"version": model["version"], "state": model["state"], "trained": model["trained"],
                               "seen_at_seconds": elapsed, "promoted_at_seconds": seconds_since(crowd_started, model.get("promoted_at"))}
            if stats["retired"] != last_retired:
                last_retired, last_change = stats["retired"], now
            tally = stats["tally"]["groups"]["all"]
            timeline.append({
                "t": elapsed, "classifications": stats["classifications"]["total"], "unapplied": stats["classifications"]["unapplied"],
                "retired": stats["retired"], "by_kind": {k: v["count"] for k, v in stats["retired_by_kind"].items()},
                "model": model and {"version": model["version"], "trained": model["trained"]},
                "human_votes_per_retired": tally["votes_per_subject"], "accuracy": tally["accuracy"]["accuracy"],
            })
            print(json.dumps(timeline[-1]), flush=True)
            crowd_done = "The simulated crowd " in log_path.read_text()
            settled = crowd_done and stats["classifications"]["unapplied"] == 0 and now - last_change > args.settle_seconds
            if demo.poll() is not None or settled or elapsed >= args.max_seconds or stats["retired"] == stats["subjects"]:
                report["stopped_because"] = ("the demo exited" if demo.poll() is not None else "settled" if settled
                                             else "all retired" if stats["retired"] == stats["subjects"] else "max seconds")
                break
            time.sleep(args.poll)
        results = json.loads(dashboard.get(f"/dashboards/workflows/{workflow}/download/results.json"))
        report |= summarise(results, stats, first_model, crowd_started, log_path.read_text())
        report["timeline"] = timeline[:: max(1, len(timeline) // 120)]  # at most ~120 points kept
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)  # Ctrl+C
            try:
                demo.wait(timeout=90)
            except subprocess.TimeoutExpired:
                demo.kill()
        report["demo_exit_code"] = demo.returncode
        report["stopped_cleanly"] = "Stopped the embedded PostgreSQL and Redis" in log_path.read_text()
        if not args.keep_data and report["stopped_cleanly"]:
            shutil.rmtree(data_dir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report.get(k) for k in ("setup_seconds", "times_seconds", "retired", "votes", "accuracy", "goals")}, indent=1))


def wait_for(log: Path, process: subprocess.Popen, text: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the demo did not print {text!r}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return time.time()


def summarise(results: list[dict[str, Any]], stats: dict[str, Any], first_model: dict[str, Any] | None,
              crowd_started: float, log: str) -> dict[str, Any]:
    """The times from each subject's retirement, and the dashboard's last tally."""
    retired = sorted((seconds_since(crowd_started, r["retired_at"]), r["retirement_reason"] or "")
                     for r in results if r["status"] == "retired" and r["retired_at"])
    kind = [(t, reason.split(":")[0]) for t, reason in retired]
    half = (len(results) + 1) // 2

    def first(kinds: tuple[str, ...]) -> float | None:
        return next((t for t, k in kind if k in kinds), None)

    machine_times = [t for t, k in kind if k == "machine"]
    groups = stats["tally"]["groups"]
    goals = {
        "promoted_model_within_10_min": bool(first_model and (first_model["promoted_at_seconds"] or first_model["seen_at_seconds"]) <= GOAL_SECONDS),
        "machine_retirements_within_10_min": sum(t <= GOAL_SECONDS for t in machine_times),
    }
    goals["at_least_100_machine_retirements_within_10_min"] = goals["machine_retirements_within_10_min"] >= GOAL_MACHINE_RETIREMENTS
    crowd_line = next((line for line in log.splitlines() if line.startswith("simulated crowd ") and " in " in line), None)
    return {
        "galaxies": len(results),
        "times_seconds": {
            "first_consensus_retirement": first(("consensus", "limit")),
            "first_promoted_model": first_model and (first_model["promoted_at_seconds"] or first_model["seen_at_seconds"]),
            "first_machine_retirement": machine_times[0] if machine_times else None,
            "half_retired": retired[half - 1][0] if len(retired) >= half else None,
        },
        "first_model": first_model,
        "model_at_end": stats.get("model") and {k: stats["model"].get(k) for k in ("version", "state", "trained", "accuracy")},
        "retired": {"total": len(retired), **{k: sum(1 for _, x in kind if x == k) for k in sorted({x for _, x in kind})}},
        "classifications": stats["classifications"],
        "votes": {
            "fixed_n": stats["tally"]["fixed_n"],
            **{name: {k: groups[name][k] for k in ("retired", "human_votes", "votes_per_subject", "fixed_n_votes", "fewer")}
               for name in ("crowd", "machine", "all")},
            "human_votes_total": stats["tally"]["human_votes_total"],
        },
        "accuracy": {name: groups[name]["accuracy"] for name in ("crowd", "machine", "all")},
        "crowd": crowd_line,
        "goals": goals,
    }


if __name__ == "__main__":
    main()
