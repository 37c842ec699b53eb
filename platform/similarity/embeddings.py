"""Building a workflow's embedding space: the CNN serving it (the promoted model version, or before
the first one the machine's pretrained trunk) embeds every subject that has an image, and the
vectors go to PostgreSQL (pgvector) with their anomaly score, their place on the 2-D map and an
HNSW index of their own.

- When: after a promotion when a refresh is due (``REFRESH_SECONDS``, with why), after every
  roll-back, and when a pretrained trunk is stored (``similarity.receivers``), on the "ml" queue
  (``similarity.tasks``); by hand (the spaces API's POST, ``manage.py build_embeddings``). A space already built by the same weights over the same
  subjects is reused (a roll-back to a version built before costs nothing); it becomes the one
  searched again (``activated_at``).
- Which space is searched (``current_space``): the ready space activated last. While a new one is
  built, searches use the previous one; a search never mixes two spaces.
- How: ``GalaxyClassifier.embed`` (the penultimate layer averaged over the 8 rotations and
  reflections, so a rotated galaxy is the same galaxy), L2-normalised, one binary COPY into
  ``SubjectEmbedding``; the anomaly score is the cosine distance to the k-th nearest other subject
  (``ml.embedding.kth_neighbour_distance``, exact), the map the first two principal components.
  Then a partial HNSW index ``WHERE space_id = N`` on ``vector::vector(D)`` with cosine distance:
  each space's graph holds only its own vectors.
- The last ``KEEP_SPACES`` spaces of a workflow are kept (a roll-back finds its space ready); older
  ones are deleted with their index (``similarity.receivers.space_deleted``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence

import numpy as np
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from machine.models import MachineAgent
from projects.models import SubjectImage, SubjectWorkflowState, Workflow
from similarity.models import EmbeddingSpace, SubjectEmbedding

logger = logging.getLogger(__name__)

Source = EmbeddingSpace.Source
State = EmbeddingSpace.State

KEEP_SPACES = 3
ANOMALY_K = 5
EMBED_BATCH = 256
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 128  # 64 left a clustered 100,000 with a query of recall 0 (bench/similarity_search.py)
BUILD_LOCK_SECONDS = 6 * 3600
TABLE = SubjectEmbedding._meta.db_table
QUEUE = "ml"  # with the CNN's other work (CELERY_TASK_ROUTES sends machine.tasks there)


EF_SEARCH = 100  # candidates an HNSW search keeps (pgvector's default, 40, loses recall at 100,000 vectors)


def register_vectors() -> None:
    """Prepare this database connection for vectors, once: pgvector values sent and read as numpy
    arrays, and the HNSW searches' ``hnsw.ef_search`` set for the session (one statement per
    connection rather than a transaction around every search). Inside a transaction the setting
    could be rolled back with it, so there it is set again next time."""
    from pgvector.psycopg import register_vector

    connection.ensure_connection()
    raw = connection.connection
    if getattr(raw, "_chorus_vectors", False):
        return
    register_vector(raw)
    with connection.cursor() as cursor:
        cursor.execute(f"SET hnsw.ef_search = {EF_SEARCH}")
    raw._chorus_vectors = not connection.in_atomic_block


def embedding_source(workflow: Workflow) -> tuple[str, object | None, bytes] | None:
    """What embeds the workflow's subjects now: ``(source, model version or None, weights)``; the
    version serving, else the machine's pretrained trunk, else None (nothing to embed with)."""
    from machine.selectors import current_model

    version = current_model(workflow)
    if version is not None and version.model:
        return Source.VERSION, version, bytes(version.model)
    blob = MachineAgent.objects.filter(workflow=workflow).values_list("pretrained_model", flat=True).first()
    if blob:
        return Source.PRETRAINED, None, bytes(blob)
    return None


def embedded_subjects(workflow: Workflow) -> list[int]:
    """The workflow's subjects that have an image, by id: what a space holds."""
    ids = SubjectWorkflowState.objects.filter(workflow=workflow).values_list("subject_id", flat=True)
    return sorted(set(SubjectImage.objects.filter(subject_id__in=ids).values_list("subject_id", flat=True)))


