"""Vectorised numpy kernels: the Dawid–Skene EM refit and the chunked online replay.

Both work on integer-coded answer arrays (subject, worker, answer) and on the estimator's
plain arrays; ``ConsensusEstimator`` owns the bookkeeping and calls these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .core import confusion_from_counts, established, normalise_log, trust
from .retirement import (
    FirstKAgree,
    MaxClassifications,
    MinClassifications,
    PosteriorAbove,
    RetirementPolicy,
    RiskBelow,
)


@dataclass
class EMResult:
    log_post: np.ndarray  # (S, K)
    counts: np.ndarray  # (W, K, K) expected counts truth × answer
    class_prior: np.ndarray  # (K,)
    n_iter: int
    converged: bool
    established: np.ndarray | None = None  # (S,) its counted answers' weight in the retirement guard


def _incidence(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    data = np.ones(rows.shape[0])
    return sp.csr_matrix((data, (rows, cols)), shape=shape)


def dawid_skene_em(
    subjects: np.ndarray,
    workers: np.ndarray,
    answers: np.ndarray,
    counted: np.ndarray,
    *,
    n_subjects: int,
    n_workers: int,
    n_classes: int,
    skill_prior: np.ndarray,
    class_prior: np.ndarray,
    gold: np.ndarray,
    clip: tuple[float, float] | None,
    init_counts: np.ndarray | None = None,
    init_log_prior: np.ndarray | None = None,
    learn_class_prior: bool = True,
    class_prior_strength: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-6,
    leave_one_out: bool = False,
    subject_weights: np.ndarray | None = None,
    half_trust: float = 0.0,
) -> EMResult:
    """Maximum-a-posteriori Dawid–Skene by EM, with Dirichlet priors on every confusion row.

    Posteriors come from counted answers only; skills learn from counted answers and from
    every answer on a gold subject (``gold[s] >= 0``), whose truth replaces the posterior.
    Warm start: with ``init_counts`` the first step is an E-step from those skills;
    without, EM starts from vote fractions (as Dawid and Skene did). Each iteration is two
    sparse products, so a million answers take a few tens of milliseconds per iteration.

    ``subject_weights`` (S,): how much each subject's answers teach the skills and the class prior
    (default 1): a question reached on a subject that probably does not have it (a galaxy's spiral
    arms when it is surely smooth) has answers that say nothing of the volunteers' skill on it.

    ``leave_one_out``: each E-step weighs an answer with its agent's skill learned from the
    *other* subjects (the agent's counts less this subject's own weight), which is that
    skill integrated over its Dirichlet posterior given everything else. Plain EM lets a
    subject's answers vouch for themselves (they sit in the counts that weigh them), which
    makes posteriors overconfident where agents have few answers or skills rest on few
    subjects; a retirement decision needs the honest posterior. One per-answer pass
    instead of a sparse product per iteration.

    ``half_trust``: each answer is weighed as its agent is trusted (``core.trust`` of the agent's
    evidence, its soft counts; with ``leave_one_out``, less this subject's own), so an agent whose
    only answer is on this subject moves nothing. ``EMResult.established`` sums, per subject, its
    counted answers' ``core.established`` weights from the same evidence (what the retirement guard
    reads).
    """
    k = n_classes
    pair = workers.astype(np.int64) * k + answers
    gold_answer = gold[subjects] >= 0
    e_mask = counted
    m_mask = counted | gold_answer
    # A[s, w*K + a] = number of counted answers a by w on s; B the same over the M-step answers.
    a_e = _incidence(subjects[e_mask], pair[e_mask], (n_subjects, n_workers * k))
    a_m = a_e if m_mask.sum() == e_mask.sum() else _incidence(
        subjects[m_mask], pair[m_mask], (n_subjects, n_workers * k))
    a_m_t = a_m.T.tocsr()
    is_gold = gold >= 0
    gold_onehot = np.zeros((int(is_gold.sum()), k))
    gold_onehot[np.arange(gold_onehot.shape[0]), gold[is_gold]] = 1.0
    log_prior = np.log(class_prior) if init_log_prior is None else init_log_prior.copy()

    if leave_one_out:
        e_subjects, e_workers = subjects[e_mask], workers[e_mask]
        e_pair = pair[e_mask]
        by_answer = [np.flatnonzero(answers[e_mask] == j) for j in range(k)]
        # S[s, r] = 1 when counted answer r is on subject s: sums per-answer terms per subject.
        e_sum = _incidence(e_subjects, np.arange(e_subjects.shape[0]),
                           (n_subjects, e_subjects.shape[0]))

    def e_step(counts: np.ndarray, log_prior: np.ndarray, weights: np.ndarray | None = None,
               trust_scale: float = half_trust) -> tuple[np.ndarray, np.ndarray]:
        """The posteriors, and per subject its counted answers' weight in the retirement guard."""
        if not leave_one_out or weights is None:
            conf = confusion_from_counts(counts, skill_prior, clip, trust_scale)  # (W, K_true, K_answer)
            lc = np.log(conf).transpose(0, 2, 1).reshape(n_workers * k, k)  # row w*K+a
            standing = np.repeat(established(counts.sum(axis=(1, 2)), trust_scale), k)  # per column w*K+a
            return normalise_log(log_prior + a_e @ lc), np.asarray(a_e @ standing).ravel()
        # Each answer weighed with its agent's skill learned from the other subjects: the
        # predictive of a skill integrated over its Dirichlet posterior given everything
        # but this subject (a subject's own answers never vouch for themselves).
        # This is confusion_from_counts(counts[w] - own, ...)[:, a] without the K×K per answer.
        own = weights[e_subjects]  # (n, K_true)
        # The agent's evidence less this subject's own: what its trust and its standing in the guard
        # are, so that a one-answer identity's answer moves nothing and counts nothing.
        record = counts.sum(axis=(1, 2))[e_workers] - own.sum(axis=1)
        if half_trust > 0:
            # Each answer's prior is core.trusted_prior of its agent's record without this subject:
            # the crowd's pseudo-counts as far as trusted, else the same strength spread evenly.
            tau = trust(record, half_trust)[:, None]  # (n, 1)
            even = (1.0 - tau) * (skill_prior.sum(axis=1) / k)[None, :]  # (n, K_true)
            column_prior = [tau * skill_prior[:, j][None, :] + even for j in range(k)]
            by_pair = counts.transpose(0, 2, 1).reshape(n_workers * k, k)  # row w*K+a, counts only
            row_total = (counts.sum(axis=2) + skill_prior.sum(axis=1))[e_workers] - own
            picked = by_pair[e_pair] - own
            for j, rows in enumerate(by_answer):
                picked[rows] += column_prior[j][rows]
            picked /= row_total
        else:
            evidence = counts + skill_prior  # (W, K_true, K_answer)
            by_pair = evidence.transpose(0, 2, 1).reshape(n_workers * k, k)  # row w*K+a
            row_total = evidence.sum(axis=2)[e_workers] - own
            picked = (by_pair[e_pair] - own) / row_total
        if clip is not None:
            np.clip(picked, clip[0], clip[1], out=picked)
            if k > 2:  # clipped rows are renormalised: every entry of each row is needed
                mass = np.zeros_like(own)
                for j, rows in enumerate(by_answer):
                    col = by_pair[e_workers * k + j]
                    col = (col + column_prior[j]) / row_total if half_trust > 0 else col / row_total
                    col[rows] = picked[rows]
                    mass += np.clip(col, clip[0], clip[1], out=col)
                picked /= mass
        # log P(this answer | truth) with this subject left out, summed per subject.
        return (normalise_log(log_prior + e_sum @ np.log(picked)),
                np.asarray(e_sum @ established(record, half_trust)).ravel())

    def m_weights(post: np.ndarray) -> np.ndarray:
        weights = post.copy()
        weights[is_gold] = gold_onehot
        if subject_weights is not None:
            weights *= subject_weights[:, None]
        return weights

    def m_step(post: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        weights = m_weights(post)
        counts = (a_m_t @ weights).reshape(n_workers, k, k).transpose(0, 2, 1)
        if learn_class_prior:
            free = weights[~is_gold].sum(axis=0) if (~is_gold).any() else np.zeros(k)
            pseudo = class_prior_strength * class_prior * k
            # Identifiability (Dawid–Skene's own condition): a class is told apart by the answers
            # only if, when it is true, the crowd gives it more than any other answer. A class whose
            # pooled row says otherwise is not a class the answers name but a cluster of subjects the
            # model cannot otherwise explain (ambiguous ones, on a question with an answer that is
            # never true); it keeps only its pseudo-count share. See unidentified_classes.
            free = np.where(unidentified_classes(counts), 0.0, free)
            prior = free + pseudo
            new_log_prior = np.log(prior / prior.sum())
        else:
            new_log_prior = log_prior
        return np.ascontiguousarray(counts), new_log_prior

    if init_counts is None:
        votes = np.asarray(a_e @ _answer_indicator(n_workers, k)) + 1e-9
        post = votes / votes.sum(axis=1, keepdims=True)
        counts, log_prior = m_step(post)
        log_post, standing = e_step(counts, log_prior, m_weights(post))
    else:
        counts = init_counts
        # The warm start's weights are not known. Its skills are taken at face value, every agent
        # granted the crowd's prior (trust 0 would start EM from the class prior wherever agents
        # are new, where it can settle on a labelling with two answers swapped, as a cold start
        # from vote fractions does not); every step after this one weighs by trust.
        log_post, standing = e_step(counts, log_prior, trust_scale=0.0)
    converged = False
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        post = np.exp(log_post)
        counts, log_prior = m_step(post)
        new_log_post, standing = e_step(counts, log_prior, m_weights(post))
        delta = np.abs(np.exp(new_log_post) - post).max() if post.size else 0.0
        log_post = new_log_post
        if delta < tol:
            converged = True
            break
    return EMResult(log_post, counts, np.exp(log_prior), n_iter, converged, standing)


def unidentified_classes(counts: np.ndarray) -> np.ndarray:
    """(K,) True for each true class whose pooled confusion row (every agent's soft counts of
    truth × answer, summed) has its largest entry off the diagonal: when that class is true the
    crowd mostly answers something else, so the answers cannot name it."""
    pooled = counts.sum(axis=0)
    k = pooled.shape[0]
    return pooled.argmax(axis=1) != np.arange(k)


def leading_runs(subjects: np.ndarray, answers: np.ndarray,
                 n_subjects: int) -> tuple[np.ndarray, np.ndarray]:
    """First answer of each subject and the length of its leading run of equal answers."""
    first = np.full(n_subjects, -1, dtype=np.int64)
    run = np.zeros(n_subjects, dtype=np.int64)
    if subjects.shape[0] == 0:
        return first, run
    order = np.argsort(subjects, kind="stable")
    s_sorted, a_sorted = subjects[order], answers[order]
    starts = _segment_starts(s_sorted)
    seg_id = np.cumsum(starts) - 1
    start_pos = np.flatnonzero(starts)
    seg_first = a_sorted[start_pos]
    broken = np.cumsum(a_sorted != seg_first[seg_id])
    broken_before = broken - broken[start_pos][seg_id]
    in_run = broken_before == 0
    first[s_sorted[start_pos]] = seg_first
    run[s_sorted[start_pos]] = np.bincount(seg_id, weights=in_run, minlength=start_pos.shape[0])
    return first, run


def _answer_indicator(n_workers: int, k: int) -> np.ndarray:
    """(W*K, K) matrix mapping column w*K + a to answer a (to count votes with A)."""
    return np.tile(np.eye(k), (n_workers, 1))


@dataclass
class ReplayState:
    """The arrays the chunked replay reads and updates in place (owned by the estimator)."""

    log_post: np.ndarray  # (S, K)
    n_counted: np.ndarray  # (S,) int
    gold: np.ndarray  # (S,) int, -1 when not gold
    retired: np.ndarray  # (S,) int: -1 active, else index of the firing rule
    first_answer: np.ndarray  # (S,) int, -1 before any counted answer
    agree_run: np.ndarray  # (S,) int: length of the leading run of equal counted answers
    counts: np.ndarray  # (W, K, K)
    n_gold: np.ndarray  # (W,) int
    established: np.ndarray | None = None  # (S,) float: the retirement guard's count (None: n_counted)


SUPPORTED_RULES = (PosteriorAbove, RiskBelow, MinClassifications, MaxClassifications,
                   FirstKAgree)


def policy_is_vectorisable(policy: RetirementPolicy | None) -> bool:
    return policy is None or all(isinstance(r, SUPPORTED_RULES) for r in policy.rules)


def _segment_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean mask of positions that start a run of equal keys."""
    start = np.ones(sorted_keys.shape[0], dtype=bool)
    start[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return start


def _segment_exclusive_cumsum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per-segment cumulative sum excluding the current row (rows sorted by segment)."""
    inclusive = np.cumsum(values, axis=0)
    exclusive = inclusive - values
    start_idx = np.flatnonzero(starts)
    seg_id = np.cumsum(starts) - 1
    return exclusive - exclusive[start_idx][seg_id]


def decide_many(policy: RetirementPolicy | None, log_post: np.ndarray, n_counted: np.ndarray,
                agree_run: np.ndarray, is_gold: np.ndarray,
                n_established: np.ndarray | None = None) -> np.ndarray:
    """``RetirementPolicy.decide`` for many subjects at once: the index of the rule that
    fires for each row, or -1. Only for policies made of the built-in rules. ``n_established``
    is what the ``min`` guard and ``max`` count (``SubjectSummary.n_established``; default
    ``n_counted``)."""
    fired = np.full(log_post.shape[0], -1)
    if policy is None or not policy.rules or log_post.shape[0] == 0:
        return fired
    k = log_post.shape[1]
    post = np.exp(log_post)
    top = post.max(axis=1)
    undecided = ~is_gold
    for r_i, rule in enumerate(policy.rules):
        if isinstance(rule, MinClassifications):
            undecided &= ~((n_counted if n_established is None else n_established) < rule.n)
            continue
        if isinstance(rule, PosteriorAbove):
            if rule.answer is None:
                hit = top > rule.threshold
            elif rule.answer < k:
                hit = post[:, rule.answer] > rule.threshold
            else:
                hit = np.zeros(post.shape[0], dtype=bool)
        elif isinstance(rule, RiskBelow):
            hit = (1.0 - top) < rule.threshold
        elif isinstance(rule, MaxClassifications):
            hit = (n_counted if n_established is None else n_established) >= rule.n
        elif isinstance(rule, FirstKAgree):
            hit = (agree_run >= rule.k) & (rule.k >= 1)
        else:
            raise TypeError(f"rule {rule!r} cannot be vectorised")
        now = hit & undecided
        fired[now] = r_i
        undecided &= ~now
    return fired


def replay_chunk(
    state: ReplayState,
    subjects: np.ndarray,
    workers: np.ndarray,
    answers: np.ndarray,
    counts_flag: np.ndarray,
    *,
    skill_prior: np.ndarray,
    clip: tuple[float, float] | None,
    policy: RetirementPolicy | None,
    learn: Sequence[str],
    consensus_min_confidence: float,
    rule_codes: np.ndarray | None = None,
    retired_credit: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    half_trust: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Feed one chunk of answers, in arrival order, with skills frozen at the chunk start.

    Exception: gold learning is exact, answer by answer (each answer is weighed with the
    volunteer's skill given every gold answer before it, through a per-volunteer running
    sum). Consensus and retirement credit is applied at the end of the chunk, so with
    chunks of one answer this is exactly ``ConsensusEstimator.add_answer``.

    ``retired_credit`` = (subjects, workers, answers) of all counted answers before the
    chunk, needed only for the "retired" learning mode; ``rule_codes[i]`` is the code stored
    in ``state.retired`` when rule i fires (default: i). ``half_trust``: each answer weighed as
    its volunteer is trusted (``core.trust``), and counted in ``state.established`` as
    ``core.established`` says, from the same evidence. Returns (counted mask of the chunk,
    subjects newly retired in it).
    """
    k = state.log_post.shape[1]
    n = subjects.shape[0]
    gold_s = state.gold[subjects]
    is_gold_ans = gold_s >= 0
    learn_gold = "gold" in learn
    # Skills in force for each answer.
    gold_inc = learn_gold and bool(is_gold_ans.any())
    if gold_inc:
        order_w = np.argsort(workers, kind="stable")
        onehot = np.zeros((n, k * k))
        gi = np.flatnonzero(is_gold_ans[order_w])
        onehot[gi, gold_s[order_w][gi] * k + answers[order_w][gi]] = 1.0
        before = _segment_exclusive_cumsum(onehot, _segment_starts(workers[order_w]))
        inc = np.empty_like(before)
        inc[order_w] = before
        cnt = state.counts[workers] + inc.reshape(n, k, k)
        lc_all = np.log(confusion_from_counts(cnt, skill_prior, clip, half_trust))
        contrib = lc_all[np.arange(n), :, answers]
        standing = established(cnt.sum(axis=(1, 2)), half_trust)
    else:
        lc = np.log(confusion_from_counts(state.counts, skill_prior, clip, half_trust))
        contrib = lc.transpose(0, 2, 1).reshape(-1, k)[workers.astype(np.int64) * k + answers]
        standing = established(state.counts.sum(axis=(1, 2)), half_trust)[workers]

    # Only answers on active subjects that the caller lets count can move a posterior.
    live = counts_flag & (state.retired[subjects] < 0)
    idx = np.flatnonzero(live)
    order = idx[np.argsort(subjects[idx], kind="stable")]
    s_sorted = subjects[order]
    a_sorted = answers[order]
    starts = _segment_starts(s_sorted)
    seg_id = np.cumsum(starts) - 1
    start_pos = np.flatnonzero(starts)
    c_sorted = contrib[order]
    cum_before = _segment_exclusive_cumsum(c_sorted, starts)
    base = state.log_post[s_sorted]
    log_before = normalise_log(base + cum_before)
    log_after = normalise_log(base + cum_before + c_sorted)
    rank = np.arange(order.shape[0]) - start_pos[seg_id]
    n_after = state.n_counted[s_sorted] + rank + 1
    if state.established is None:
        established_after = n_after.astype(float)
    else:
        st_sorted = standing[order]
        established_after = state.established[s_sorted] + _segment_exclusive_cumsum(st_sorted, starts) + st_sorted

    # First-K-agree bookkeeping: the leading run of equal answers of each subject.
    first = np.where(state.first_answer[s_sorted] >= 0, state.first_answer[s_sorted],
                     a_sorted[start_pos][seg_id])
    unequal = (a_sorted != first).astype(np.int64)
    unequal_so_far = np.cumsum(unequal) - (np.cumsum(unequal) - unequal)[start_pos][seg_id]
    n0 = state.n_counted[s_sorted]
    run0 = state.agree_run[s_sorted]
    extends = (run0 == n0) & (unequal_so_far == 0)
    lead = np.cumsum(extends) - (np.cumsum(extends) - extends)[start_pos][seg_id]
    agree_after = run0 + lead

    # Retirement, rule by rule in order, on every prefix.
    fired = decide_many(policy, log_after, n_after, agree_after, state.gold[s_sorted] >= 0, established_after)
    # The first firing answer retires its subject; later answers of it do not count.
    fired_any = fired >= 0
    fired_cum = np.cumsum(fired_any)
    fired_before = (fired_cum - fired_any) - (fired_cum - fired_any)[start_pos][seg_id]
    keep = fired_before == 0
    counted_mask = np.zeros(n, dtype=bool)
    counted_mask[order[keep]] = True

    # Last kept row of each segment holds the new state of that subject.
    kept_rows = np.flatnonzero(keep)
    last_of_seg = np.zeros(start_pos.shape[0], dtype=np.int64)
    last_of_seg[seg_id[kept_rows]] = kept_rows  # kept rows ascend, so the last write wins
    seg_subjects = s_sorted[start_pos]
    state.log_post[seg_subjects] = log_after[last_of_seg]
    state.n_counted[seg_subjects] = n_after[last_of_seg]
    if state.established is not None:
        state.established[seg_subjects] = established_after[last_of_seg]
    state.first_answer[seg_subjects] = first[start_pos]
    state.agree_run[seg_subjects] = agree_after[last_of_seg]
    retiring = fired_any & keep
    new_retired = s_sorted[retiring]
    if new_retired.shape[0]:
        codes = np.arange(fired.max() + 1) if rule_codes is None else rule_codes
        state.retired[new_retired] = codes[fired[retiring]]

    # Learning at the end of the chunk.
    if learn_gold and is_gold_ans.any():
        gw = workers[is_gold_ans]
        np.add.at(state.counts, (gw, gold_s[is_gold_ans], answers[is_gold_ans]), 1.0)
        np.add.at(state.n_gold, gw, 1)
    if "consensus" in learn:
        rows = np.flatnonzero(keep & (state.gold[s_sorted] < 0))
        post_before = np.exp(log_before[rows])
        if consensus_min_confidence > 0:
            rows = rows[post_before.max(axis=1) >= consensus_min_confidence]
            post_before = np.exp(log_before[rows])
        _credit(state.counts, workers[order[rows]], a_sorted[rows], post_before)
    if "retired" in learn and new_retired.shape[0]:
        newly = np.zeros(state.log_post.shape[0], dtype=bool)
        newly[new_retired] = True
        cs, cw, ca = retired_credit if retired_credit is not None else (
            np.empty(0, np.int64),) * 3
        chunk_s, chunk_w, chunk_a = subjects[counted_mask], workers[counted_mask], answers[
            counted_mask]
        credit_retired(state.counts, state.log_post, newly, np.concatenate([cs, chunk_s]),
                       np.concatenate([cw, chunk_w]), np.concatenate([ca, chunk_a]))
    return counted_mask, new_retired


def credit_retired(counts: np.ndarray, log_post: np.ndarray, newly: np.ndarray,
                   subjects: np.ndarray, workers: np.ndarray, answers: np.ndarray) -> None:
    """Credit every counted answer on the newly retired subjects with their posterior."""
    sel = newly[subjects]
    _credit(counts, workers[sel], answers[sel], np.exp(log_post[subjects[sel]]))


def _credit(counts: np.ndarray, workers: np.ndarray, answers: np.ndarray,
            weights: np.ndarray) -> None:
    """counts[w, :, a] += weight row, summed over answers (posterior-weighted evidence)."""
    if workers.shape[0] == 0:
        return
    n_workers, k, _ = counts.shape
    pair = workers.astype(np.int64) * k + answers
    add = np.empty((n_workers * k, k))
    for i in range(k):
        add[:, i] = np.bincount(pair, weights=weights[:, i], minlength=n_workers * k)
    counts += add.reshape(n_workers, k, k).transpose(0, 2, 1)

