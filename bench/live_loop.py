"""Benchmark of the live loop over HTTP: gunicorn, PostgreSQL, Redis and one Celery worker process,
with the load generator on the same machine.

An open-loop load submits classifications at ``--rate`` per second for ``--seconds``; then the
script waits until the worker has applied everything and reads from PostgreSQL:
- sustained classifications per second (stored / time), p50/p99 submit latency (from the client);
- p50/p99 lag from submission to updated posterior (``applied_at - created_at`` of each row: the
  posterior is written in the same transaction that sets ``applied_at``);
- classifications left unapplied after the run (must be 0).
The same run also measures, in the same process, the baseline: GET /healthz at the same rate.

With ``--kill-worker-at S`` the worker is SIGKILLed S seconds into the load and started again at once;
the run then also reports votes lost (acknowledged with a 2xx but not stored) and counted twice (a
replay of the whole log from PostgreSQL, ``rebuild_hot_state``, disagrees with a stored posterior or
retirement: a classification applied twice, or not at all, would move it).
``--json`` prints ``{"sustained_per_s", "submit_p99_ms", "lag_p99_s", "unapplied", ...}`` last.

Usage: .venv/bin/python bench/live_loop.py [--rate 300] [--batch 1] [--seconds 30] [--connections 16]
       [--subjects 20000] [--volunteers 2000] [--kill-worker-at S] [--json]
Writes bench/results/live_loop.json (or --output). Embedded servers in var/bench/ (or DATABASE_URL / REDIS_URL).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT / "bench")]

# Its own servers: a backlog left by other benchmarks in var/bench would compete for the worker.
os.environ.setdefault("CHORUS_DATA_DIR", str(ROOT / "var" / "bench-live"))

from http_api import populate, start_gunicorn  # noqa: E402  (sets the environment up too)
from loadgen import json_body, run_load  # noqa: E402
from platform_processes import stop_embedded_servers  # noqa: E402


def start_worker() -> subprocess.Popen:
    from django.conf import settings

    log = Path(settings.DATA_DIR) / "bench-worker.log"
    env = os.environ | {"DATABASE_URL": settings.DATABASE_URL, "REDIS_URL": settings.REDIS_URL,
                        "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT}"}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "chorus", "worker", "-Q", "aggregation", "--concurrency", "1",
         "--loglevel", "WARNING", "--without-mingle", "--without-gossip", "--hostname", "bench@%h"],
        cwd=ROOT / "platform", env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115 - open for the worker's life
    )
    time.sleep(6)  # let it connect and register its queue
    if process.poll() is not None:
        raise RuntimeError(f"worker failed: {log.read_text()[-2000:]}")
    return process


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=300, help="classifications per second")
    parser.add_argument("--batch", type=int, default=1,
                        help="classifications per request: 1 posts each alone, N > 1 posts N of one volunteer to the batch endpoint")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--subjects", type=int, default=20_000)
    parser.add_argument("--volunteers", type=int, default=2_000)
    parser.add_argument("--web-workers", type=int, default=2)  # one per core measured best (vs 3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--port", type=int, default=8932)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "live_loop.json")
    parser.add_argument("--kill-worker-at", type=float, default=None,
                        help="SIGKILL the worker this many seconds into the load and start it again")
    parser.add_argument("--json", action="store_true", help="print the summary line last, as the issue asks")
    parser.add_argument("--keep-servers", action="store_true", help="leave the embedded PostgreSQL and Redis running")
    args = parser.parse_args()

    workflow_id, tokens, subject_ids = populate(args.subjects, args.volunteers, 0, slug_prefix="live")
    from classifications.models import Classification
    from live.services import apply_pending

    apply_pending(workflow_id)  # anything left from an earlier run
    server = start_gunicorn(args.port, args.web_workers, args.threads)
    try:
        worker = start_worker()
    except Exception:
        server.terminate()
        raise
    rng = random.Random(11)
    run_id = secrets.token_hex(4)

    def classification(i: int, n: int, k: int) -> dict:
        answer = rng.randrange(2)
        annotations = [{"task": "T0", "value": answer}, *([{"task": "T1", "value": 1}] if answer == 1 else []),
                       {"task": "T2", "value": [{"tool": 0, "x": 150, "y": 160, "width": 40, "height": 30}] if (n + k) % 3 == 0 else []}]
        return {"workflow": workflow_id, "subject": subject_ids[rng.randrange(len(subject_ids))],
                "annotations": annotations, "idempotency_key": f"live{run_id}-{i}-{n}-{k}"}

    def submit(i: int, n: int):
        headers = {"Authorization": f"Token {tokens[rng.randrange(len(tokens))]}"}
        if args.batch == 1:
            return "POST", "/api/classifications/", headers, json_body(classification(i, n, 0))
        body = json_body({"classifications": [classification(i, n, k) for k in range(args.batch)]})
        return "POST", "/api/classifications/batch/", headers, body

    def healthz(i: int, n: int):
        return "GET", "/healthz", {}, None

    workers = [worker]
    kills: list[dict] = []

    def kill_and_restart() -> None:
        killed = workers[-1]
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        began = time.monotonic()
        workers.append(start_worker())
        kills.append({"killed_pid": killed.pid, "restart_seconds": round(time.monotonic() - began, 1)})

    try:
        baseline = asyncio.run(run_load("baseline healthz", "127.0.0.1", args.port, healthz, args.connections, 10, rate=args.rate / args.batch))
        print(json.dumps(baseline.summary()), flush=True)
        killer = threading.Timer(args.kill_worker_at, kill_and_restart) if args.kill_worker_at is not None else None
        if killer is not None:
            killer.start()
        load = asyncio.run(run_load("submit", "127.0.0.1", args.port, submit, args.connections, args.seconds, rate=args.rate / args.batch))
        print(json.dumps(load.summary()), flush=True)
        if killer is not None:
            killer.join()
        ours = Classification.objects.filter(idempotency_key__startswith=f"live{run_id}-")
        deadline = time.monotonic() + 180
        while ours.filter(applied_seq__isnull=True).exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        rows = list(ours.values_list("created_at", "applied_at"))
        rebuild = None
        if args.kill_worker_at is not None:
            from live.services import rebuild_hot_state

            rebuild = rebuild_hot_state(workflow_id)
    finally:
        for process in (server, *workers):
            process.terminate()
        for process in (server, *workers):
            process.wait(timeout=30)
        if not args.keep_servers:
            stop_embedded_servers()
    lags = [(applied - created).total_seconds() for created, applied in rows if applied is not None]
    unapplied = sum(1 for _, applied in rows if applied is None)
    span = (max(c for c, _ in rows) - min(c for c, _ in rows)).total_seconds() if rows else 0.0
    report = {
        "machine": "shared 2-core VM; gunicorn, PostgreSQL, Redis, 1 Celery worker and the load generator on it",
        "command": " ".join(["bench/live_loop.py", *sys.argv[1:]]),
        "target_rate": args.rate, "classifications_per_request": args.batch, "connections": args.connections,
        "gunicorn": f"{args.web_workers} gthread workers x {args.threads} threads",
        "baseline_healthz": baseline.summary(),
        "submit": load.summary(),
        "stored": len(rows),
        "sustained_per_second": round(len(rows) / span, 1) if span else None,
        "lag_seconds": {"p50": round(percentile(lags, 50), 3), "p99": round(percentile(lags, 99), 3), "max": round(max(lags), 3) if lags else None},
        "unapplied_after_run": unapplied,
        "submit_p99_vs_baseline_p99": round(load.percentile(99) / baseline.percentile(99), 2),
    }
    acknowledged = sum(count for status, count in load.statuses.items() if 200 <= status < 300) * args.batch
    report["acknowledged"] = acknowledged
    # Every request carries fresh keys, so a stored row is an acknowledged one or one whose answer was lost.
    report["lost"] = max(0, acknowledged - len(rows))
    report["http_5xx"] = sum(count for status, count in load.statuses.items() if status >= 500)
    if rebuild is not None:
        report["worker_kills"] = kills
        report["rebuild"] = {"applied": rebuild.applied, "subjects": rebuild.subjects,
                             "max_posterior_difference": rebuild.max_posterior_difference,
                             "retirement_mismatches": len(rebuild.retirement_mismatches)}
        report["double_counted"] = int(rebuild.max_posterior_difference > 1e-9) + len(rebuild.retirement_mismatches)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.output}")
    line = {"sustained_per_s": report["sustained_per_second"], "submit_p99_ms": report["submit"]["p99_ms"],
            "lag_p99_s": report["lag_seconds"]["p99"], "unapplied": unapplied,
            "submit_p99_vs_healthz_p99": report["submit_p99_vs_baseline_p99"], "lost": report["lost"]}
    if "double_counted" in report:
        line["double_counted"] = report["double_counted"]
    print(json.dumps(line if args.json else {k: report[k] for k in ("sustained_per_second", "lag_seconds", "unapplied_after_run")}))


if __name__ == "__main__":
    main()