def embed_subjects(classifier: object, subject_ids: Sequence[int], batch: int = EMBED_BATCH) -> np.ndarray:
    """``(N, D)`` embeddings of the subjects' first images (D4-averaged), in the given order."""
    from machine import training_data

    out = np.empty((len(subject_ids), classifier.config.embedding_dim), dtype=np.float32)
    for start in range(0, len(subject_ids), batch):
        ids = list(subject_ids[start : start + batch])
        images = training_data.load_images(ids, classifier.config.image_size)
        out[start : start + len(ids)] = classifier.embed(images, tta=True)
    return out


def build_space(workflow_id: int, force: bool = False) -> EmbeddingSpace | None:
    """Embed the workflow's subjects with the model serving it and store them (see the module).
    Returns the space searched from now on; None when nothing can embed yet (no version, no trunk)
    or when the same weights are being built by another run."""
    from ml import GalaxyClassifier

    workflow = Workflow.objects.get(pk=workflow_id)
    found = embedding_source(workflow)
    if found is None:
        logger.info("workflow %s: no model version nor pretrained trunk to embed with", workflow_id)
        return None
    source, version, blob = found
    digest = hashlib.sha1(blob).hexdigest()
    subject_ids = embedded_subjects(workflow)
    if not force:
        ready = EmbeddingSpace.objects.filter(workflow=workflow, model_digest=digest, state=State.READY,
                                              n_subjects=len(subject_ids)).first()
        if ready is not None:
            activate(ready)
            return ready
    lock = f"similarity:build:{workflow_id}:{digest}"
    if not cache.add(lock, 1, BUILD_LOCK_SECONDS):
        logger.info("workflow %s: these embeddings are being built already", workflow_id)
        return None
    try:
        if version is not None:
            from machine.agents import load_classifier

            classifier = load_classifier(version)
        else:
            classifier = GalaxyClassifier.from_bytes(blob)
        space = EmbeddingSpace.objects.create(
            workflow=workflow, source=source, model_version=version, model_digest=digest,
            dimensions=classifier.config.embedding_dim, image_size=classifier.config.image_size,
        )
        try:
            t0 = time.perf_counter()
            vectors = embed_subjects(classifier, subject_ids)
            store_vectors(space, subject_ids, vectors, timings={"embed": time.perf_counter() - t0})
        except Exception as error:
            EmbeddingSpace.objects.filter(pk=space.pk).update(state=State.FAILED, error=repr(error)[:2000], finished_at=timezone.now())
            raise
    finally:
        cache.delete(lock)
    logger.info("workflow %s: %s subjects embedded (%s)", workflow_id, len(subject_ids), space)
    return space


