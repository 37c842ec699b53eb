"""Read-only queries of similarity search: the nearest subjects to one or several examples (pgvector's
HNSW index, cosine distance), the most unusual subjects, the 2-D map, and each result's card (image,
consensus, retirement state) for the galleries and the API.

A search by several examples searches by their mean: the normalised mean of their normalised
vectors, the direction they share (their centroid on the sphere), so that what they have in common
leads and what each has alone averages out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from django.db import connection, transaction

from dashboards.selectors import map_label, question_keys, reason_label
from projects.models import Subject, SubjectImage, SubjectWorkflowState, Workflow
from similarity.embeddings import EF_SEARCH, TABLE, current_space, register_vectors, with_version_number
from similarity.models import EmbeddingSpace, SubjectEmbedding

MAX_RESULTS = 100
MAX_EXAMPLES = 100


class NotEmbedded(LookupError):
    """No space is ready, or the examples are not in it."""


def space_summary(space: EmbeddingSpace | None) -> dict[str, Any] | None:
    if space is None:
        return None
    version = getattr(space, "version_number", None)
    return {
        "id": space.pk, "source": space.source, "model_version": version, "dimensions": space.dimensions,
        "n_subjects": space.n_subjects, "anomaly_k": space.anomaly_k, "built_at": space.finished_at.isoformat() if space.finished_at else None,
        "label": f"model version {version}" if version is not None else "pretrained trunk",
    }


def spaces(workflow: Workflow) -> list[dict[str, Any]]:
    """Every stored space of the workflow, newest first, with its state (for the page and the API)."""
    current = current_space(workflow)
    return [
        {**(space_summary(space) or {}), "state": space.state, "current": current is not None and space.pk == current.pk,
         "error": space.error, "timings": space.timings}
        for space in with_version_number(EmbeddingSpace.objects.filter(workflow=workflow)).order_by("-created_at", "-id")
    ]


def _search(space: EmbeddingSpace, query_sql: str, params: list[Any], limit: int,
            extra_sql: str = "NULL", extra_params: Sequence[Any] = ()) -> list[tuple[int, float, Any]]:
    """One statement: the space's subjects by cosine distance to the query vector (``query_sql``, a
    scalar subquery: the HNSW scan takes it as its constant), nearest first, with one more column
    (``extra_sql``, computed once). The space's id and dimension are literals, so the planner
    matches the space's partial index."""
    register_vectors()
    dims, space_id = int(space.dimensions), int(space.pk)
    sql = (f"SELECT subject_id, (vector::vector({dims})) <=> ({query_sql}) AS distance, ({extra_sql}) FROM {TABLE} "
           f"WHERE space_id = {space_id} ORDER BY (vector::vector({dims})) <=> ({query_sql}) LIMIT {int(limit)}")
    values = [*params, *extra_params, *params]
    if limit <= EF_SEARCH:
        with connection.cursor() as cursor:
            cursor.execute(sql, values)
            return cursor.fetchall()
    with transaction.atomic(), connection.cursor() as cursor:  # a long list needs more candidates
        cursor.execute(f"SET LOCAL hnsw.ef_search = {int(limit)}")
        cursor.execute(sql, values)
        return cursor.fetchall()


def nearest(space: EmbeddingSpace, vector: np.ndarray, count: int, exclude: Sequence[int] = ()) -> list[tuple[int, float]]:
    """``(subject id, cosine distance)`` of the ``count`` nearest subjects of the space to
    ``vector``, nearest first, ``exclude`` left out: one HNSW index scan."""
    dims = int(space.dimensions)
    rows = _search(space, f"%s::vector({dims})", [np.asarray(vector, dtype=np.float32)], int(count) + len(exclude))
    skip = set(exclude)
    return [(int(i), float(d)) for i, d, _ in rows if i not in skip][:count]


