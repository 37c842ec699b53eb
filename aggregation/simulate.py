"""Simulated crowds for tests, calibration and benchmarks (a fixed seed gives the same crowd).

Each volunteer has a confusion matrix: either drawn from ``skill_pool`` (rows of per-class
accuracies, e.g. measured per worker on the real crowds by ``measured_skills``) or with a
Beta-distributed accuracy. Answers arrive in a random order.

Also the answer model of the demo's simulated crowd (``projects.demo_crowd``), usable by any
simulation: a volunteer with confusion matrix ``C`` (rows: true class, columns: answer) answers a
subject of true class ``t`` right with probability ``sigmoid(logit(C[t, t]) + shift)``, where
``shift`` is the subject's difficulty (``difficulty_shifts``: 0 for a subject of average difficulty,
negative for a harder one), and wrongly in proportion to the off-diagonal entries of row ``t``.
With ``shift = 0`` the answers follow ``C`` exactly. For two classes, with ``C[t, t] = q`` (a
galaxy's real vote share) and ``shift = d`` (a volunteer's logit offset), this is
``bench/machine_loop.py``'s ``sigmoid(logit(q) + d)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SimulatedCrowd:
    subjects: np.ndarray  # int64, arrival order
    workers: np.ndarray  # int64
    answers: np.ndarray  # int64
    truth: dict[int, int]
    gold: dict[int, int]
    confusions: np.ndarray  # (W, K, K)


def measured_skills(subjects: np.ndarray, workers: np.ndarray, answers: np.ndarray,
                    truth: dict, n_classes: int, min_answers: int = 10) -> np.ndarray:
    """Per-worker per-class accuracy (recall of each true class) on a crowd with truth.

    Returns (n_workers_kept, K); workers with fewer than ``min_answers`` on truth subjects
    or with a class never seen are left out.
    """
    rows = []
    t = np.array([truth.get(s, -1) for s in subjects.tolist()])
    for w in np.unique(workers):
        sel = (workers == w) & (t >= 0)
        if sel.sum() < min_answers:
            continue
        acc = []
        for c in range(n_classes):
            cls = sel & (t == c)
            if cls.sum() == 0:
                break
            acc.append(float((answers[cls] == c).mean()))
        else:
            rows.append(acc)
    return np.array(rows)


def simulate_crowd(
    n_subjects: int,
    n_workers: int,
    answers_per_subject: int,
    n_classes: int = 2,
    *,
    class_prior: np.ndarray | None = None,
    skill_pool: np.ndarray | None = None,
    mean_accuracy: float = 0.75,
    concentration: float = 8.0,
    gold_fraction: float = 0.0,
    seed: int = 0,
) -> SimulatedCrowd:
    """A crowd where each subject gets ``answers_per_subject`` answers from random workers."""
    rng = np.random.default_rng(seed)
    k = n_classes
    prior = np.full(k, 1.0 / k) if class_prior is None else np.asarray(class_prior, float)
    truth = rng.choice(k, size=n_subjects, p=prior / prior.sum())
    if skill_pool is not None:
        recall = skill_pool[rng.integers(0, skill_pool.shape[0], size=n_workers)]
    else:
        acc = rng.beta(mean_accuracy * concentration, (1 - mean_accuracy) * concentration,
                       size=n_workers)
        recall = np.repeat(acc[:, None], k, axis=1)
    recall = np.clip(recall, 1e-3, 1 - 1e-3)
    conf = np.repeat(((1 - recall) / (k - 1))[:, :, None], k, axis=2)
    idx = np.arange(k)
    conf[:, idx, idx] = recall
    n = n_subjects * answers_per_subject
    subjects = np.repeat(np.arange(n_subjects), answers_per_subject)
    workers = rng.integers(0, n_workers, size=n)
    cum = np.cumsum(conf[workers, truth[subjects]], axis=1)
    answers = (rng.random(n)[:, None] > cum).sum(axis=1)
    answers = np.minimum(answers, k - 1)
    order = rng.permutation(n)
    subjects, workers, answers = subjects[order], workers[order], answers[order]
    truth_dict = dict(enumerate(truth.tolist()))
    n_gold = int(round(gold_fraction * n_subjects))
    gold_ids = rng.choice(n_subjects, size=n_gold, replace=False).tolist()
    gold = {s: truth_dict[s] for s in gold_ids}
    return SimulatedCrowd(subjects.astype(np.int64), workers.astype(np.int64),
                          answers.astype(np.int64), truth_dict, gold, conf)


def logit(p: np.ndarray | float) -> np.ndarray:
    """log(p / (1 − p)), elementwise."""
    p = np.asarray(p, dtype=float)
    return np.log(p) - np.log1p(-p)


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    """1 / (1 + exp(−x)), elementwise."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def confusions_from_counts(counts: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """Row-normalised confusion matrices (W, K, K) from answer counts [worker][true class][answer],
    with ``smoothing`` added to every cell (a worker never seen on a class answers it at random)."""
    c = np.asarray(counts, dtype=float) + smoothing
    return c / c.sum(axis=-1, keepdims=True)


def restrict_confusions(confusions: np.ndarray, classes: list[int]) -> np.ndarray:
    """The confusion matrices between ``classes`` only (rows and columns kept, rows renormalised):
    a question with fewer answers given the skills measured on one with more."""
    idx = np.asarray(classes)
    c = np.asarray(confusions, dtype=float)[..., idx[:, None], idx[None, :]]
    return c / c.sum(axis=-1, keepdims=True)


def difficulty_shifts(drawn_shares: np.ndarray, all_shares: np.ndarray) -> np.ndarray:
    """The difficulty shift of subjects given a real subject's vote share for its majority each
    (``drawn_shares``): logit(share) − mean logit over ``all_shares`` (their class's real subjects).
    An average subject gets 0; one whose real counterpart split 21 to 19 a large negative shift."""
    eps = 1e-6
    drawn = np.clip(np.asarray(drawn_shares, dtype=float), eps, 1 - eps)
    pool = np.clip(np.asarray(all_shares, dtype=float), eps, 1 - eps)
    return logit(drawn) - float(np.mean(logit(pool)))


def answer_probabilities(confusion: np.ndarray, truth: np.ndarray | int, shift: np.ndarray | float = 0.0) -> np.ndarray:
    """P(answer) of volunteers with ``confusion`` (K, K) or (n, K, K) on subjects of true class
    ``truth`` (n,) and difficulty ``shift`` (n,): shape (n, K), or (K,) for one subject."""
    conf = np.asarray(confusion, dtype=float)
    t = np.atleast_1d(np.asarray(truth, dtype=np.int64))
    n = t.shape[0]
    conf = np.broadcast_to(conf, (n, *conf.shape[-2:])) if conf.ndim == 2 else conf
    rows = conf[np.arange(n), t]  # (n, K)
    k = rows.shape[1]
    right = np.clip(rows[np.arange(n), t], 1e-9, 1 - 1e-9)
    p_right = sigmoid(logit(right) + np.broadcast_to(np.asarray(shift, dtype=float), (n,)))
    wrong = rows.copy()
    wrong[np.arange(n), t] = 0.0
    total = wrong.sum(axis=1, keepdims=True)
    # A row with no mass off the diagonal spreads the errors evenly.
    even = np.where(np.arange(k)[None, :] == t[:, None], 0.0, 1.0 / max(k - 1, 1))
    wrong = np.where(total > 0, wrong / np.where(total > 0, total, 1.0), even)
    probs = wrong * (1 - p_right)[:, None]
    probs[np.arange(n), t] = p_right
    return probs[0] if np.ndim(truth) == 0 else probs


def draw_answers(rng: np.random.Generator, confusion: np.ndarray, truth: np.ndarray | int,
                 shift: np.ndarray | float = 0.0) -> np.ndarray:
    """Answers drawn from ``answer_probabilities`` (one per subject; an int for one subject)."""
    probs = np.atleast_2d(answer_probabilities(confusion, truth, shift))
    cum = np.cumsum(probs, axis=1)
    answers = np.minimum((rng.random(probs.shape[0])[:, None] > cum).sum(axis=1), probs.shape[1] - 1)
    return int(answers[0]) if np.ndim(truth) == 0 else answers