def store_vectors(space: EmbeddingSpace, subject_ids: Sequence[int], vectors: np.ndarray, anomaly_k: int = ANOMALY_K,
                  timings: dict | None = None) -> EmbeddingSpace:
    """Store one space's vectors (normalised here), their anomaly scores and map, build its HNSW
    index, make it the space searched and prune the workflow's old spaces. ``vectors`` ``(N, D)``
    row for row with ``subject_ids``."""
    from pgvector.psycopg import register_vector  # noqa: F401 - fails early if the package is missing

    from ml.embedding import kth_neighbour_distance, normalise, pca_2d

    vectors = normalise(vectors)
    if len(subject_ids) != vectors.shape[0] or len(set(subject_ids)) != len(subject_ids):
        raise ValueError("one vector per subject, each subject once")
    timings = dict(timings or {})
    t0 = time.perf_counter()
    k = min(anomaly_k, max(len(subject_ids) - 1, 1))
    anomaly = kth_neighbour_distance(vectors, k)
    xy = pca_2d(vectors)
    timings["anomaly_and_map"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    register_vectors()
    columns = "space_id, subject_id, vector, anomaly, map_x, map_y"
    with transaction.atomic(), connection.cursor() as cursor, cursor.copy(f"COPY {TABLE} ({columns}) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "int8", "vector", "float8", "float8", "float8"])
        for i, subject_id in enumerate(subject_ids):
            copy.write_row((space.pk, int(subject_id), vectors[i], float(anomaly[i]), float(xy[i, 0]), float(xy[i, 1])))
    timings["store"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        # Django's foreign keys are deferred: their checks of the rows just copied must run before
        # the index can be built (they are pending when a caller's transaction holds both).
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {space.index_name} ON {TABLE} USING hnsw ((vector::vector({int(vectors.shape[1])})) vector_cosine_ops) "
            f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) WHERE space_id = {int(space.pk)}"
        )
        # Fresh statistics, so that the planner walks the HNSW graph rather than sorting the space.
        cursor.execute(f"ANALYZE {TABLE}")
    timings["index"] = time.perf_counter() - t0
    space.dimensions = int(vectors.shape[1])
    space.n_subjects = len(subject_ids)
    space.anomaly_k = k
    space.pca = {"x": [float(xy[:, 0].min()), float(xy[:, 0].max())] if len(xy) else [0, 0],
                 "y": [float(xy[:, 1].min()), float(xy[:, 1].max())] if len(xy) else [0, 0]}
    space.timings = {key: round(value, 3) for key, value in timings.items()}
    space.state = State.READY
    space.finished_at = timezone.now()
    space.save(update_fields=["dimensions", "n_subjects", "anomaly_k", "pca", "timings", "state", "finished_at"])
    activate(space)
    prune_spaces(space.workflow_id)
    return space


def activate(space: EmbeddingSpace) -> None:
    """Make a ready space the one searched (the latest activated: ``current_space``)."""
    space.activated_at = timezone.now()
    space.save(update_fields=["activated_at"])


def current_space(workflow: Workflow | int) -> EmbeddingSpace | None:
    """The space searched: the ready one activated last (built, or reused after a roll-back)."""
    workflow_id = workflow if isinstance(workflow, int) else workflow.pk
    return with_version_number(EmbeddingSpace.objects.filter(workflow_id=workflow_id, state=State.READY)).order_by("-activated_at", "-id").first()


def with_version_number(spaces: QuerySet[EmbeddingSpace]) -> QuerySet[EmbeddingSpace]:
    """Spaces with their model version's number as ``version_number`` (without loading its weights)."""
    return spaces.annotate(version_number=F("model_version__version"))


def prune_spaces(workflow_id: int, keep: int = KEEP_SPACES) -> int:
    """Delete all but the ``keep`` spaces activated last (failed ones too, once older); returns how many."""
    spaces = list(EmbeddingSpace.objects.filter(workflow_id=workflow_id).exclude(state=State.BUILDING).order_by(F("activated_at").desc(nulls_last=True), "-finished_at", "-id"))
    old = spaces[keep:]
    for space in old:
        space.delete()
    return len(old)


def drop_index(space_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS similarity_space_{int(space_id)}_hnsw")


# How often a promotion re-embeds a workflow's subjects. Why not every time: a space is the
# scientists' browsing aid, while the loop promotes a version every few minutes; re-embedding every
# subject at each one took the "ml" worker 80 s per version on 6,608 galaxies (bench/machine_loop.py
# --tree), ahead of the next training. So a promotion re-embeds when the workflow has no space yet,
# when its space is the pretrained trunk's (the first trained version knows the project), or when
# the space searched is older than this; a roll-back, the spaces API's POST and
# ``manage.py build_embeddings`` build at once; beat's ``refresh_embeddings`` catches up the rest.
REFRESH_SECONDS = float(os.environ.get("CHORUS_EMBEDDING_REFRESH_SECONDS", 1800))


def refresh_due(workflow_id: int) -> bool:
    """Whether the space searched should be rebuilt now with the model serving (see REFRESH_SECONDS)."""
    space = current_space(workflow_id)
    if space is None or space.source == Source.PRETRAINED:
        return True
    return space.activated_at is None or (timezone.now() - space.activated_at).total_seconds() >= REFRESH_SECONDS


def request_refresh(workflow_id: int) -> bool:
    """``request_build`` if ``refresh_due``; returns whether it was requested."""
    if not refresh_due(workflow_id):
        return False
    request_build(workflow_id)
    return True


def request_build(workflow_id: int) -> None:
    """Queue a build on the "ml" queue once the current transaction commits; a broker that is down
    is logged, never raised: a promotion must not fail because its embeddings could not be queued."""

    def send() -> None:
        from kombu.exceptions import OperationalError
        from redis.exceptions import RedisError

        from similarity.tasks import build_embeddings

        try:
            build_embeddings.apply_async((workflow_id,), queue=QUEUE)
        except (OperationalError, RedisError) as error:
            logger.warning("workflow %s: embeddings not queued (%s); `manage.py build_embeddings` builds them", workflow_id, error)

    transaction.on_commit(send)
