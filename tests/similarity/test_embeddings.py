"""Embedding spaces on real PostgreSQL with pgvector: built from the trunk, then from each promoted
version and again after a roll-back (reused), their HNSW index used by the search, exact answers on
a small workflow, the anomaly ranking, the map; old spaces pruned with their index."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection, transaction

from machine import promotion
from machine.models import ModelVersion
from projects.models import SubjectWorkflowState
from similarity import embeddings, selectors
from similarity.models import EmbeddingSpace, SubjectEmbedding
from tests.similarity.conftest import store_trunk, tiny_classifier

pytestmark = pytest.mark.django_db


def _vectors(space) -> tuple[list[int], np.ndarray]:
    from similarity.questions import space_vectors

    return space_vectors(space)


def _index_names() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'similarity_subjectembedding'")
        return {row[0] for row in cursor.fetchall()}


def _version(workflow, number: int, seed: int) -> ModelVersion:
    return ModelVersion.objects.create(workflow=workflow, version=number, state=ModelVersion.State.TRAINED,
                                       model=tiny_classifier(seed).to_bytes(), metrics={"trained": False})


def test_the_trunk_embeds_every_subject_with_an_hnsw_index_of_its_own(embedded_workflow, inline_builds) -> None:
    workflow = embedded_workflow()
    assert inline_builds == [workflow.pk]
    space = embeddings.current_space(workflow)
    assert space.source == "pretrained" and space.model_version is None and space.state == "ready"
    ids, vectors = _vectors(space)
    assert ids == sorted(SubjectWorkflowState.objects.filter(workflow=workflow).values_list("subject_id", flat=True))
    assert space.n_subjects == 40 and vectors.shape == (40, 128)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # The same vectors as the CNN gives the same images (D4-averaged, normalised).
    from machine import training_data

    expected = tiny_classifier().embed(training_data.load_images(ids[:4], 32))
    assert np.allclose(vectors[:4], expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    assert space.index_name in _index_names()
    # The search's query can be answered by that index (on 40 rows the planner would rather sort them).
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(
            f"EXPLAIN SELECT subject_id FROM similarity_subjectembedding WHERE space_id = {space.pk} "
            f"ORDER BY (vector::vector(128)) <=> %s::vector(128) LIMIT 20", [str(vectors[0].tolist())])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert space.index_name in plan


def test_more_like_this_gives_the_exact_nearest_by_cosine_with_each_card(embedded_workflow) -> None:
    workflow = embedded_workflow()
    space = embeddings.current_space(workflow)
    ids, vectors = _vectors(space)
    query = ids[5]
    found = selectors.similar_subjects(workflow, [query], 20)
    exact = {i: 1 - float(s) for i, s in zip(ids, vectors @ vectors[5], strict=True) if i != query}
    # The 20 nearest (up to float32 ties between PostgreSQL and numpy), nearest first, with their distances.
    assert [r["distance"] for r in found["results"]] == pytest.approx(sorted(exact.values())[:20], abs=1e-5)
    assert all(r["distance"] == pytest.approx(exact[r["id"]], abs=1e-5) for r in found["results"])
    assert len({r["id"] for r in found["results"]}) == 20
    assert found["query"][0]["id"] == query and found["space"]["label"] == "pretrained trunk"
    card = found["results"][0]
    assert card["image"].startswith("/media/subjects/") and card["status"] == "active"
    assert card["external_id"].endswith(".jpeg") and card["consensus"] == [] and card["retirement"] is None
    # Several examples: the nearest to their mean direction, none of the examples among them.
    examples = ids[:3]
    mean = vectors[:3].mean(axis=0)
    mean /= np.linalg.norm(mean)
    by_mean = sorted(1 - float(s) for i, s in zip(ids, vectors @ mean, strict=True) if i not in examples)[:10]
    results = selectors.similar_subjects(workflow, examples, 10)["results"]
    assert [r["distance"] for r in results] == pytest.approx(by_mean, abs=1e-5)
    assert not {r["id"] for r in results} & set(examples)
    with pytest.raises(selectors.NotEmbedded, match="not embedded"):
        selectors.similar_subjects(workflow, [10**9], 5)


def test_cards_carry_the_consensus_and_the_retirement(embedded_workflow) -> None:
    workflow = embedded_workflow()
    state = SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).first()
    state.posterior = {"T0": [0.1, 0.9]}
    state.status, state.retirement_reason = "retired", "consensus:T0"
    state.save()
    card = selectors.subject_cards(workflow, [state.subject_id])[state.subject_id]
    assert card["consensus"] == [{"task": "T0", "answer": 1, "label": "Features or disk", "probability": 0.9}]
    assert card["status"] == "retired" and card["retirement"]


def test_the_odd_subject_is_the_most_unusual(embedded_workflow) -> None:
    workflow = embedded_workflow(odd=True)
    ranked = selectors.anomalies(workflow, count=5)
    assert ranked["results"][0]["external_id"] == "green-square" and ranked["results"][0]["rank"] == 1
    scores = [r["anomaly"] for r in ranked["results"]]
    assert scores == sorted(scores, reverse=True) and ranked["k"] == 5
    page_two = selectors.anomalies(workflow, count=5, offset=5)
    assert page_two["results"][0]["rank"] == 6 and page_two["results"][0]["anomaly"] <= scores[-1]
    retired_only = selectors.anomalies(workflow, count=5, status="retired")
    assert retired_only["results"] == []
    with pytest.raises(ValueError, match="status"):
        selectors.anomalies(workflow, status="gone")


def test_the_map_has_every_subject_coloured_by_consensus_and_marks_the_selection(embedded_workflow) -> None:
    workflow = embedded_workflow()
    space = embeddings.current_space(workflow)
    first = SubjectWorkflowState.objects.filter(workflow=workflow).order_by("subject_id").first()
    first.posterior = {"T0": [0.2, 0.8]}
    first.save()
    full = selectors.embedding_map(workflow, selected=[first.subject_id])
    assert len(full["points"]) == 40 and full["answers"] == ["Smooth", "Features or disk"] and full["question"] == "T0"
    point = next(p for p in full["points"] if p["id"] == first.subject_id)
    assert point["answer"] == 1 and point["selected"] and sum(p["selected"] for p in full["points"]) == 1
    stored = SubjectEmbedding.objects.get(space=space, subject_id=first.subject_id)
    assert point["x"] == pytest.approx(stored.map_x, abs=1e-4)
    sample = selectors.embedding_map(workflow, limit=10, selected=[first.subject_id])
    assert 10 <= len(sample["points"]) <= 11 and sample["step"] == 4
    with pytest.raises(ValueError, match="question"):
        selectors.embedding_map(workflow, question="T9")


def test_promotion_and_roll_back_rebuild_or_reuse_the_space_of_the_version_serving(
        embedded_workflow, inline_builds, django_capture_on_commit_callbacks, monkeypatch) -> None:
    from similarity.tasks import refresh_embeddings

    workflow = embedded_workflow()
    trunk_space = embeddings.current_space(workflow)
    first, second = _version(workflow, 1, seed=1), _version(workflow, 2, seed=2)
    with django_capture_on_commit_callbacks(execute=True):
        promotion.promote_model_version(first, predict="no")
    space_1 = embeddings.current_space(workflow)
    assert space_1.model_version == first and space_1.source == "version" and space_1.pk != trunk_space.pk
    with django_capture_on_commit_callbacks(execute=True):
        promotion.promote_model_version(second, predict="no")
    # Within REFRESH_SECONDS of the last build a promotion does not re-embed; beat catches up after.
    assert embeddings.current_space(workflow).pk == space_1.pk
    monkeypatch.setattr(embeddings, "REFRESH_SECONDS", 0.0)
    with django_capture_on_commit_callbacks(execute=True):
        assert refresh_embeddings() == [workflow.pk]
    space_2 = embeddings.current_space(workflow)
    assert space_2.model_version == second
    with django_capture_on_commit_callbacks(execute=True):
        assert refresh_embeddings() == []  # the space is the version serving's: nothing to do
    ids, v1 = _vectors(space_1)
    _, v2 = _vectors(space_2)
    assert not np.allclose(v1, v2)  # other weights, other vectors: never mixed in one search
    built = EmbeddingSpace.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        promotion.roll_back(workflow, predict="no")
    assert embeddings.current_space(workflow).pk == space_1.pk  # the stored space, activated again
    assert EmbeddingSpace.objects.count() == built  # nothing embedded twice
    assert selectors.similar_subjects(workflow, [ids[0]], 3)["space"]["model_version"] == 1


def test_old_spaces_are_pruned_with_their_index(embedded_workflow) -> None:
    workflow = embedded_workflow()
    first = embeddings.current_space(workflow)
    for seed in range(1, embeddings.KEEP_SPACES + 1):
        store_trunk(workflow, tiny_classifier(seed))  # outside a transaction: its build was only queued
        embeddings.build_space(workflow.pk)
    assert EmbeddingSpace.objects.filter(workflow=workflow).count() == embeddings.KEEP_SPACES
    assert not EmbeddingSpace.objects.filter(pk=first.pk).exists()
    assert first.index_name not in _index_names()
    assert not SubjectEmbedding.objects.filter(space_id=first.pk).exists()


def test_nothing_to_embed_with_is_said_and_searches_wait_for_a_space(galaxy_workflow) -> None:
    workflow = galaxy_workflow()
    assert embeddings.build_space(workflow.pk) is None
    with pytest.raises(selectors.NotEmbedded, match="no embeddings yet"):
        selectors.similar_subjects(workflow, [1], 5)


def test_a_failed_build_is_recorded_and_the_previous_space_still_serves(embedded_workflow, monkeypatch) -> None:
    workflow = embedded_workflow()
    before = embeddings.current_space(workflow)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(embeddings, "embed_subjects", broken)
    store_trunk(workflow, tiny_classifier(7))
    with pytest.raises(RuntimeError):
        embeddings.build_space(workflow.pk)
    failed = EmbeddingSpace.objects.get(workflow=workflow, state="failed")
    assert "out of memory" in failed.error
    assert embeddings.current_space(workflow).pk == before.pk
