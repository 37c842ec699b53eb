"""The demo's simulated crowd: N volunteers who classify the demo's galaxies through the HTTP API.

    python -m projects.demo_crowd --url http://127.0.0.1:8000 --workflow 1 --volunteers 20 --rate 20

(``manage.py demo --crowd N --crowd-rate R`` starts it next to the web server and stops it on
Ctrl-C.) Each simulated volunteer is a browser session: ``GET /api/session/`` (session and CSRF
cookies), ``GET /api/workflows/{id}/next-subjects/``, then for each subject the whole task tree
(T0; T1 for those it calls disks; boxes on T2) in one ``POST /api/classifications/`` with the
``X-CSRFToken`` header and an idempotency key. Together they submit at most ``rate``
classifications a second (a shared pace; the API's own throttles apply too: 120 requests a minute
per volunteer by default, so fewer volunteers than rate / 2 cannot reach the rate). A volunteer stops
when the queue offers it nothing unretired (every galaxy retired, or it has seen them all); the
process ends when all have stopped, or on SIGINT/SIGTERM.

Marked as simulated: every classification's metadata carries ``"simulated": true`` (and the crowd's
user agent), so the scientist can tell them apart in the exports; no migration needed.
Only the demo project: the crowd refuses any workflow that is not the demo's (project slug
``galaxy-demo`` and the demo task tree), and any subject whose galaxy it has no truth for.

Who answers what (the math in ``aggregation.simulate``; the data in ``platform/demo_data/``, copied
from real crowds, see its README.md; nothing outside the repository is read):
- Skill: each volunteer takes the confusion matrix of one real worker of the dog crowd (4 breeds,
  ``crowd_skills.json``) for T0's four answers, and the same worker's matrix between three of its
  classes for T1's three answers.
- Difficulty: each galaxy draws a real Galaxy Zoo DECaLS subject of its majority (smooth for GZ1
  ellipticals, featured otherwise; ``vote_shares.csv``) and takes its vote share's logit offset
  from the mean (``aggregation.simulate.difficulty_shifts``): an average galaxy gets the
  volunteer's own matrix, one that split 21–19 is much harder.
- Truth: the galaxy's hidden GZ1 class (``#gz1_class`` in the committed manifests), found from the
  image's file name (the SDSS object id), as the volunteer "sees" it.
- Boxes (no real galaxy boxes to copy): a third of the galaxies have one companion at a place fixed
  per galaxy; a volunteer marks it with probability 0.8, a few pixels off, and marks a spurious box
  on 5% of galaxies.
Resuming: each volunteer's cookies are kept under ``--state-dir``, its answers are a fixed function
of (seed, volunteer, subject) and its idempotency keys too, so a restarted crowd goes on as the same
volunteers, and a classification re-sent after a restart is not counted twice.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import http.cookiejar
import json
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from projects.demo_options import positive_int, positive_rate

DEMO_DATA_ROOT = Path(__file__).resolve().parents[1] / "demo_data"
DEMO_PROJECT_SLUG = "galaxy-demo"  # the same as projects.services.DEMO_PROJECT_SLUG (no Django here)
USER_AGENT = "chorus-demo-crowd/1 (simulated volunteer)"
T0_OF_CLASS = {0: 0, 1: 1, 2: 1, 3: 1, 4: 3, 5: 2}  # GZ1 class -> T0 answer
T1_OF_CLASS = {3: 0, 1: 1, 2: 2}  # GZ1 class -> T1 answer (disks only)
T1_SKILL_CLASSES = [1, 2, 3]  # which of the dog crowd's classes stand for T1's three answers
COMPANION_SHARE, SEE_COMPANION, SPURIOUS_BOX = 1 / 3, 0.8, 0.05
PAGE = 10  # subjects asked for at a time


class CrowdRefused(RuntimeError):
    """The crowd will not classify this workflow (not the demo's) or subject (no truth for it)."""


@dataclass
class CrowdData:
    """What the simulated crowd knows, from the files in ``platform/demo_data/``."""

    t0_confusions: np.ndarray  # (workers, 4, 4): real workers' confusion matrices
    t1_confusions: np.ndarray  # (workers, 3, 3)
    shares: dict[str, np.ndarray]  # "smooth" / "featured": real subjects' majority vote shares
    truth: dict[str, int]  # SDSS object id -> GZ1 class


def load_crowd_data(root: Path = DEMO_DATA_ROOT) -> CrowdData:
    """Read the committed skills, vote shares and the manifests' hidden GZ1 classes."""
    from aggregation.simulate import confusions_from_counts, restrict_confusions

    counts = np.asarray(json.loads((root / "crowd_skills.json").read_text(encoding="utf-8"))["counts"], dtype=float)
    t0 = confusions_from_counts(counts)
    shares: dict[str, list[float]] = {"smooth": [], "featured": []}
    with open(root / "vote_shares.csv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            shares[row["majority"]].append(float(row["share"]))
    truth: dict[str, int] = {}
    for manifest in sorted(root.glob("*/manifest.csv")):
        with open(manifest, encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row.get("#gz1_class", "") != "":
                    truth[row["external_id"]] = int(row["#gz1_class"])
    return CrowdData(t0, restrict_confusions(counts + 1.0, T1_SKILL_CLASSES), {k: np.asarray(v) for k, v in shares.items()}, truth)


def _stable_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big")


class SimulatedVolunteer:
    """One volunteer's skill and answers (no I/O): a fixed function of (seed, index, galaxy)."""

    def __init__(self, data: CrowdData, index: int, seed: int = 0) -> None:
        self.data, self.index, self.seed = data, index, seed
        worker = np.random.default_rng([seed, index]).integers(len(data.t0_confusions))
        self.worker = int(worker)
        self.t0 = data.t0_confusions[worker]
        self.t1 = data.t1_confusions[worker]

    def difficulty(self, objid: str) -> float:
        """The galaxy's shift (the same for every volunteer): from a real subject of its majority."""
        from aggregation.simulate import difficulty_shifts

        pool = self.data.shares["smooth" if self.data.truth[objid] == 0 else "featured"]
        rng = np.random.default_rng(_stable_int("difficulty", self.seed, objid))
        return float(difficulty_shifts(np.asarray([rng.choice(pool)]), pool)[0])

    def annotations(self, tasks: dict, objid: str, subject_id: int, width: int, height: int) -> list[dict]:
        """The whole task tree, answered: T0, T1 where it answered a disk, the boxes of T2."""
        from aggregation.simulate import draw_answers

        if objid not in self.data.truth:
            raise CrowdRefused(f"no truth for galaxy {objid!r}: not a demo galaxy")
        gz1 = self.data.truth[objid]
        rng = np.random.default_rng(_stable_int("answers", self.seed, self.index, subject_id))
        shift = self.difficulty(objid)
        out: list[dict] = []
        key = tasks["first_task"]
        while key:
            task = tasks["tasks"][key]
            if task["type"] == "drawing":
                out.append({"task": key, "value": self._boxes(rng, objid, width, height)})
                key = task.get("next")
                continue
            if key == "T0":
                answer = draw_answers(rng, self.t0, T0_OF_CLASS[gz1], shift)
            elif key == "T1" and gz1 in T1_OF_CLASS:
                answer = draw_answers(rng, self.t1, T1_OF_CLASS[gz1], shift)
            else:  # a disk question about a galaxy that is not one: a guess
                answer = int(rng.integers(len(task["answers"])))
            out.append({"task": key, "value": int(answer)})
            key = task["answers"][int(answer)].get("next")
        return out

    def _boxes(self, rng: np.random.Generator, objid: str, width: int, height: int) -> list[dict]:
        place = np.random.default_rng(_stable_int("companion", objid))
        boxes = []
        if place.random() < COMPANION_SHARE and rng.random() < SEE_COMPANION:
            w, h = width * place.uniform(0.1, 0.2), height * place.uniform(0.1, 0.2)
            x, y = place.uniform(0, width - w), place.uniform(0, height - h)
            x = float(np.clip(x + rng.normal(0, 1.5), 0, width - w))
            y = float(np.clip(y + rng.normal(0, 1.5), 0, height - h))
            boxes.append({"tool": 0, "x": round(x, 1), "y": round(y, 1), "width": round(w, 1), "height": round(h, 1)})
        if rng.random() < SPURIOUS_BOX:
            w, h = width * 0.1, height * 0.1
            boxes.append({"tool": 0, "x": round(float(rng.uniform(0, width - w)), 1),
                          "y": round(float(rng.uniform(0, height - h)), 1), "width": round(w, 1), "height": round(h, 1)})
        return boxes


class Pace:
    """At most ``rate`` events a second over all the threads that share it."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self, stop: threading.Event) -> bool:
        """Block until this caller's turn; False if ``stop`` was set meanwhile."""
        with self.lock:
            now = time.monotonic()
            slot = max(self.next, now)
            self.next = slot + self.interval
        return not stop.wait(max(0.0, slot - now))


class ApiSession:
    """A browser-like HTTP session: a cookie jar (kept in a file if given), CSRF header on writes."""

    def __init__(self, base_url: str, cookie_file: Path | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.jar = http.cookiejar.MozillaCookieJar(str(cookie_file) if cookie_file else None)
        if cookie_file and cookie_file.exists():
            with contextlib.suppress(OSError, http.cookiejar.LoadError):  # a broken file: a new session
                self.jar.load(ignore_discard=True, ignore_expires=True)
        self.cookie_file = cookie_file
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def save(self) -> None:
        if self.cookie_file:
            self.jar.save(ignore_discard=True, ignore_expires=True)

    def call(self, path: str, body: dict | None = None, stop: threading.Event | None = None, tries: int = 8) -> tuple[int, Any]:
        """(status, JSON) of a GET (no body) or POST; waits out 429s and retries transient errors."""
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
            csrf = next((c.value for c in self.jar if c.name == "csrftoken"), None)
            if csrf:
                headers["X-CSRFToken"] = csrf
        delay = 0.5
        for attempt in range(tries):
            request = urllib.request.Request(self.base_url + path, data=data, headers=headers)
            try:
                with self.opener.open(request, timeout=30) as response:
                    return response.status, json.loads(response.read() or b"null")
            except urllib.error.HTTPError as error:
                payload = error.read()
                if error.code == 429 or error.code >= 500:
                    wait = float(error.headers.get("Retry-After") or delay) if error.code == 429 else delay
                else:
                    try:
                        return error.code, json.loads(payload or b"null")
                    except json.JSONDecodeError:
                        return error.code, payload.decode(errors="replace")
            except (urllib.error.URLError, OSError):
                wait = delay
            if attempt == tries - 1:
                break
            if stop is not None:
                if stop.wait(wait):
                    break
            else:
                time.sleep(wait)
            delay = min(delay * 2, 10.0)
        raise ConnectionError(f"{path}: no answer after {tries} tries")


@dataclass
class CrowdReport:
    """What the crowd did."""

    submitted: int = 0  # classifications newly stored
    resent: int = 0  # answered 200: stored before (a resumed crowd re-sending)
    volunteers_done: int = 0
    errors: list[str] = field(default_factory=list)


def objid_of(image_url: str) -> str:
    """The SDSS object id in a subject image's URL (storage may add ``_<suffix>`` to the name)."""
    stem = Path(urlparse(image_url).path).stem
    match = re.match(r"\d+", stem)
    return match.group(0) if match else stem


def _answers_only(tree: dict) -> dict:
    """The tree without the machine's symmetry hints: a demo database made before they were declared
    still has the demo's questions and answers, which is all the simulated crowd needs."""
    return {**tree, "tasks": {key: {k: v for k, v in task.items() if k != "mirror_swaps"} for key, task in tree.get("tasks", {}).items()}}


def check_demo_workflow(session: ApiSession, workflow_id: int) -> dict:
    """The workflow's task tree, if it is the demo's; else ``CrowdRefused``."""
    from projects.services import DEMO_TASKS  # a plain dict; importing services needs Django set up

    status, projects = session.call("/api/projects/")
    if status != 200:
        raise CrowdRefused(f"GET /api/projects/ answered {status}")
    demo = next((p for p in projects if p["slug"] == DEMO_PROJECT_SLUG), None)
    if demo is None or workflow_id not in {w["id"] for w in demo["workflows"]}:
        raise CrowdRefused(f"workflow {workflow_id} is not in the demo project {DEMO_PROJECT_SLUG!r}: "
                           "the simulated crowd classifies the demo only")
    status, workflow = session.call(f"/api/workflows/{workflow_id}/")
    if status != 200 or _answers_only(workflow["tasks"]) != _answers_only(DEMO_TASKS):
        raise CrowdRefused(f"workflow {workflow_id} does not have the demo's task tree")
    return workflow["tasks"]


def run_volunteer(volunteer: SimulatedVolunteer, session: ApiSession, workflow_id: int, tasks: dict, pace: Pace,
                  stop: threading.Event, report: CrowdReport, lock: threading.Lock) -> None:
    """One volunteer's visit: classify what the queue offers until nothing unretired is left."""
    status, _ = session.call("/api/session/", stop=stop)
    if status != 200:
        raise ConnectionError(f"GET /api/session/ answered {status}")
    session.save()
    while not stop.is_set():
        status, page = session.call(f"/api/workflows/{workflow_id}/next-subjects/?count={PAGE}", stop=stop)
        if status != 200:
            raise ConnectionError(f"next-subjects answered {status}: {page}")
        fresh = [s for s in page["subjects"] if not s.get("retired")]
        if not fresh or page.get("finished"):
            break
        for subject in fresh:
            started = datetime.now(UTC).isoformat()
            image = subject["images"][0]
            annotations = volunteer.annotations(tasks, objid_of(image["url"]), subject["id"], image["width"], image["height"])
            if not pace.wait(stop):
                return
            body = {
                "workflow": workflow_id, "subject": subject["id"], "annotations": annotations,
                "started_at": started, "finished_at": datetime.now(UTC).isoformat(),
                "idempotency_key": f"sim-{volunteer.seed}-{volunteer.index}-{subject['id']}",
                "metadata": {"simulated": True, "user_agent": USER_AGENT, "crowd_volunteer": volunteer.index,
                             "crowd_worker": volunteer.worker},
            }
            status, result = session.call("/api/classifications/", body, stop=stop)
            if status not in (200, 201):
                raise ConnectionError(f"POST /api/classifications/ answered {status}: {result}")
            with lock:
                if status == 201:
                    report.submitted += 1
                else:
                    report.resent += 1
    with lock:
        report.volunteers_done += 0 if stop.is_set() else 1


def run_crowd(base_url: str, workflow_id: int, volunteers: int, rate: float, *, seed: int = 0,
              state_dir: Path | None = None, stop: threading.Event | None = None,
              log: Callable[[str], None] = print, data: CrowdData | None = None) -> CrowdReport:
    """Run ``volunteers`` simulated volunteers against the server at ``base_url`` until none has
    anything left to classify (or ``stop`` is set); ``CrowdRefused`` if it is not the demo."""
    positive_int(str(volunteers))
    positive_rate(str(rate))
    stop = stop or threading.Event()
    data = data or load_crowd_data()
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
    tasks = check_demo_workflow(ApiSession(base_url), workflow_id)
    pace, report, lock = Pace(rate), CrowdReport(), threading.Lock()

    def visit(index: int) -> None:
        cookies = state_dir / f"volunteer-{seed}-{index}.cookies" if state_dir else None
        try:
            run_volunteer(SimulatedVolunteer(data, index, seed), ApiSession(base_url, cookies), workflow_id, tasks,
                          pace, stop, report, lock)
        except (ConnectionError, CrowdRefused, KeyError, ValueError) as error:
            with lock:
                report.errors.append(f"volunteer {index}: {error}")

    threads = [threading.Thread(target=visit, args=(i,), name=f"volunteer-{i}", daemon=True) for i in range(volunteers)]
    for thread in threads:
        thread.start()
    last = time.monotonic()
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=0.2)
        if time.monotonic() - last >= 30:
            last = time.monotonic()
            log(f"simulated crowd: {report.submitted} classifications sent, "
                f"{volunteers - sum(t.is_alive() for t in threads)} of {volunteers} volunteers done")
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    import os

    parser = argparse.ArgumentParser(description="The demo's simulated crowd (demo project only).")
    parser.add_argument("--url", required=True, help="the demo's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--workflow", type=int, required=True)
    parser.add_argument("--volunteers", type=positive_int, required=True)
    parser.add_argument("--rate", type=positive_rate, default=20.0, help="classifications per second, all together")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--state-dir", type=Path, default=None, help="keep the volunteers' sessions here (resuming)")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chorus.settings")
    import django

    django.setup()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    started = time.monotonic()
    print(f"simulated crowd: {args.volunteers} volunteers at up to {args.rate:g} classifications/s", flush=True)
    try:
        report = run_crowd(args.url, args.workflow, args.volunteers, args.rate, seed=args.seed, state_dir=args.state_dir,
                           stop=stop, log=lambda line: print(line, flush=True))
    except CrowdRefused as error:
        print(f"simulated crowd refused: {error}", file=sys.stderr, flush=True)
        return 2
    for line in report.errors:
        print(f"simulated crowd: {line}", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - started
    print(f"simulated crowd {'stopped' if stop.is_set() else 'finished: nothing left to classify'}: "
          f"{report.submitted} classifications in {elapsed:.0f} s ({report.resent} re-sent after a restart)", flush=True)
    return 1 if report.errors and not report.volunteers_done else 0


if __name__ == "__main__":
    sys.exit(main())
