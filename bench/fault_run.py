"""Fault run (issue 25): the live loop under load while its processes are killed, from the database.

Real processes, as the other platform benches start them: gunicorn (``http_api.start_gunicorn``),
``--workers`` Celery workers on the aggregation queue (``platform_processes.start_worker``; 2 by
default, as ``docker compose up --scale worker=2`` in docker-compose.yml runs them), Celery beat, and
the embedded PostgreSQL and Redis in their own data folder (``var/bench-fault``; or DATABASE_URL /
REDIS_URL). An open-loop load (``loadgen``) submits at ``--rate`` requests per second for
``--seconds`` (``--batch-share`` of them to the batch endpoint, ``--batch-size`` classifications
each), through token-authenticated volunteers. Meanwhile:
- a worker is SIGKILLed ``--worker-kills`` times, the one holding the applier lock if one does (the
  worst case: it dies mid-batch), and started again at once (a supervisor's restart); with one
  worker the votes that arrive meanwhile wait for its restart, with two the other takes over the
  dead holder's lock at once (``live.hot_state.ApplierLock``);
- redis-server is SIGKILLed ``--redis-kills`` times and started again after ``--redis-down`` seconds
  (broker, throttles, sessions' cache and hot state all go with it);
- ``--duplicates`` of the submissions are sent twice with the same idempotency key: half re-sent
  later (a browser that did not see the answer), half as two requests at the same instant.
Then it waits until nothing is unapplied (at most ``--settle`` seconds) and reads PostgreSQL:
- ``acknowledged``: keys answered 2xx; ``stored``: classifications stored; ``applied``: of them applied;
- ``lost``: acknowledged keys not stored; ``double_counted``: volunteer × subject pairs counted more
  than once, plus log positions (``applied_seq``) given twice, plus subjects whose counter exceeds
  their counted classifications;
- ``http_5xx``: answers 500–599; ``rebuild_matches``: ``rebuild_aggregation`` (a replay of the whole
  log) reproduces every stored posterior (within 1e-9, the command's tolerance) and retirement;
- ``max_lag_s``: the largest time from a classification's commit to the commit of its posterior.
Goal: lost 0, double_counted 0, http_5xx 0, rebuild_matches true, max_lag_s < 5.

Usage: .venv/bin/python bench/fault_run.py [--rate 100] [--seconds 90] [--json] [--workers 2] [--worker-kills 2]
       [--redis-kills 1] [--redis-down 1] [--duplicates 0.05] [--subjects 5000] [--volunteers 1000]
Writes bench/results/fault_run.json (or --output); with --json prints the summary line last. Every
process it starts (servers included, unless they were external or --keep-servers) is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT / "bench")]
os.environ.setdefault("CHORUS_DATA_DIR", str(ROOT / "var" / "bench-fault"))

from http_api import populate, start_gunicorn  # noqa: E402  (sets the environment up too: throttles, log level)
from loadgen import LoadResult, json_body, run_load  # noqa: E402
from platform_processes import database_url, reset_platform, start_worker, stop_embedded_servers  # noqa: E402


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else None


def start_beat(log: Path) -> subprocess.Popen:
    """Celery beat as the demo starts it (its schedule file in the data folder)."""
    from django.conf import settings

    env = os.environ | {
        "DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL, "CHORUS_DATA_DIR": str(settings.DATA_DIR),
        "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT}",
    }
    schedule = Path(settings.DATA_DIR) / "fault-beat-schedule"
    for stale in Path(settings.DATA_DIR).glob("fault-beat-schedule*"):
        stale.unlink()
    with open(log, "w") as output:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "chorus", "beat", "--loglevel", "INFO", "--schedule", str(schedule)],
            cwd=ROOT / "platform", env=env, stdout=output, stderr=subprocess.STDOUT,
        )


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def kill_redis(data_dir: Path, down_seconds: float) -> dict:
    """SIGKILL the embedded redis-server, wait ``down_seconds``, start it again (as a supervisor would:
    the stale socket file of the killed server removed first). Returns when it answers."""
    from chorus import embedded

    pid = int((data_dir / "redis.pid").read_text().strip())
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    while not _process_gone(pid):
        time.sleep(0.01)
    time.sleep(down_seconds)
    embedded.redis_socket(data_dir).unlink(missing_ok=True)
    embedded.start_redis(data_dir)
    return {"fault": "redis SIGKILL", "at": killed_at, "pid": pid, "down_seconds": round(time.time() - killed_at, 2)}


class Faults:
    """The fault schedule, run in a thread beside the load: kill and restart the worker or Redis."""

    def __init__(self, data_dir: Path, workers: list[subprocess.Popen], redis_down: float, workflow_id: int) -> None:
        self.data_dir = data_dir
        self.workers = list(workers)  # every worker started, the killed ones included (all stopped at the end)
        self.workflow_id = workflow_id
        self.redis_down = redis_down
        self.log: list[dict] = []
        self.errors: list[str] = []

    def lock_holder_pid(self) -> int | None:
        """The pid named by the workflow's applier lock (``host|pid|…``), if it is held."""
        from live import hot_state

        try:
            raw = hot_state.client().get(hot_state.key(self.workflow_id, "lock"))
        except Exception:  # noqa: BLE001 - Redis down: no holder known, kill any worker
            return None
        pid = raw.decode(errors="replace").split("|")[1] if raw else ""
        return int(pid) if pid.isdigit() else None

    def kill_worker(self) -> dict:
        alive = [worker for worker in self.workers if worker.poll() is None]
        holder = self.lock_holder_pid()
        doomed = next((worker for worker in alive if worker.pid == holder), alive[-1])
        killed_at = time.time()
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        log = self.data_dir / f"fault-worker-{len(self.workers)}.log"
        self.workers.append(start_worker(f"fault{len(self.workers)}", "aggregation", log))
        return {"fault": "worker SIGKILL", "at": killed_at, "pid": doomed.pid, "held_the_lock": doomed.pid == holder,
                "workers_alive_meanwhile": len(alive) - 1, "restart_seconds": round(time.time() - killed_at, 2)}

    def run(self, began: float, schedule: list[tuple[float, str]]) -> None:
        for offset, kind in schedule:
            time.sleep(max(0.0, began + offset - time.time()))
            try:
                event = self.kill_worker() if kind == "worker" else kill_redis(self.data_dir, self.redis_down)
                event["at_s"] = round(event["at"] - began, 2)
                self.log.append(event)
            except Exception as exc:  # noqa: BLE001 - reported; the run goes on and is judged by its data
                self.errors.append(f"{kind} at {offset:.1f} s: {type(exc).__name__}: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100, help="requests per second (open loop)")
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch-share", type=float, default=0.1, help="share of requests sent to the batch endpoint")
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of submissions sent twice with their key")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers on the aggregation queue (solo pool each)")
    parser.add_argument("--worker-kills", type=int, default=2)
    parser.add_argument("--redis-kills", type=int, default=1)
    parser.add_argument("--redis-down", type=float, default=1.0, help="seconds redis-server stays down")
    parser.add_argument("--subjects", type=int, default=5000)
    parser.add_argument("--volunteers", type=int, default=1000)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--port", type=int, default=8933)
    parser.add_argument("--settle", type=float, default=120, help="longest wait for the backlog after the load")
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--keep-servers", action="store_true", help="leave the embedded PostgreSQL and Redis running")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "fault_run.json")
    parser.add_argument("--json", action="store_true", help="print the summary line last")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings

    data_dir = Path(settings.DATA_DIR)
    processes: list[subprocess.Popen] = []
    faults: Faults | None = None
    try:
        reset_platform(data_dir)
        workflow_id, tokens, subject_ids = populate(args.subjects, args.volunteers, 0, slug_prefix="fault")
        processes.append(start_gunicorn(args.port, args.web_workers, args.threads))
        processes.append(start_beat(data_dir / "fault-beat.log"))
        workers = [start_worker(f"fault{n}", "aggregation", data_dir / f"fault-worker-{n}.log") for n in range(args.workers)]
        faults = Faults(data_dir, workers, args.redis_down, workflow_id)
        report = run(args, workflow_id, tokens, subject_ids, faults, data_dir)
    finally:
        for process in [*processes, *(faults.workers if faults else [])]:
            if process.poll() is None:
                process.terminate()
        for process in [*processes, *(faults.workers if faults else [])]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if not args.keep_servers:
            stop_embedded_servers()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.output}", flush=True)
    line = {key: report[key] for key in ("acknowledged", "stored", "applied", "lost", "double_counted", "http_5xx",
                                         "rebuild_matches", "max_lag_s")}
    print(json.dumps(line) if args.json else json.dumps(report["summary_details"]), flush=True)


