"""Comparing two ways of labelling the same subjects: paired accuracy differences and the exact
accuracy of a fixed-size majority vote.

Why paired: two methods run on one crowd label the same subjects, and the subjects that are hard
for one are often hard for the other. The difference of their accuracies, subject by subject, has a
much smaller standard error than the two accuracies' own errors combined, so "is (c) as accurate
as (a)?" gets an answer with a confidence interval instead of two point estimates.

Why exact: Galaxy Zoo 2's way (a fixed number of votes, the majority wins) drawn once from a
simulated crowd carries the luck of which volunteers were drawn. When every volunteer's answer to a
subject is known, the chance that a majority of ``votes`` drawn at random is right is a
hypergeometric tail, and its mean over subjects is the method's accuracy without that luck.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    """``accuracy_b - accuracy_a`` on the same subjects, with its standard error and interval."""

    n: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    standard_error: float
    interval: tuple[float, float]
    confidence: float
    b_right_a_wrong: float
    a_right_b_wrong: float

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def paired_accuracy_difference(right_a: np.ndarray, right_b: np.ndarray, confidence: float = 0.95) -> PairedDifference:
    """Compare two methods on the same subjects.

    ``right_a`` and ``right_b`` give, per subject, whether each method was right (booleans) or the
    probability that it is (floats in [0, 1], e.g. :func:`majority_accuracy`). The interval is the
    normal one on the mean of the per-subject differences (McNemar's setting for booleans);
    ``b_right_a_wrong`` and ``a_right_b_wrong`` are the expected discordant counts.
    """
    a = np.asarray(right_a, dtype=float)
    b = np.asarray(right_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"right_a and right_b must be 1-d and the same length, got {a.shape} and {b.shape}")
    if a.size < 2:
        raise ValueError("need at least two subjects")
    if np.any((a < 0) | (a > 1) | (b < 0) | (b > 1)):
        raise ValueError("per-subject scores must lie in [0, 1]")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = b - a
    se = float(d.std(ddof=1) / np.sqrt(d.size))
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    mean = float(d.mean())
    return PairedDifference(
        n=int(d.size),
        accuracy_a=float(a.mean()),
        accuracy_b=float(b.mean()),
        difference=mean,
        standard_error=se,
        interval=(mean - z * se, mean + z * se),
        confidence=confidence,
        b_right_a_wrong=float((b * (1 - a)).sum()),
        a_right_b_wrong=float((a * (1 - b)).sum()),
    )


def majority_accuracy(n_right: np.ndarray, pool: int, votes: int, truth: np.ndarray, tie_label: int = 0) -> np.ndarray:
    """Per subject, the probability that the majority of ``votes`` answers drawn without replacement
    from ``pool`` answerers, of whom ``n_right[i]`` answer subject i correctly, is right (binary
    task; a tie gives ``tie_label``, which is right when it is the subject's ``truth``)."""
    k = np.asarray(n_right, dtype=int)
    y = np.asarray(truth, dtype=int)
    if k.shape != y.shape:
        raise ValueError("n_right and truth must have the same shape")
    if not 0 < votes <= pool:
        raise ValueError(f"need 0 < votes <= pool, got votes={votes}, pool={pool}")
    if np.any((k < 0) | (k > pool)):
        raise ValueError("n_right must lie in [0, pool]")
    if np.any((y != 0) & (y != 1)) or tie_label not in (0, 1):
        raise ValueError("binary task: truth and tie_label must be 0 or 1")
    # right answers drawn: X ~ Hypergeom(pool, k, votes); right when X > votes/2, or X == votes/2 on a tie that favours the truth
    strict = stats.hypergeom.sf(votes // 2, pool, k, votes)  # P(X > votes // 2)
    if votes % 2:
        return strict
    tie = stats.hypergeom.pmf(votes // 2, pool, k, votes)
    return strict + np.where(y == tie_label, tie, 0.0)
