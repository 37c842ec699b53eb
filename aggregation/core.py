"""Pure math of the engine on small arrays: confusion matrices, posteriors, skills.

Everything here is a function of its arguments only, so the platform can keep the state
(one subject's log posterior, one volunteer's counts) wherever it likes and call these on it.
Arrays broadcast: a function written for one K×K confusion matrix also takes a stack
(..., K, K), which is how the vectorised replay and the batch refit use them.
"""

from __future__ import annotations

import numpy as np

DEFAULT_CLIP = (0.01, 0.99)


def dirichlet_prior(
    n_classes: int, initial: float = 0.5, strength: float = 2.0, skepticism: float = 0.0
) -> np.ndarray:
    """Pseudo-counts of a volunteer's confusion matrix before any evidence.

    Row ``i`` (true class) holds ``(strength + skepticism)`` pseudo-answers: a fraction
    ``initial`` on the right answer and the rest spread evenly on the wrong ones. With
    two classes, ``initial=0.5`` and ``strength=2`` this is SWAP's prior: P("yes"|yes) and
    P("no"|no) both start at 0.5 and move like (correct + 1) / (seen + 2).
    """
    if n_classes < 2:
        raise ValueError("n_classes must be at least 2")
    total = strength + skepticism
    off = total * (1.0 - initial) / (n_classes - 1)
    prior = np.full((n_classes, n_classes), off)
    np.fill_diagonal(prior, total * initial)
    return prior


def confusion_from_counts(
    counts: np.ndarray, prior: np.ndarray, clip: tuple[float, float] = DEFAULT_CLIP
) -> np.ndarray:
    """Posterior-mean confusion matrix P(answer=j | truth=i) from (soft) counts.

    ``counts[..., i, j]`` is the evidence that the volunteer answered j when the truth was
    i; ``prior`` are the Dirichlet pseudo-counts. Entries are clipped to ``clip`` (SWAP's
    [0.01, 0.99]) and rows renormalised (a no-op for two classes, where clipping keeps the
    row sum at 1).
    """
    total = counts + prior
    conf = total / total.sum(axis=-1, keepdims=True)
    if clip is not None:
        conf = np.clip(conf, clip[0], clip[1])
        if conf.shape[-1] > 2:
            conf = conf / conf.sum(axis=-1, keepdims=True)
    return conf


def log_confusion(
    counts: np.ndarray, prior: np.ndarray, clip: tuple[float, float] = DEFAULT_CLIP
) -> np.ndarray:
    """``log(confusion_from_counts(...))``: what a posterior update adds."""
    return np.log(confusion_from_counts(counts, prior, clip))


def normalise_log(log_post: np.ndarray) -> np.ndarray:
    """Shift log probabilities (last axis) so that they sum to one (a stable log-sum-exp).

    Column by column: numpy's reductions along a short last axis are slow on tall arrays.
    """
    log_post = np.asarray(log_post, dtype=float)
    k = log_post.shape[-1]
    top = log_post[..., 0].copy()
    for j in range(1, k):
        np.maximum(top, log_post[..., j], out=top)
    shifted = log_post - top[..., None]
    total = np.exp(shifted[..., 0])
    for j in range(1, k):
        total += np.exp(shifted[..., j])
    return shifted - np.log(total)[..., None]


def update_log_posterior(
    log_post: np.ndarray, confusion_log_probs: np.ndarray, answer: int
) -> np.ndarray:
    """Bayes' rule for one answer: log p(truth) + log P(answer | truth), renormalised.

    ``confusion_log_probs`` is the volunteer's K×K log confusion matrix. O(K).
    """
    return normalise_log(log_post + confusion_log_probs[:, answer])


def swap_update(p: float, pl: float, pd: float, said_yes: bool) -> float:
    """SWAP's posterior that a subject is a "yes" after one answer (Marshall et al. 2016).

    After a "yes": PL·p / (PL·p + (1−PD)(1−p)); after a "no":
    (1−PL)·p / ((1−PL)·p + PD(1−p)). PL = P("yes"|yes), PD = P("no"|no).
    """
    if said_yes:
        return pl * p / (pl * p + (1.0 - pd) * (1.0 - p))
    return (1.0 - pl) * p / ((1.0 - pl) * p + pd * (1.0 - p))


def swap_skill(
    n_correct: float,
    n_seen: float,
    initial: float = 0.5,
    skepticism: float = 0.0,
    clip: tuple[float, float] = DEFAULT_CLIP,
) -> float:
    """SWAP's PL (or PD) from gold: (correct + initial·(2+s)) / (seen + 2 + s), clipped."""
    value = (n_correct + initial * (2.0 + skepticism)) / (n_seen + 2.0 + skepticism)
    return float(min(max(value, clip[0]), clip[1]))


def expected_risk(posterior: np.ndarray) -> np.ndarray:
    """Probability of being wrong if the subject were labelled with its most likely class.

    The 0/1-loss risk of Branson et al. 2017 ("Lean Crowdsourcing").
    """
    return 1.0 - np.max(posterior, axis=-1)


def information_bits(confusion: np.ndarray, class_prior: np.ndarray) -> np.ndarray:
    """Expected information per answer, in bits: the mutual information of truth and answer.

    SWAP's single-number skill (Marshall et al. 2016): 0 for a random or constant
    volunteer, 1 bit for a perfect one on a balanced binary question.
    """
    joint = class_prior[..., :, None] * confusion
    p_answer = joint.sum(axis=-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log2(confusion / p_answer), 0.0)
    return terms.sum(axis=(-2, -1))


def majority_posterior(n_classes: int, subjects: np.ndarray, answers: np.ndarray,
                       n_subjects: int) -> np.ndarray:
    """Vote fractions per subject (the usual starting point of Dawid–Skene's EM)."""
    votes = np.zeros((n_subjects, n_classes))
    np.add.at(votes, (subjects, answers), 1.0)
    votes += 1e-9
    return votes / votes.sum(axis=1, keepdims=True)