def nearest_to_subjects(space: EmbeddingSpace, subject_ids: Sequence[int], count: int) -> list[tuple[int, float]]:
    """The ``count`` subjects nearest to the examples' mean direction (see the module), the
    examples left out, in one statement: pgvector averages the stored unit vectors (cosine
    distance ignores the mean's length) and counts the examples it holds. Raises ``NotEmbedded``
    naming the examples the space lacks."""
    ids = [int(i) for i in subject_ids]
    where = f"FROM {TABLE} WHERE space_id = {int(space.pk)} AND subject_id = ANY(%s)"
    rows = _search(space, f"SELECT AVG(vector)::vector({int(space.dimensions)}) {where}", [ids], count + len(ids),
                   extra_sql=f"SELECT COUNT(*) {where}", extra_params=[ids])
    if not rows or rows[0][2] != len(ids):
        held = set(SubjectEmbedding.objects.filter(space=space, subject_id__in=ids).values_list("subject_id", flat=True))
        raise NotEmbedded(f"subjects {[i for i in ids if i not in held][:10]} are not embedded in {space_summary(space)['label']}")
    skip = set(ids)
    return [(int(i), float(d)) for i, d, _ in rows if i not in skip][:count]


def similar_subjects(workflow: Workflow, subject_ids: Sequence[int], count: int = 20) -> dict[str, Any]:
    """The ``count`` subjects nearest to the examples' mean (the examples themselves left out), each
    with its card and its cosine ``distance``, in the current space."""
    if not subject_ids:
        raise ValueError("give at least one example subject")
    if len(subject_ids) > MAX_EXAMPLES:
        raise ValueError(f"at most {MAX_EXAMPLES} examples")
    if not 1 <= count <= MAX_RESULTS:
        raise ValueError(f"count must be 1 to {MAX_RESULTS}")
    space = current_space(workflow)
    if space is None:
        raise NotEmbedded("no embeddings yet: they are built when a model version is promoted (or a trunk pretrained)")
    ids = list(dict.fromkeys(int(i) for i in subject_ids))
    hits = nearest_to_subjects(space, ids, count)
    cards = subject_cards(workflow, [i for i, _ in hits] + ids)
    return {
        "space": space_summary(space),
        "query": [cards[i] for i in ids if i in cards],
        "results": [cards[i] | {"distance": round(d, 6)} for i, d in hits if i in cards],
    }


def anomalies(workflow: Workflow, count: int = 40, offset: int = 0, status: str | None = None) -> dict[str, Any]:
    """The workflow's subjects ranked by their anomaly score (cosine distance to their k-th nearest
    neighbour, highest first), ``status`` "active" or "retired" to keep only those."""
    if not 1 <= count <= MAX_RESULTS:
        raise ValueError(f"count must be 1 to {MAX_RESULTS}")
    if offset < 0:
        raise ValueError("offset must be >= 0")
    if status not in (None, "", *SubjectWorkflowState.Status.values):
        raise ValueError(f"status must be one of {', '.join(SubjectWorkflowState.Status.values)}")
    space = current_space(workflow)
    if space is None:
        raise NotEmbedded("no embeddings yet: they are built when a model version is promoted (or a trunk pretrained)")
    rows = SubjectEmbedding.objects.filter(space=space)
    if status:
        active = SubjectWorkflowState.objects.filter(workflow=workflow, status=status).values("subject_id")
        rows = rows.filter(subject_id__in=active)
    ranked = list(rows.order_by("-anomaly", "subject_id").values_list("subject_id", "anomaly")[offset : offset + count])
    cards = subject_cards(workflow, [i for i, _ in ranked])
    return {
        "space": space_summary(space),
        "k": space.anomaly_k,
        "offset": offset,
        "results": [cards[i] | {"anomaly": round(a, 6), "rank": offset + n + 1} for n, (i, a) in enumerate(ranked) if i in cards],
    }


