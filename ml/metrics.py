"""Evaluation metrics for class probabilities: accuracy, balanced accuracy, log loss, calibration,
confusion.

All functions take ``probs`` ``(N, K)`` (rows summing to 1) and integer labels ``y`` ``(N,)``.
Calibration uses the top-label confidence (the probability of the predicted class) in equal-width
bins, as in Guo et al. (2017): ECE is the count-weighted mean of |accuracy - confidence|.
"""

from __future__ import annotations

import numpy as np


def _check(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    if probs.ndim != 2 or y.shape != (probs.shape[0],):
        raise ValueError(f"need probs (N, K) and labels (N,), got {probs.shape} and {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= probs.shape[1]):
        raise ValueError(f"labels must be in 0..{probs.shape[1] - 1}")
    return probs, y.astype(np.int64)


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    """Fraction of subjects whose most probable class is the label."""
    probs, y = _check(probs, y)
    return float(np.mean(probs.argmax(1) == y)) if y.size else float("nan")


def log_loss(probs: np.ndarray, y: np.ndarray, eps: float = 1e-6) -> float:
    """Mean negative log probability of the labels (natural log; probabilities clipped to ``eps``).
    A proper scoring rule: it rewards confidence where it is right and punishes it where it is
    wrong, and uses every subject's probability, not only which side of 0.5 it falls on."""
    losses = log_losses(probs, y, eps)
    return float(losses.mean()) if losses.size else float("nan")


def log_losses(probs: np.ndarray, y: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Each subject's negative log probability of its label (what ``log_loss`` averages): two
    classifiers scored on the same subjects can then be compared pairwise."""
    probs, y = _check(probs, y)
    return -np.log(np.clip(probs[np.arange(y.size), y], eps, 1.0))


def balanced_accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean over the classes present in ``y`` of the recall of that class."""
    probs, y = _check(probs, y)
    pred = probs.argmax(1)
    recalls = [np.mean(pred[y == c] == c) for c in np.unique(y)]
    return float(np.mean(recalls)) if recalls else float("nan")


def confusion(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Confusion counts ``(K, K)``: rows are true classes, columns predicted classes."""
    probs, y = _check(probs, y)
    k = probs.shape[1]
    return np.bincount(y * k + probs.argmax(1), minlength=k * k).reshape(k, k)


def reliability_table(probs: np.ndarray, y: np.ndarray, n_bins: int = 10) -> list[dict]:
    """One row per non-empty confidence bin: bounds, count, mean confidence, accuracy."""
    probs, y = _check(probs, y)
    conf = probs.max(1)
    correct = probs.argmax(1) == y
    # Bin i holds (i/n, (i+1)/n]; confidence 0 cannot occur (max of a distribution >= 1/K).
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        in_bin = bins == b
        if not in_bin.any():
            continue
        rows.append({
            "lo": b / n_bins,
            "hi": (b + 1) / n_bins,
            "count": int(in_bin.sum()),
            "confidence": float(conf[in_bin].mean()),
            "accuracy": float(correct[in_bin].mean()),
        })
    return rows


def ece(probs: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: sum over bins of (count / N) * |accuracy - confidence|."""
    probs, y = _check(probs, y)
    if not y.size:
        return float("nan")
    rows = reliability_table(probs, y, n_bins)
    return float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / y.size)
