"""Benchmark of "more like this" over HTTP: 100,000 subjects with synthetic 128-d embeddings in
pgvector (one space, its HNSW index), searched through the API as a scientist's script does
(token auth), gunicorn, PostgreSQL and Redis on this machine.

The vectors are a seeded mixture of 500 Gaussian clusters on the unit sphere (galaxies come in
kinds; uniformly random vectors in 128 dimensions have no near neighbours, which would flatter
nothing and test nothing). They go through the platform's own storage path
(``similarity.embeddings.store_vectors``: anomaly scores, the map, binary COPY, the HNSW index),
whose timings are reported. Then:
- recall@20 of the index (``selectors.nearest``, ``EF_SEARCH`` candidates) against the exact
  neighbours (``ml.embedding.neighbours``), over 200 random queries;
- latency through the API at a fixed rate (open loop, ``--rate`` requests/s), for one example and
  for the mean of five (``GET /api/workflows/N/similarity/similar/?subjects=...&count=20``), and
  the baseline ``GET /healthz`` at the same rate in the same run; goal p99 < 50 ms;
- the plan PostgreSQL chose for the search (it must walk the space's HNSW index).

Usage: .venv/bin/python bench/similarity_search.py [--subjects 100000] [--seconds 20] [--rate 20]
It uses its own embedded servers in var/bench-similarity/ (or DATABASE_URL / REDIS_URL), keeps the
populated workflow for later runs, and writes bench/results/similarity_search.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT / "bench"), str(ROOT)]
os.environ.setdefault("CHORUS_DATA_DIR", str(ROOT / "var" / "bench-similarity"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chorus.settings")
# Throttles would (rightly) stop one client sending this many requests.
os.environ.setdefault("CHORUS_THROTTLE_VOLUNTEER", "1000000/min")
os.environ.setdefault("CHORUS_THROTTLE_ADDRESS", "100000000/min")
os.environ.setdefault("CHORUS_LOG_LEVEL", "WARNING")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

DIMENSIONS = 128
SLUG = "bench-similarity"


def synthetic_vectors(n: int, clusters: int = 500, spread: float = 0.35, seed: int = 0) -> np.ndarray:
    """``(n, 128)`` unit vectors: cluster centres on the sphere plus Gaussian spread, normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIMENSIONS))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    v = centres[rng.integers(0, clusters, n)] + rng.normal(scale=spread / np.sqrt(DIMENSIONS), size=(n, DIMENSIONS))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def populate(n: int) -> tuple[int, str, list[int], dict]:
    """The workflow of ``n`` subjects and its space (built once, reused by later runs): its id, an
    owner's token, the subject ids (row order of the vectors) and the build's timings."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from projects.models import Project, Subject, SubjectSet
    from projects.services import DEMO_TASKS, create_workflow, link_subject_set
    from similarity.embeddings import current_space, store_vectors
    from similarity.models import EmbeddingSpace

    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username="bench-scientist")
    token, _ = Token.objects.get_or_create(user=user)
    slug = f"{SLUG}-{n}"
    project = Project.objects.filter(slug=slug).first()
    if project is not None:
        workflow = project.workflows.get()
        space = current_space(workflow)
        if space is not None and space.n_subjects == n:
            ids = list(workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True))
            return workflow.pk, token.key, ids, {"reused": True, **space.timings}
        project.delete()
    t0 = time.perf_counter()
    project = Project.objects.create(slug=slug, title="Similarity benchmark")
    project.owners.add(user)
    workflow = create_workflow(project, "Synthetic", DEMO_TASKS)
    subject_set = SubjectSet.objects.create(project=project, name="synthetic")
    for start in range(0, n, 10_000):
        Subject.objects.bulk_create([Subject(subject_set=subject_set, external_id=f"g{i:06d}") for i in range(start, min(n, start + 10_000))])
    link_subject_set(workflow, subject_set)
    ids = list(workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True))
    subjects_seconds = time.perf_counter() - t0
    space = EmbeddingSpace.objects.create(workflow=workflow, source=EmbeddingSpace.Source.PRETRAINED, dimensions=DIMENSIONS)
    t0 = time.perf_counter()
    store_vectors(space, ids, synthetic_vectors(n))
    return workflow.pk, token.key, ids, {"reused": False, "subjects_seconds": round(subjects_seconds, 1),
                                         "store_vectors_seconds": round(time.perf_counter() - t0, 1), **space.timings}


def recall_and_plan(workflow_id: int, ids: list[int], queries: int = 200) -> dict:
    """Recall@20 of the index search against the exact neighbours, its in-process latency, and the plan."""
    from django.db import connection, transaction

    from ml.embedding import neighbours
    from similarity import selectors
    from similarity.embeddings import TABLE, current_space

    space = current_space(workflow_id)
    vectors = synthetic_vectors(len(ids))
    rng = np.random.default_rng(1)
    picks = rng.choice(len(ids), queries, replace=False)
    exact, _ = neighbours(vectors, 20, queries=vectors[picks])
    recalls, seconds = [], []
    for row, pick in enumerate(picks):
        t0 = time.perf_counter()
        found = selectors.nearest(space, vectors[pick], 20, exclude=[ids[pick]])
        seconds.append(time.perf_counter() - t0)
        truth = {ids[j] for j in exact[row] if j != pick}
        recalls.append(len(truth & {i for i, _ in found}) / len(truth))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL hnsw.ef_search = {selectors.EF_SEARCH}")
        cursor.execute(f"EXPLAIN SELECT subject_id FROM {TABLE} WHERE space_id = {space.pk} "
                       f"ORDER BY (vector::vector({DIMENSIONS})) <=> %s::vector({DIMENSIONS}) LIMIT 21", [str(vectors[0].tolist())])
        plan = [row[0] for row in cursor.fetchall()]
    ms = np.array(seconds) * 1000
    return {"recall_at_20": round(float(np.mean(recalls)), 4), "min_recall": round(float(np.min(recalls)), 3),
            "sql_p50_ms": round(float(np.percentile(ms, 50)), 2), "sql_p99_ms": round(float(np.percentile(ms, 99)), 2),
            "uses_hnsw_index": any(space.index_name in line for line in plan), "plan": plan}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=20, help="requests/s of the open-loop latency runs")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--port", type=int, default=8941)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "similarity_search.json")
    args = parser.parse_args()

    workflow_id, token, ids, build = populate(args.subjects)
    print(json.dumps({"build": build}), flush=True)
    index = recall_and_plan(workflow_id, ids)
    print(json.dumps({"index": {k: v for k, v in index.items() if k != "plan"}}), flush=True)

    from http_api import start_gunicorn
    from loadgen import run_load

    server = start_gunicorn(args.port, args.web_workers, args.threads)
    rng = random.Random(3)
    headers = {"Authorization": f"Token {token}"}
    url = f"/api/workflows/{workflow_id}/similarity/similar/?count=20&subjects="

    def healthz(i: int, n: int):
        return "GET", "/healthz", {}, None

    def one(i: int, n: int):
        return "GET", url + str(ids[rng.randrange(len(ids))]), headers, None

    def five(i: int, n: int):
        return "GET", url + ",".join(str(ids[rng.randrange(len(ids))]) for _ in range(5)), headers, None

    results = {}
    try:
        asyncio.run(run_load("warm-up", "127.0.0.1", args.port, one, args.connections, 3))
        for name, factory in (("baseline healthz", healthz), ("more like this, one example", one), ("more like this, mean of five", five)):
            result = asyncio.run(run_load(f"{name} at {args.rate:g}/s", "127.0.0.1", args.port, factory, args.connections,
                                          args.seconds, rate=args.rate))
            results[result.name] = result.summary()
            print(json.dumps(results[result.name]), flush=True)
        result = asyncio.run(run_load("more like this, one example, closed loop", "127.0.0.1", args.port, one, args.connections, args.seconds))
        results[result.name] = result.summary()
        print(json.dumps(results[result.name]), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=20)
    search = [v for k, v in results.items() if k.startswith("more like this") and "closed" not in k]
    worst_p99 = max(r["p99_ms"] for r in search)
    report = {
        "machine": "shared 2-core VM, load generator and servers on the same machine",
        "command": " ".join(["bench/similarity_search.py", *sys.argv[1:]]),
        "subjects": args.subjects, "dimensions": DIMENSIONS, "build": build, "index": index,
        "gunicorn": f"{args.web_workers} gthread workers x {args.threads} threads", "results": results,
        "p99_ms": worst_p99, "goal_p99_below_50_ms": worst_p99 < 50 and all(r["errors"] == 0 for r in search),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"p99_ms": worst_p99, "recall_at_20": index["recall_at_20"], "goal_met": report["goal_p99_below_50_ms"]}))


if __name__ == "__main__":
    main()
