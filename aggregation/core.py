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


def trust(evidence: np.ndarray | float, half_trust: float) -> np.ndarray:
    """How far a volunteer is granted the crowd's skill before its own record shows it: evidence /
    (evidence + ``half_trust``), where evidence is the answers' worth the engine has learned its
    skill from (the sum of its soft counts: gold answers, consensus credit, refits). 0 for a
    newcomer, 1/2 at ``half_trust`` answers' worth, towards 1 with a long record; always 1 when
    ``half_trust`` is 0 (every volunteer granted it from its first answer, the engine before issue
    25). See ``trusted_prior``."""
    evidence = np.maximum(np.asarray(evidence, dtype=float), 0.0)
    if half_trust <= 0:
        return np.ones_like(evidence)
    return evidence / (evidence + half_trust)


def established(evidence: np.ndarray | float, half_trust: float) -> np.ndarray:
    """How much one answer of a volunteer counts towards the retirement guard, "this many
    classifications from volunteers of established skill": evidence / ``half_trust``, at most 1 (a
    volunteer is established once the engine holds ``half_trust`` answers' worth of evidence of its
    skill; a newcomer counts 0). Always 1 when ``half_trust`` is 0 (the guard is a plain count)."""
    evidence = np.maximum(np.asarray(evidence, dtype=float), 0.0)
    if half_trust <= 0:
        return np.ones_like(evidence)
    return np.minimum(evidence / half_trust, 1.0)


def trusted_prior(prior: np.ndarray, tau: np.ndarray | float) -> np.ndarray:
    """The Dirichlet prior of a volunteer trusted ``tau`` (``trust``): the crowd's ``prior`` (K×K
    pseudo-counts) as far as it is trusted, otherwise an uninformative prior of the same strength
    (each row spread evenly over the answers: SWAP's PL = PD = 0.5). Why: the crowd's prior says a
    newcomer answers like the average volunteer, but an identity costs nothing, so that is what a
    Sybil would be granted; an identity with no record now says nothing of the truth (its answers
    move no posterior) until its own counts outweigh the uninformative prior, as SWAP's new agents.
    ``tau`` broadcasts over the leading axes: a stack of volunteers gets a stack of priors."""
    tau = np.asarray(tau, dtype=float)[..., None, None]
    even = prior.sum(axis=-1, keepdims=True) / prior.shape[-1]
    return tau * prior + (1.0 - tau) * even


def confusion_from_counts(
    counts: np.ndarray, prior: np.ndarray, clip: tuple[float, float] = DEFAULT_CLIP,
    half_trust: float = 0.0,
) -> np.ndarray:
    """Posterior-mean confusion matrix P(answer=j | truth=i) from (soft) counts.

    ``counts[..., i, j]`` is the evidence that the volunteer answered j when the truth was
    i; ``prior`` are the Dirichlet pseudo-counts. Entries are clipped to ``clip`` (SWAP's
    [0.01, 0.99]) and rows renormalised (a no-op for two classes, where clipping keeps the
    row sum at 1). With ``half_trust`` > 0 each volunteer's prior is ``trusted_prior``, trusted as
    its evidence (the sum of its counts) says.
    """
    if half_trust > 0:
        prior = trusted_prior(prior, trust(counts.sum(axis=(-2, -1)), half_trust))
    total = counts + prior
    conf = total / total.sum(axis=-1, keepdims=True)
    if clip is not None:
        conf = np.clip(conf, clip[0], clip[1])
        if conf.shape[-1] > 2:
            conf = conf / conf.sum(axis=-1, keepdims=True)
    return conf


def log_confusion(
    counts: np.ndarray, prior: np.ndarray, clip: tuple[float, float] = DEFAULT_CLIP,
    half_trust: float = 0.0,
) -> np.ndarray:
    """``log(confusion_from_counts(...))``: what a posterior update adds."""
    return np.log(confusion_from_counts(counts, prior, clip, half_trust))


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
