"""ml.embedding on its own: exact neighbours, the anomaly score, precision@k, the 2-D map and the
linear head, against brute force and constructed cases."""

from __future__ import annotations

import numpy as np
import pytest

from ml.embedding import LinearHead, kth_neighbour_distance, neighbours, normalise, pca_2d, precision_at_k


def _brute(vectors: np.ndarray, k: int) -> np.ndarray:
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def test_neighbours_are_the_exact_cosine_neighbours_blockwise() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 16)) * rng.uniform(0.1, 10, size=(300, 1))  # norms must not matter
    idx, dist = neighbours(vectors, 7, block=64)
    assert np.array_equal(idx, _brute(vectors, 7))
    v = normalise(vectors)
    expected = 1 - np.take_along_axis(v @ v.T, idx, axis=1)
    assert np.allclose(dist, expected, atol=1e-5) and np.all(np.diff(dist, axis=1) >= -1e-6)
    assert not np.any(idx == np.arange(300)[:, None])  # never its own neighbour
    q_idx, _ = neighbours(vectors, 3, queries=vectors[:5])
    assert np.array_equal(q_idx[:, 0], np.arange(5))  # a query that is a row finds that row first
    with pytest.raises(ValueError, match="k must be"):
        neighbours(vectors[:3], 3)


def test_the_anomaly_score_ranks_the_isolated_point_first() -> None:
    rng = np.random.default_rng(1)
    cluster = np.array([1.0, 0, 0, 0]) + rng.normal(scale=0.05, size=(50, 4))
    outlier = np.array([[0, 0, 0, 1.0]])
    scores = kth_neighbour_distance(np.vstack([cluster, outlier]), k=5)
    assert scores.argmax() == 50 and scores[50] > 0.9 and scores[:50].max() < 0.1
    assert kth_neighbour_distance(np.ones((1, 4))).tolist() == [0.0]
    assert kth_neighbour_distance(np.eye(3), k=10).shape == (3,)  # k lowered to N - 1


def test_precision_at_k_counts_the_positive_neighbours_of_positive_queries() -> None:
    rng = np.random.default_rng(2)
    a = np.array([1.0, 0]) + rng.normal(scale=0.1, size=(20, 2))
    b = np.array([0, 1.0]) + rng.normal(scale=0.1, size=(20, 2))
    labels = np.array([1] * 20 + [0] * 20)
    assert precision_at_k(np.vstack([a, b]), labels, 10) == 1.0
    mixed = rng.normal(size=(400, 8))
    assert 0.35 < precision_at_k(mixed, rng.integers(0, 2, 400), 10) < 0.65  # random: the share of positives
    with pytest.raises(ValueError, match="no row"):
        precision_at_k(a, np.zeros(20, dtype=int))


def test_the_map_is_the_first_two_principal_components_with_fixed_signs() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 6)) * np.array([10, 3, 1, 0.5, 0.2, 0.1])
    xy = pca_2d(x)
    assert xy.shape == (500, 2)
    assert np.allclose(xy.mean(axis=0), 0, atol=1e-9)
    assert xy[:, 0].var() > xy[:, 1].var() > x[:, 2].var()  # ordered by variance, the largest two
    assert np.allclose(pca_2d(x), xy)  # deterministic
    assert np.corrcoef(xy[:, 0], x[:, 0])[0, 1] > 0.99  # the sign rule: the largest loading positive
    assert pca_2d(x[:1]).tolist() == [[0.0, 0.0]]


def test_a_linear_head_learns_a_separable_question_and_round_trips() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 12))
    y = (x[:, 3] + 0.5 * x[:, 7] > 0).astype(int)
    head = LinearHead.fit(x[:100], y[:100], 2, l2=1.0)
    p = head.predict_proba(x[100:])
    assert np.allclose(p.sum(axis=1), 1) and (p.argmax(axis=1) == y[100:]).mean() > 0.9
    again = LinearHead.from_dict(head.to_dict())
    assert np.allclose(again.predict_proba(x), head.predict_proba(x))
    with pytest.raises(ValueError, match="two different"):
        LinearHead.fit(x[:10], np.zeros(10, dtype=int), 2)
    with pytest.raises(ValueError, match="integers"):
        LinearHead.fit(x[:10], np.full(10, 0.5), 2)
