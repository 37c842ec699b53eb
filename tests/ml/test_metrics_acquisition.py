"""Metrics and acquisition scores on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from ml import acquisition, metrics


def test_ece_by_hand() -> None:
    # Four predictions at confidence 0.9 (3 right), two at 0.6 (1 right).
    probs = np.array([[0.9, 0.1]] * 4 + [[0.4, 0.6]] * 2)
    y = np.array([0, 0, 0, 1, 1, 0])
    expected = (4 * abs(0.75 - 0.9) + 2 * abs(0.5 - 0.6)) / 6
    assert metrics.ece(probs, y) == pytest.approx(expected)
    table = metrics.reliability_table(probs, y)
    assert [(r["count"], r["accuracy"]) for r in table] == [(2, 0.5), (4, 0.75)]


def test_ece_is_zero_when_calibrated() -> None:
    probs = np.array([[0.75, 0.25]] * 4 + [[1.0, 0.0]] * 3)
    y = np.array([0, 0, 0, 1, 0, 0, 0])
    assert metrics.ece(probs, y) == pytest.approx(0.0)


def test_accuracy_balanced_accuracy_and_confusion() -> None:
    probs = np.eye(2)[[0, 0, 0, 0, 1, 0]]  # predicts 0,0,0,0,1,0
    y = np.array([0, 0, 0, 0, 1, 1])
    assert metrics.accuracy(probs, y) == pytest.approx(5 / 6)
    assert metrics.balanced_accuracy(probs, y) == pytest.approx(0.5 * (1.0 + 0.5))
    np.testing.assert_array_equal(metrics.confusion(probs, y), [[4, 0], [1, 1]])
    with pytest.raises(ValueError):
        metrics.accuracy(probs, np.array([0, 2, 0, 0, 1, 1]))


def test_bald_is_zero_when_samples_agree_and_positive_when_they_disagree() -> None:
    agree = np.array([[[0.5, 0.5], [0.9, 0.1]]] * 10)  # (S=10, N=2, K=2), uncertain but agreeing
    np.testing.assert_allclose(acquisition.bald(agree), 0.0, atol=1e-12)
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]] * 5)  # half say one class, half the other
    assert acquisition.bald(disagree)[0] == pytest.approx(np.log(2))
    mild = np.array([[[0.6, 0.4]], [[0.4, 0.6]]])
    assert 0 < acquisition.bald(mild)[0] < np.log(2)


def test_entropy() -> None:
    h = acquisition.entropy(np.array([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(h, [np.log(4), 0.0], atol=1e-12)
    mc = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert acquisition.entropy(mc)[0] == pytest.approx(np.log(2))  # entropy of the mean


def test_disagreement() -> None:
    p = np.array([[1.0, 0.0], [0.7, 0.3]])
    q = np.array([[0.0, 1.0], [0.7, 0.3]])
    np.testing.assert_allclose(acquisition.disagreement(p, q), [np.log(2), 0.0], atol=1e-12)
    assert acquisition.disagreement(p[:1], np.array([[0.8, 0.2]]))[0] < np.log(2)


def test_log_loss_is_the_mean_negative_log_probability_of_the_labels() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [1.0, 0.0]])
    y = np.array([0, 1, 1, 1])
    expected = -(np.log(0.9) + np.log(0.8) + np.log(0.5) + np.log(1e-6)) / 4
    assert metrics.log_loss(probs, y) == pytest.approx(expected)
    # Sharper where right scores better; sharper where wrong scores worse.
    assert metrics.log_loss(np.array([[0.99, 0.01]]), np.array([0])) < metrics.log_loss(np.array([[0.9, 0.1]]), np.array([0]))
    assert metrics.log_loss(np.array([[0.99, 0.01]]), np.array([1])) > metrics.log_loss(np.array([[0.9, 0.1]]), np.array([1]))
