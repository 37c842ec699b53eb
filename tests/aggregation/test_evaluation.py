"""Paired accuracy differences and the exact accuracy of a fixed-size majority vote."""

from __future__ import annotations

import numpy as np
import pytest

from aggregation.evaluation import majority_accuracy, paired_accuracy_difference


def test_paired_difference_counts_discordant_subjects_and_brackets_the_truth() -> None:
    a = np.array([1, 1, 0, 0, 1, 1, 1, 0], dtype=bool)
    b = np.array([1, 0, 1, 1, 1, 1, 1, 0], dtype=bool)
    result = paired_accuracy_difference(a, b)
    assert result.difference == pytest.approx(1 / 8)
    assert (result.b_right_a_wrong, result.a_right_b_wrong) == (2, 1)
    d = b.astype(float) - a
    assert result.standard_error == pytest.approx(d.std(ddof=1) / np.sqrt(8))
    assert result.interval[0] < result.difference < result.interval[1]


def test_paired_interval_is_narrower_than_unpaired_when_the_methods_share_hard_subjects() -> None:
    rng = np.random.default_rng(0)
    hard = rng.random(5000) < 0.1
    a = np.where(hard, rng.random(5000) < 0.5, rng.random(5000) < 0.99)
    b = np.where(hard, a | (rng.random(5000) < 0.1), a)  # b fixes a tenth of a's misses on hard subjects
    result = paired_accuracy_difference(a, b)
    unpaired = np.sqrt(a.var() / a.size + b.var() / b.size)
    assert result.difference > 0
    assert result.standard_error < unpaired / 2


def test_paired_interval_covers_the_true_difference_about_as_often_as_it_says() -> None:
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(400):
        a = rng.random(800) < 0.9
        b = rng.random(800) < 0.92  # true difference 0.02
        low, high = paired_accuracy_difference(a, b).interval
        covered += low <= 0.02 <= high
    assert 0.91 <= covered / 400 <= 0.99


def test_paired_difference_takes_probabilities_and_rejects_bad_input() -> None:
    result = paired_accuracy_difference(np.array([0.5, 1.0, 0.0]), np.array([1.0, 1.0, 1.0]))
    assert result.difference == pytest.approx(0.5)
    assert result.b_right_a_wrong == pytest.approx(1.5)
    with pytest.raises(ValueError, match="same length"):
        paired_accuracy_difference(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        paired_accuracy_difference(np.array([0.0, 2.0]), np.array([1.0, 1.0]))


def test_majority_accuracy_matches_drawing_the_votes() -> None:
    rng = np.random.default_rng(2)
    pool, votes = 30, 10
    n_right = np.array([5, 15, 16, 24, 30])
    truth = np.array([0, 0, 1, 1, 0])
    exact = majority_accuracy(n_right, pool, votes, truth)
    draws = 20000
    for i, (k, y) in enumerate(zip(n_right, truth, strict=True)):
        answers = np.r_[np.ones(k), np.zeros(pool - k)]  # 1: right
        right = 0
        for _ in range(draws):
            x = rng.choice(answers, votes, replace=False).sum()
            right += x > votes / 2 or (x == votes / 2 and y == 0)  # a tie goes to label 0
        assert exact[i] == pytest.approx(right / draws, abs=0.012)
    assert exact[-1] == 1.0


def test_majority_accuracy_with_odd_votes_has_no_ties_and_rejects_bad_input() -> None:
    p = majority_accuracy(np.array([10, 10]), 20, 5, np.array([0, 1]))
    assert p[0] == pytest.approx(p[1]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="votes"):
        majority_accuracy(np.array([3]), 5, 6, np.array([0]))
    with pytest.raises(ValueError, match="binary"):
        majority_accuracy(np.array([3]), 5, 3, np.array([2]))