def run(args: argparse.Namespace, workflow_id: int, tokens: list[str], subject_ids: list[int], faults: Faults, data_dir: Path) -> dict:
    rng = random.Random(args.seed)
    run_id = secrets.token_hex(4)
    numbers = iter(range(10**9))
    acknowledged: set[str] = set()
    sent_keys: set[str] = set()
    in_flight: dict[tuple[str, int], list[str]] = {}  # (load, connection) -> keys of its request now answered
    resendable: list[tuple[dict, bytes, list[str]]] = []  # earlier single requests: headers, body, keys

    def classification() -> dict:
        answer = rng.randrange(2)
        annotations = [{"task": "T0", "value": answer}, *([{"task": "T1", "value": rng.randrange(3)}] if answer == 1 else []),
                       {"task": "T2", "value": []}]
        key = f"fault{run_id}-{next(numbers)}"
        sent_keys.add(key)
        return {"workflow": workflow_id, "subject": subject_ids[rng.randrange(len(subject_ids))], "annotations": annotations,
                "idempotency_key": key}

    def submit(i: int, n: int):
        if resendable and rng.random() < args.duplicates / 2:  # a re-send of an earlier request, its key and all
            headers, body, keys = resendable[rng.randrange(len(resendable))]
            in_flight[("main", i)] = keys
            return "POST", "/api/classifications/", headers, body
        headers = {"Authorization": f"Token {tokens[rng.randrange(len(tokens))]}"}
        if rng.random() < args.batch_share:
            items = [classification() for _ in range(args.batch_size)]
            in_flight[("main", i)] = [item["idempotency_key"] for item in items]
            return "POST", "/api/classifications/batch/", headers, json_body({"classifications": items})
        item = classification()
        body = json_body(item)
        in_flight[("main", i)] = [item["idempotency_key"]]
        if len(resendable) < 10_000:
            resendable.append((headers, body, [item["idempotency_key"]]))
        return "POST", "/api/classifications/", headers, body

    pairs: dict[int, tuple[dict, bytes, list[str]]] = {}

    def same_instant(i: int, n: int):
        """Both connections send request n at the same instant, with the same volunteer and key."""
        if n not in pairs:
            item = classification()
            pairs[n] = ({"Authorization": f"Token {tokens[rng.randrange(len(tokens))]}"}, json_body(item), [item["idempotency_key"]])
        headers, body, keys = pairs[n]
        in_flight[("pairs", i)] = keys
        return "POST", "/api/classifications/", headers, body

    def answered(load: str):
        def on_response(i: int, n: int, status: int) -> None:
            if 200 <= status < 300:
                acknowledged.update(in_flight.get((load, i), ()))
        return on_response

    kills = [("worker", k) for k in range(args.worker_kills)] + [("redis", k) for k in range(args.redis_kills)]
    # Spread over the first 70% of the load, alternating worker and Redis, so that each recovery is seen under load.
    order = sorted(kills, key=lambda kind_k: (kind_k[1], kind_k[0] != "worker"))
    schedule = [(args.seconds * 0.7 * (index + 1) / (len(order) + 1) + 0.1 * args.seconds, kind) for index, (kind, _) in enumerate(order)]
    pair_rate = args.rate * args.duplicates / 2

    async def load() -> tuple[LoadResult, LoadResult | None]:
        main_load = run_load("submit", "127.0.0.1", args.port, submit, args.connections, args.seconds, rate=args.rate,
                             on_response=answered("main"))
        if pair_rate <= 0:
            return await main_load, None
        pair_load = run_load("same-instant duplicates", "127.0.0.1", args.port, same_instant, 2, args.seconds,
                             rate=2 * pair_rate, on_response=answered("pairs"), stagger=False)
        return tuple(await asyncio.gather(main_load, pair_load))  # type: ignore[return-value]

    load_before = os.getloadavg()[0]  # other jobs on the machine slow the worker's restart most
    began = time.time()
    fault_thread = threading.Thread(target=faults.run, args=(began, schedule), daemon=True)
    fault_thread.start()
    main_result, pair_result = asyncio.run(load())
    load_ended = time.time()
    fault_thread.join(timeout=120)

    from django.db import connection

    from classifications.models import Classification
    from live import hot_state
    from live.models import WorkflowAggregation
    from live.services import rebuild_hot_state
    from projects.models import SubjectWorkflowState

    ours = Classification.objects.filter(workflow_id=workflow_id)
    deadline = time.monotonic() + args.settle
    while ours.filter(applied_seq__isnull=True).exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    settled_s = round(time.time() - load_ended, 2)

    rows = list(ours.values_list("idempotency_key", "created_at", "applied_at"))
    stored_keys = {key for key, _, _ in rows}
    lags = [(done - created).total_seconds() for _, created, done in rows if done is not None]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT 1 FROM classifications_classification WHERE workflow_id = %s AND counts"
            " GROUP BY subject_id, volunteer_id HAVING count(*) > 1) twice", [workflow_id])
        counted_twice = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(applied_seq) - count(DISTINCT applied_seq), count(applied_seq), coalesce(max(applied_seq), 0)"
            " FROM classifications_classification WHERE workflow_id = %s", [workflow_id])
        seq_reused, applied, max_seq = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM projects_subjectworkflowstate s WHERE s.workflow_id = %s AND s.classification_count >"
            " (SELECT count(*) FROM classifications_classification c WHERE c.workflow_id = s.workflow_id"
            "   AND c.subject_id = s.subject_id AND c.counts)", [workflow_id])
        counter_over = cursor.fetchone()[0]
    agg = WorkflowAggregation.objects.get(workflow_id=workflow_id)
    # Redis's posteriors (what dashboards read) against PostgreSQL's, before the rebuild rewrites them.
    redis_differs = 0
    for subject_id, posterior in SubjectWorkflowState.objects.filter(workflow_id=workflow_id).exclude(posterior=None).values_list("subject_id", "posterior"):
        if hot_state.posterior(workflow_id, subject_id) != posterior:
            redis_differs += 1
    rebuild = rebuild_hot_state(workflow_id)
    rebuild_matches = rebuild.max_posterior_difference <= 1e-9 and not rebuild.retirement_mismatches

    def lag_between(start: float, end: float) -> float | None:
        start_at, end_at = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
        near = [(done - created).total_seconds() for _, created, done in rows if done is not None and start_at <= created < end_at]
        return round(max(near), 3) if near else None

    # Each fault's share of the lag: votes stored from 1 s before it until 1 s before the next one.
    starts = [event["at"] for event in faults.log]
    for event, end in zip(faults.log, [*starts[1:], load_ended + 1], strict=True):
        event["max_lag_s_until_next_fault"] = lag_between(event["at"] - 1, end - 1)
        event["at"] = datetime.fromtimestamp(event["at"], UTC).isoformat()
    by_second: dict[int, list[float]] = {}
    for _, created_at, applied_at in rows:
        if applied_at is not None:
            by_second.setdefault(int(created_at.timestamp() - began), []).append((applied_at - created_at).total_seconds())
    statuses: dict[str, int] = {}
    for result in filter(None, (main_result, pair_result)):
        for status, count in result.statuses.items():
            statuses[str(status)] = statuses.get(str(status), 0) + count
    http_5xx = sum(count for status, count in statuses.items() if int(status) >= 500)
    lost = len(acknowledged - stored_keys)
    report = {
        "machine": f"shared 2-core VM; gunicorn, PostgreSQL, Redis, {args.workers} Celery worker(s), beat and the load generator on it",
        "command": " ".join(["bench/fault_run.py", *sys.argv[1:]]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "gunicorn": f"{args.web_workers} gthread workers x {args.threads} threads",
        "load": main_result.summary(),
        "same_instant_duplicates": pair_result.summary() if pair_result else None,
        "statuses": statuses,
        "faults": faults.log,
        "fault_errors": faults.errors,
        "sent_keys": len(sent_keys),
        "acknowledged": len(acknowledged),
        "stored": len(rows),
        "applied": applied,
        "unapplied": len(rows) - applied,
        "stored_not_acknowledged": len(stored_keys - acknowledged),
        "lost": lost,
        "double_counted": counted_twice + seq_reused + counter_over,
        "double_counted_parts": {"volunteer_subject_counted_twice": counted_twice, "applied_seq_reused": seq_reused,
                                 "subject_counter_over_counted_rows": counter_over},
        "log_gapless": max_seq == applied == agg.applied_seq,
        "http_5xx": http_5xx,
        "rebuild": {"applied": rebuild.applied, "subjects": rebuild.subjects,
                    "max_posterior_difference": rebuild.max_posterior_difference,
                    "retirement_mismatches": len(rebuild.retirement_mismatches)},
        "rebuild_matches": rebuild_matches,
        "redis_posteriors_differing_from_postgres": redis_differs,
        "max_lag_s": round(max(lags), 3) if lags else None,
        "lag_s": {q: round(v, 3) if v is not None else None for q, v in (("p50", percentile(lags, 50)), ("p99", percentile(lags, 99)))},
        "settled_after_load_s": settled_s,
        "lag_by_second_of_arrival": [[second, len(lags_of), round(max(lags_of), 2)] for second, lags_of in sorted(by_second.items())],
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
    }
    report["summary_details"] = {k: report[k] for k in ("acknowledged", "stored", "applied", "lost", "double_counted",
                                                        "http_5xx", "rebuild_matches", "max_lag_s", "faults")}
    return report


if __name__ == "__main__":
    main()
