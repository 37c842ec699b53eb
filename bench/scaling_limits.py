"""Where the platform's ceiling is at 10x (issue 30): each stage of ingest measured alone, on one
machine, so that docs/scaling.md can say which part stops a 10,000 classifications/s night.

Three stages, one after the other (never at once), against this run's own embedded PostgreSQL and Redis:
1. **PostgreSQL commits**: ``--connections`` threads, each committing one INSERT of a classification-
   sized jsonb row at a time (what a single submission costs the database), then ten rows per
   statement (a batch of ten): commits/s and rows/s, durable (``synchronous_commit`` as configured,
   on by default).
2. **One applier**: ``--classifications`` classifications stored at once (batches through
   ``classifications.services.submit_classifications``, as the batch endpoint stores them), then the
   live loop's ``apply_pending`` in this process, timed: the most one workflow's single applier can
   apply per second with no web load beside it.
3. The web tier is measured by ``bench/live_loop.py`` (1,000/s on this machine's two cores with the
   worker beside it); it holds no state, so it scales by adding processes.

Usage: .venv/bin/python bench/scaling_limits.py [--seconds 10] [--connections 16] [--classifications 20000]
Writes bench/results/scaling_limits.json. Embedded servers in var/bench-scaling/ (stopped after).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT / "bench")]
os.environ.setdefault("CHORUS_DATA_DIR", str(ROOT / "var" / "bench-scaling"))

from http_api import populate  # noqa: E402  (sets the environment up too)
from platform_processes import database_url, stop_embedded_servers  # noqa: E402

ROW = json.dumps({"annotations": [{"task": "T0", "value": 1}, {"task": "T1", "value": 1},
                                  {"task": "T2", "value": [{"tool": 0, "x": 150, "y": 160, "width": 40, "height": 30}]}],
                  "metadata": {"user_agent": "Mozilla/5.0 (X11; Linux x86_64)", "started_at": "2026-12-07T14:00:00Z"}})


def commit_rate(seconds: float, connections: int, rows_per_statement: int) -> dict:
    """Threads committing INSERTs of ``rows_per_statement`` rows each into a scratch table, in autocommit."""
    import psycopg
    from django.db import connection as django_connection

    url = database_url()
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute("DROP TABLE IF EXISTS scaling_probe")
        setup.execute("CREATE TABLE scaling_probe (id bigserial PRIMARY KEY, key text UNIQUE, payload jsonb, created_at timestamptz DEFAULT now())")
    django_connection.close()
    counts = [0] * connections
    deadline = time.perf_counter() + seconds
    values = ", ".join(["(%s, %s::jsonb)"] * rows_per_statement)

    def commit_loop(index: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            n = 0
            while time.perf_counter() < deadline:
                params: list[str] = []
                for k in range(rows_per_statement):
                    params += [f"{index}-{n}-{k}-{secrets.token_hex(4)}", ROW]
                conn.execute(f"INSERT INTO scaling_probe (key, payload) VALUES {values}", params)
                n += 1
            counts[index] = n

    started = time.perf_counter()
    threads = [threading.Thread(target=commit_loop, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        synchronous = conn.execute("SHOW synchronous_commit").fetchone()[0]
        stored = conn.execute("SELECT count(*) FROM scaling_probe").fetchone()[0]
        conn.execute("DROP TABLE scaling_probe")
    commits = sum(counts)
    assert stored == commits * rows_per_statement, (stored, commits)
    return {"rows_per_statement": rows_per_statement, "connections": connections, "seconds": round(elapsed, 1),
            "commits_per_second": round(commits / elapsed), "rows_per_second": round(stored / elapsed),
            "synchronous_commit": synchronous}


def applier_rate(workflow_id: int, tokens: list[str], subject_ids: list[int], n: int) -> dict:
    """Store ``n`` classifications (batches of 50 of one volunteer), then apply them all in this process."""
    from classifications.models import Classification, Volunteer
    from classifications.services import submit_classifications
    from live.services import apply_pending

    apply_pending(workflow_id)  # whatever an earlier run left
    run = secrets.token_hex(4)
    volunteers = list(Volunteer.objects.filter(user__auth_token__key__in=tokens[:400]).order_by("pk"))
    assert volunteers, "no benchmark volunteers"
    per_volunteer = -(-n // len(volunteers))
    stored_started = time.perf_counter()
    stored = 0
    for v_index, volunteer in enumerate(volunteers):
        if stored >= n:
            break
        count = min(per_volunteer, n - stored)
        offset = (v_index * 7919) % len(subject_ids)
        chosen = [subject_ids[(offset + k) % len(subject_ids)] for k in range(count)]
        for start in range(0, count, 50):
            items = [{"workflow": workflow_id, "subject": subject_id,
                      "annotations": [{"task": "T0", "value": k % 2}, *([{"task": "T1", "value": 1}] if k % 2 else []),
                                      {"task": "T2", "value": []}],
                      "idempotency_key": f"scaling{run}-{volunteer.pk}-{start + k}"}
                     for k, subject_id in enumerate(chosen[start:start + 50])]
            results = submit_classifications(volunteer, items)
            stored += len(results)
    store_seconds = time.perf_counter() - stored_started
    ours = Classification.objects.filter(idempotency_key__startswith=f"scaling{run}-")
    pending = ours.filter(applied_seq__isnull=True).count()
    started = time.perf_counter()
    report = apply_pending(workflow_id)
    while report.more:
        report = apply_pending(workflow_id)
    apply_seconds = time.perf_counter() - started
    left = ours.filter(applied_seq__isnull=True).count()
    assert left == 0, f"{left} left unapplied"
    return {"classifications": pending, "store_seconds_in_process": round(store_seconds, 1),
            "stored_per_second_in_process_one_thread": round(pending / store_seconds),
            "apply_seconds": round(apply_seconds, 2), "applied_per_second": round(pending / apply_seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10, help="length of each commit-rate measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--classifications", type=int, default=20_000)
    parser.add_argument("--subjects", type=int, default=20_000)
    parser.add_argument("--volunteers", type=int, default=2_000)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "scaling_limits.json")
    parser.add_argument("--keep-servers", action="store_true", help="leave the embedded servers running")
    args = parser.parse_args()

    try:
        workflow_id, tokens, subject_ids = populate(args.subjects, args.volunteers, 0, slug_prefix="scaling")
        single = commit_rate(args.seconds, args.connections, 1)
        print(json.dumps({"postgres_single_row_commits": single}), flush=True)
        batched = commit_rate(args.seconds, args.connections, 10)
        print(json.dumps({"postgres_ten_rows_per_commit": batched}), flush=True)
        applier = applier_rate(workflow_id, tokens, subject_ids, args.classifications)
        print(json.dumps({"one_applier": applier}), flush=True)
    finally:
        if not args.keep_servers:
            stop_embedded_servers()
    report = {
        "machine": "shared 2-core VM (other work running beside it: see the note in docs/scaling.md)",
        "command": " ".join(["bench/scaling_limits.py", *sys.argv[1:]]),
        "postgres_single_row_commits": single,
        "postgres_ten_rows_per_commit": batched,
        "one_applier": applier,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.output}")
    print(json.dumps({"commits_per_s": single["commits_per_second"], "rows_per_s_batched": batched["rows_per_second"],
                      "applier_per_s": applier["applied_per_second"]}))


if __name__ == "__main__":
    main()