def embedding_map(workflow: Workflow, question: str | None = None, limit: int = 5000, selected: Sequence[int] = ()) -> dict[str, Any]:
    """The 2-D map (the embeddings' first two principal components): at most ``limit`` points, an
    evenly spread sample by subject id plus the ``selected`` subjects, each with its consensus
    answer to ``question`` (default the first question) and its status."""
    space = current_space(workflow)
    if space is None:
        raise NotEmbedded("no embeddings yet: they are built when a model version is promoted (or a trunk pretrained)")
    questions = question_keys(workflow)
    question = question or (questions[0] if questions else None)
    if question is not None and question not in questions:
        raise ValueError(f"question must be one of {', '.join(questions)}")
    if not 1 <= limit <= 50_000:
        raise ValueError("limit must be 1 to 50000")
    step = max(1, -(-space.n_subjects // limit))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT e.subject_id, e.map_x, e.map_y, s.status, s.posterior -> %s
                  FROM (SELECT subject_id, map_x, map_y, row_number() OVER (ORDER BY subject_id) AS n FROM {TABLE}
                         WHERE space_id = %s) AS e
                  JOIN {SubjectWorkflowState._meta.db_table} s ON s.subject_id = e.subject_id AND s.workflow_id = %s
                 WHERE (e.n - 1) %% %s = 0 OR e.subject_id = ANY(%s)""",
            [question or "", space.pk, workflow.pk, step, [int(i) for i in selected]],
        )
        rows = cursor.fetchall()
    answers = [a.get("label", str(n)) for n, a in enumerate(workflow.tasks["tasks"][question]["answers"])] if question else []
    chosen = {int(i) for i in selected}
    points = []
    for subject_id, x, y, status, posterior in rows:
        if isinstance(posterior, str):  # Django has psycopg hand jsonb over as text
            posterior = json.loads(posterior)
        answer = int(np.argmax(posterior)) if isinstance(posterior, list) and posterior else None
        points.append({"id": subject_id, "x": round(x, 5), "y": round(y, 5), "status": status, "answer": answer,
                       "selected": subject_id in chosen})
    return {"space": space_summary(space), "question": question, "answers": answers, "step": step, "points": points}


def subject_cards(workflow: Workflow, subject_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """``{subject id: card}``: external id, first image's URL, status, retirement reason, counted
    classifications, gold, and the consensus (most probable answer and its probability) of each
    question, for the subjects of the workflow among ``subject_ids``: one statement."""
    ids = [int(i) for i in subject_ids]
    if not ids:
        return {}
    tasks = workflow.tasks["tasks"]
    questions = question_keys(workflow)
    storage = SubjectImage._meta.get_field("file").storage
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT s.subject_id, s.status, s.retirement_reason, s.classification_count, s.is_gold, s.posterior, subject.external_id,
                       (SELECT i.file FROM {SubjectImage._meta.db_table} i WHERE i.subject_id = s.subject_id ORDER BY i.position LIMIT 1)
                  FROM {SubjectWorkflowState._meta.db_table} s JOIN {Subject._meta.db_table} subject ON subject.id = s.subject_id
                 WHERE s.workflow_id = %s AND s.subject_id = ANY(%s)""",
            [workflow.pk, ids],
        )
        rows = cursor.fetchall()
    cards = {}
    for subject_id, status, reason, count, is_gold, posterior, external_id, image in rows:
        posterior = (orjson.loads(posterior) if isinstance(posterior, str | bytes) else posterior) or {}
        consensus = []
        for key in questions:
            p = posterior.get(key)
            if isinstance(p, list) and p and all(isinstance(x, int | float) for x in p):
                consensus.append({"task": key, "answer": int(np.argmax(p)), "label": map_label(tasks[key], p),
                                  "probability": round(float(max(p)), 4)})
        cards[subject_id] = {
            "id": subject_id, "external_id": external_id, "image": storage.url(image) if image else None,
            "status": status, "retirement_reason": reason, "retirement": reason_label(reason) if reason else None,
            "classification_count": count, "is_gold": is_gold, "consensus": consensus,
        }
    return cards
