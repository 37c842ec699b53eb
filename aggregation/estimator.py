"""The stateful estimator: online Bayesian consensus with a learned confusion matrix per agent.

``ConsensusEstimator`` composes the pure functions of ``core`` on per-subject state (a log
posterior, the counted answers, a retirement reason) and per-agent state (soft counts of
truth × answer). It is Dawid–Skene with Dirichlet priors, fed one answer at a time, with
skills learned from gold subjects, from the consensus, from retired subjects, and by a
periodic batch EM refit. Binary SWAP is the special case built by ``aggregation.swap``.

Every change goes through the classification log (answers, plus the refits and priors
at their positions in it), so ``replay_log`` rebuilds the same state exactly.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batch import (
    ReplayState,
    credit_retired,
    dawid_skene_em,
    decide_many,
    leading_runs,
    policy_is_vectorisable,
    replay_chunk,
)
from .core import (
    DEFAULT_CLIP,
    confusion_from_counts,
    dirichlet_prior,
    expected_risk,
    information_bits,
    normalise_log,
)
from .retirement import RetirementPolicy, SubjectSummary, policy_from_dict

LEARNING_MODES = ("gold", "consensus", "retired")
SUBJECT_COLUMNS = ("subject", "task", "question")
WORKER_COLUMNS = ("worker", "volunteer", "user")
ANSWER_COLUMNS = ("answer", "label", "value")


@dataclass(frozen=True)
class Decision:
    """What ``add_answer`` returns: the subject's posterior after the answer and its fate."""

    subject: Hashable
    posterior: np.ndarray
    retired: str | None
    newly_retired: bool
    counted: bool

    @property
    def label(self) -> int:
        return int(np.argmax(self.posterior))

    @property
    def expected_risk(self) -> float:
        return float(expected_risk(self.posterior))


def _json_id(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.str_):
        return str(value)
    return value


def answer_columns(table: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(subjects, workers, answers) from a DataFrame/dict of columns or (s, w, a) rows.

    Column names may be crowd-kit's (task, worker, label), the crowds' (question, worker,
    answer) or the platform's (subject, volunteer, answer).
    """
    if hasattr(table, "keys") and hasattr(table, "__getitem__"):
        keys = list(table.keys())

        def pick(names: Sequence[str]) -> np.ndarray:
            for name in names:
                if name in keys:
                    return np.asarray(table[name])
            raise KeyError(f"answers table needs one of the columns {list(names)}")

        return pick(SUBJECT_COLUMNS), pick(WORKER_COLUMNS), pick(ANSWER_COLUMNS).astype(
            np.int64)
    rows = list(table)
    if not rows:
        empty = np.empty(0, dtype=np.int64)
        return np.empty(0, dtype=object), np.empty(0, dtype=object), empty
    subjects = np.empty(len(rows), dtype=object)
    workers = np.empty(len(rows), dtype=object)
    subjects[:] = [r[0] for r in rows]
    workers[:] = [r[1] for r in rows]
    answers = np.fromiter((int(r[2]) for r in rows), dtype=np.int64, count=len(rows))
    return subjects, workers, answers


class _Index:
    """Arbitrary hashable ids ↔ dense integer indices, in order of first appearance."""

    def __init__(self) -> None:
        self.ids: list[Hashable] = []
        self.pos: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, key: Hashable) -> int:
        idx = self.pos.get(key)
        if idx is None:
            idx = len(self.ids)
            self.pos[key] = idx
            self.ids.append(key)
        return idx

    def get_many(self, keys: np.ndarray) -> np.ndarray:
        """Indices of many ids at once (new ones appended in order of first appearance)."""
        n = keys.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.int64)
        if keys.dtype.kind in "iu" and keys.min() >= 0 and keys.max() < 4 * n + 1024:
            # Small non-negative integers: a lookup table instead of a sort.
            first = np.full(int(keys.max()) + 1, n, dtype=np.int64)
            np.minimum.at(first, keys, np.arange(n))
            present = np.flatnonzero(first < n)
            uniq = present[np.argsort(first[present], kind="stable")]
            lookup = np.empty(first.shape[0], dtype=np.int64)
            lookup[uniq] = self._bulk(uniq.tolist())
            return lookup[keys]
        try:
            uniq, inverse = np.unique(keys, return_inverse=True)
        except TypeError:  # mixed types that numpy cannot sort
            return np.fromiter((self.get(k) for k in keys.tolist()), dtype=np.int64, count=n)
        inverse = inverse.reshape(-1)
        first = np.full(uniq.shape[0], n, dtype=np.int64)
        np.minimum.at(first, inverse, np.arange(n))
        order = np.argsort(first, kind="stable")
        mapped = np.empty(uniq.shape[0], dtype=np.int64)
        mapped[order] = self._bulk(uniq[order].tolist())
        return mapped[inverse]

    def _bulk(self, values: list) -> np.ndarray:
        """Indices of distinct ids given in order of first appearance."""
        pos = self.pos
        fresh = [v for v in values if v not in pos]
        base = len(self.ids)
        self.ids.extend(fresh)
        pos.update(zip(fresh, range(base, base + len(fresh)), strict=True))
        return np.fromiter((pos[v] for v in values), dtype=np.int64, count=len(values))


class ConsensusEstimator:
    """Online Dawid–Skene: per-subject log posteriors, per-agent Dirichlet confusion matrices.

    Parameters
    ----------
    n_classes: number of answers of the question (2 for yes/no).
    class_prior: prior probability of each true class (default uniform; GZX: 0.5).
    initial_skill, prior_strength, skepticism: each confusion row starts as
        ``prior_strength + skepticism`` pseudo-answers, ``initial_skill`` of them right
        (SWAP: 0.5, 2, 0; the default 0.7 says a newcomer is somewhat better than chance,
        which unsupervised learning needs to break the symmetry). Entries are clipped to ``clip`` (SWAP: [0.01, 0.99]).
    learn: any of "gold" (supervised, GZX), "consensus" (each answer credited with the
        subject's posterior before it, online), "retired" (all answers of a subject credited
        with its posterior when it retires). ``refit()`` is the batch EM on top.
    consensus_min_confidence: consensus credit only from subjects at least this sure (a
        subject's first answers, credited against a vague posterior, would drag every
        volunteer's skill towards chance).
    learn_class_prior: whether ``fit``/``refit`` re-estimate the class prior.
    learn_skill_prior: whether ``fit``/``refit`` move the mean of the skill prior (what a
        newcomer is assumed to be) to the crowd's pooled confusion matrix, keeping its
        strength: empirical Bayes, as in Lean Crowdsourcing. Its first value comes from
        ``initial_skill``.
    leave_one_out: whether ``refit`` weighs each subject's answers with skills learned from
        the other subjects only (a subject's answers never vouch for themselves, as online;
        see ``batch.dawid_skene_em``), so that the posteriors the policy then reads are
        honest. ``fit`` (offline, no retirement) stays plain MAP EM.
    policy: the ``RetirementPolicy`` (None: never retire).
    """

    def __init__(
        self,
        n_classes: int = 2,
        *,
        class_prior: Sequence[float] | None = None,
        initial_skill: float = 0.7,
        prior_strength: float = 2.0,
        skepticism: float = 0.0,
        clip: tuple[float, float] | None = DEFAULT_CLIP,
        learn: Sequence[str] = ("gold", "consensus"),
        consensus_min_confidence: float = 0.9,
        learn_class_prior: bool = False,
        learn_skill_prior: bool = True,
        leave_one_out: bool = True,
        policy: RetirementPolicy | None = None,
        max_iter: int = 100,
        tol: float = 1e-6,
    ) -> None:
        unknown = set(learn) - set(LEARNING_MODES)
        if unknown:
            raise ValueError(f"unknown learning modes {sorted(unknown)}; use {LEARNING_MODES}")
        self.n_classes = int(n_classes)
        prior = np.full(n_classes, 1.0 / n_classes) if class_prior is None else np.asarray(
            class_prior, dtype=float)
        if prior.shape != (n_classes,) or np.any(prior <= 0):
            raise ValueError("class_prior needs one positive probability per class")
        self.class_prior = prior / prior.sum()
        self.initial_skill = float(initial_skill)
        self.prior_strength = float(prior_strength)
        self.skepticism = float(skepticism)
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))
        self.learn = tuple(m for m in LEARNING_MODES if m in learn)
        self.consensus_min_confidence = float(consensus_min_confidence)
        self.learn_class_prior = bool(learn_class_prior)
        self.learn_skill_prior = bool(learn_skill_prior)
        self.leave_one_out = bool(leave_one_out)
        self.policy = policy
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        k = self.n_classes
        self.skill_prior = dirichlet_prior(k, self.initial_skill, self.prior_strength,
                                           self.skepticism)
        self._log_class_prior = np.log(self.class_prior)
        self._subjects = _Index()
        self._workers = _Index()
        self._log_post = np.empty((0, k))
        self._n_counted = np.empty(0, dtype=np.int64)
        self._gold = np.empty(0, dtype=np.int64)
        self._retired = np.empty(0, dtype=np.int64)  # -1 or index into _reasons
        self._first = np.empty(0, dtype=np.int64)
        self._agree = np.empty(0, dtype=np.int64)
        self._counts = np.empty((0, k, k))
        self._n_answers = np.empty(0, dtype=np.int64)
        self._n_gold = np.empty(0, dtype=np.int64)
        self._reasons: list[str] = []
        self._agree_stale = False
        self._lists: list[tuple[list[int], list[int]]] | None = []  # None: rebuild from log
        self._log_chunks: list[tuple[np.ndarray, ...]] = []
        self._log_pending: tuple[list[int], ...] = ([], [], [], [], [])
        self._events: list[dict] = []

    def _config(self) -> dict:
        return {
            "n_classes": self.n_classes,
            "class_prior": self.class_prior.tolist(),
            "initial_skill": self.initial_skill,
            "prior_strength": self.prior_strength,
            "skepticism": self.skepticism,
            "clip": None if self.clip is None else list(self.clip),
            "learn": list(self.learn),
            "consensus_min_confidence": self.consensus_min_confidence,
            "learn_class_prior": self.learn_class_prior,
            "learn_skill_prior": self.learn_skill_prior,
            "leave_one_out": self.leave_one_out,
            "policy": None if self.policy is None else self.policy.to_dict(),
            "max_iter": self.max_iter,
            "tol": self.tol,
        }

    @classmethod
    def _from_config(cls, config: dict) -> ConsensusEstimator:
        cfg = dict(config)
        policy = cfg.pop("policy", None)
        clip = cfg.pop("clip", DEFAULT_CLIP)
        return cls(**cfg, clip=None if clip is None else tuple(clip),
                   policy=None if policy is None else policy_from_dict(policy))

    def _grow_subjects(self, n: int) -> None:
        old = self._log_post.shape[0]
        if n <= old:
            return
        extra = n - old
        self._log_post = np.concatenate(
            [self._log_post, np.tile(self._log_class_prior, (extra, 1))])
        self._n_counted = np.concatenate([self._n_counted, np.zeros(extra, np.int64)])
        self._gold = np.concatenate([self._gold, np.full(extra, -1, np.int64)])
        self._retired = np.concatenate([self._retired, np.full(extra, -1, np.int64)])
        self._first = np.concatenate([self._first, np.full(extra, -1, np.int64)])
        self._agree = np.concatenate([self._agree, np.zeros(extra, np.int64)])
        if self._lists is not None:
            self._lists.extend(([], []) for _ in range(extra))

    def _grow_workers(self, n: int) -> None:
        old = self._counts.shape[0]
        if n <= old:
            return
        extra = n - old
        k = self.n_classes
        self._counts = np.concatenate([self._counts, np.zeros((extra, k, k))])
        self._n_answers = np.concatenate([self._n_answers, np.zeros(extra, np.int64)])
        self._n_gold = np.concatenate([self._n_gold, np.zeros(extra, np.int64)])

    def _subject(self, subject: Hashable) -> int:
        s = self._subjects.get(_json_id(subject))
        if s >= self._log_post.shape[0]:
            self._grow_subjects(max(s + 1, 2 * self._log_post.shape[0]))
        return s

    def _worker(self, worker: Hashable) -> int:
        w = self._workers.get(_json_id(worker))
        if w >= self._counts.shape[0]:
            self._grow_workers(max(w + 1, 2 * self._counts.shape[0]))
        return w

    def _reason_code(self, reason: str) -> int:
        if reason not in self._reasons:
            self._reasons.append(reason)
        return self._reasons.index(reason)

    def _ensure_agree(self) -> None:
        """Recompute first answers and leading agreeing runs from the log after ``fit``."""
        if self._agree_stale:
            s, _, a, c, _ = self._log_arrays()
            self._first, self._agree = leading_runs(s[c], a[c], self._log_post.shape[0])
            self._agree_stale = False

    def _flush_log(self) -> None:
        if self._log_pending[0]:
            pend = self._log_pending
            self._log_chunks.append((np.array(pend[0], np.int64), np.array(pend[1], np.int64),
                                     np.array(pend[2], np.int64), np.array(pend[3], bool),
                                     np.array(pend[4], np.int64)))
            self._log_pending = ([], [], [], [], [])

    def _log_arrays(self) -> tuple[np.ndarray, ...]:
        """The classification log as arrays: subject, worker, answer, counted, gold given."""
        self._flush_log()
        if not self._log_chunks:
            return (np.empty(0, np.int64),) * 3 + (np.empty(0, bool), np.empty(0, np.int64))
        if len(self._log_chunks) > 1:
            self._log_chunks = [tuple(np.concatenate(parts)
                                      for parts in zip(*self._log_chunks, strict=True))]
        return self._log_chunks[0]

    @property
    def n_logged(self) -> int:
        return sum(c[0].shape[0] for c in self._log_chunks) + len(self._log_pending[0])

    def _subject_lists(self) -> list[tuple[list[int], list[int]]]:
        """Counted (answers, worker indices) of each subject, rebuilt from the log if stale."""
        if self._lists is None:
            s, w, a, c, _ = self._log_arrays()
            n = self._log_post.shape[0]
            order = np.argsort(s[c], kind="stable")
            sc, wc, ac = s[c][order], w[c][order], a[c][order]
            bounds = np.searchsorted(sc, np.arange(n + 1))
            a_list, w_list = ac.tolist(), wc.tolist()
            self._lists = [(a_list[bounds[i]:bounds[i + 1]], w_list[bounds[i]:bounds[i + 1]])
                           for i in range(n)]
        return self._lists

    # ------------------------------------------------------------------ skills
    def _log_conf(self, w: int) -> np.ndarray:
        return np.log(confusion_from_counts(self._counts[w], self.skill_prior, self.clip))

    def confusion(self, worker: Hashable) -> np.ndarray:
        """The agent's confusion matrix P(answer=j | truth=i) (the prior for a stranger)."""
        w = self._workers.pos.get(_json_id(worker))
        counts = np.zeros((self.n_classes,) * 2) if w is None else self._counts[w]
        return confusion_from_counts(counts, self.skill_prior, self.clip)

    def skill_bits(self, worker: Hashable) -> float:
        """Expected information per answer, in bits (SWAP's single-number skill)."""
        return float(information_bits(self.confusion(worker), np.exp(self._log_class_prior)))

    def skills(self) -> dict[Hashable, float]:
        """Every agent's skill in bits."""
        conf = confusion_from_counts(self._counts[: len(self._workers)], self.skill_prior,
                                     self.clip)
        bits = information_bits(conf, np.exp(self._log_class_prior))
        return dict(zip(self._workers.ids, bits.tolist(), strict=True))

    # ------------------------------------------------------------------ online
    def set_gold(self, subject: Hashable, truth: int) -> None:
        """Mark a subject as gold standard with its true answer (never retires)."""
        s = self._subject(subject)
        self._set_gold(s, int(truth))
        self._events.append({"at": self.n_logged, "kind": "gold",
                             "subject": _json_id(subject), "truth": int(truth)})

    def _set_gold(self, s: int, truth: int) -> None:
        if not 0 <= truth < self.n_classes:
            raise ValueError(f"gold answer {truth} out of range 0..{self.n_classes - 1}")
        if self._gold[s] >= 0 and self._gold[s] != truth:
            raise ValueError(f"subject {self._subjects.ids[s]!r} is already gold with "
                             f"answer {self._gold[s]}")
        self._gold[s] = truth

    def add_prior(self, subject: Hashable, probabilities: Sequence[float]) -> np.ndarray:
        """Fold a machine prediction in as a prior: posterior ∝ posterior × p / class prior.

        The alternative is to add the machine's answer as an agent (``add_answer``), which
        also learns the machine's confusion matrix from gold and retired subjects.
        """
        probs = np.asarray(probabilities, dtype=float)
        if probs.shape != (self.n_classes,) or np.any(probs <= 0):
            raise ValueError("a prior needs one positive probability per class")
        s = self._subject(subject)
        self._events.append({"at": self.n_logged, "kind": "prior",
                             "subject": _json_id(subject), "probabilities": probs.tolist()})
        self._log_post[s] = normalise_log(
            self._log_post[s] + np.log(probs / probs.sum()) - self._log_class_prior)
        return np.exp(self._log_post[s])

    def summary(self, subject: Hashable) -> SubjectSummary:
        s = self._subjects.pos[_json_id(subject)]
        return self._summary(s)

    def _summary(self, s: int) -> SubjectSummary:
        post = np.exp(self._log_post[s])
        return SubjectSummary(n_counted=int(self._n_counted[s]), posterior=post,
                              expected_risk=float(expected_risk(post)),
                              answers=tuple(self._subject_lists()[s][0]),
                              is_gold=bool(self._gold[s] >= 0))

    def add_answer(
        self,
        subject: Hashable,
        worker: Hashable,
        answer: int,
        *,
        counts: bool = True,
        gold: int | None = None,
    ) -> Decision:
        """Take one classification, update the posterior and skills, decide retirement.

        ``counts=False`` (a repeat, a classification that should not count) and answers
        on retired subjects leave the subject untouched; gold answers teach skills whether
        or not they count. Skills are those in force before the answer. O(K²).
        """
        answer = int(answer)
        if not 0 <= answer < self.n_classes:
            raise ValueError(f"answer {answer} out of range 0..{self.n_classes - 1}")
        if gold is not None:  # validate before anything changes
            known = self._subjects.pos.get(_json_id(subject))
            if not 0 <= int(gold) < self.n_classes or (
                    known is not None and self._gold[known] not in (-1, int(gold))):
                raise ValueError(f"gold answer {gold} out of range or in conflict with the "
                                 f"subject's gold answer")
        self._ensure_agree()
        s = self._subject(subject)
        w = self._worker(worker)
        if gold is not None:
            self._set_gold(s, int(gold))
        lists = self._subject_lists()
        g = int(self._gold[s])
        counted = bool(counts) and self._retired[s] < 0
        pend = self._log_pending
        pend[0].append(s)
        pend[1].append(w)
        pend[2].append(answer)
        pend[3].append(counted)
        pend[4].append(-1 if gold is None else int(gold))
        self._n_answers[w] += 1
        lc = self._log_conf(w) if counted else None
        if g >= 0 and "gold" in self.learn:
            self._counts[w, g, answer] += 1.0
            self._n_gold[w] += 1
        newly = False
        if counted:
            before = self._log_post[s]
            if g < 0 and "consensus" in self.learn:
                post_before = np.exp(before)
                if post_before.max() >= self.consensus_min_confidence:
                    self._counts[w, :, answer] += post_before
            self._log_post[s] = normalise_log(before + lc[:, answer])
            self._n_counted[s] += 1
            if self._first[s] < 0:
                self._first[s] = answer
            if self._agree[s] == self._n_counted[s] - 1 and answer == self._first[s]:
                self._agree[s] += 1
            lists[s][0].append(answer)
            lists[s][1].append(w)
            if g < 0 and self.policy is not None:
                reason = self.policy.decide(self._summary(s))
                if reason is not None:
                    self._retire(s, reason)
                    newly = True
        retired = None if self._retired[s] < 0 else self._reasons[self._retired[s]]
        return Decision(subject, np.exp(self._log_post[s]), retired, newly, counted)

    def _retire(self, s: int, reason: str) -> None:
        self._retired[s] = self._reason_code(reason)
        if "retired" in self.learn:
            post = np.exp(self._log_post[s])
            answers, workers = self._subject_lists()[s]
            for a, w in zip(answers, workers, strict=True):
                self._counts[w, :, a] += post

    def partial_fit(self, table: Any, *, chunk_size: int | None = None,
                    drop_retired: bool = False) -> ConsensusEstimator:
        """Feed many answers in order (scikit-learn style: returns ``self``).

        ``counted_`` is then the mask of the answers that counted (moved a posterior).

        ``chunk_size=None`` calls ``add_answer`` for each. With a chunk size the answers go
        through the vectorised replay: the same posteriors and retirements, except that
        consensus and retirement credit reach the skills at the end of each chunk (gold
        learning stays exact). ``drop_retired`` leaves answers on retired subjects out of
        the log altogether, as a live project would never have asked for them.
        """
        subjects, workers, answers = answer_columns(table)
        if answers.shape[0] and (answers.min() < 0 or answers.max() >= self.n_classes):
            raise ValueError(f"answers must lie in 0..{self.n_classes - 1}")
        if chunk_size is None or not policy_is_vectorisable(self.policy):
            mask = np.zeros(answers.shape[0], dtype=bool)
            for i, (subj, work, ans) in enumerate(zip(subjects.tolist(), workers.tolist(),
                                                      answers.tolist(), strict=True)):
                if drop_retired:
                    s_idx = self._subjects.pos.get(_json_id(subj))
                    if s_idx is not None and self._retired[s_idx] >= 0:
                        continue
                mask[i] = self.add_answer(subj, work, ans).counted
            self.counted_ = mask
            return self
        s_idx = self._subjects.get_many(subjects)
        w_idx = self._workers.get_many(workers)
        self._ensure_agree()
        self._lists = None  # rebuilt from the log when needed
        self._grow_subjects(len(self._subjects))
        self._grow_workers(len(self._workers))
        self.counted_ = self._replay_arrays(s_idx, w_idx, answers,
                                            np.ones(answers.shape[0], bool),
                                            chunk_size=chunk_size, drop_retired=drop_retired)
        return self

    def _replay_arrays(self, s_idx: np.ndarray, w_idx: np.ndarray, answers: np.ndarray,
                       counts_flag: np.ndarray, *, chunk_size: int,
                       drop_retired: bool) -> np.ndarray:
        self._ensure_agree()
        state = ReplayState(self._log_post, self._n_counted, self._gold, self._retired,
                            self._first, self._agree, self._counts, self._n_gold)
        rule_codes = None
        if self.policy is not None:
            rule_codes = np.array([self._reason_code(r.reason) for r in self.policy.rules],
                                  dtype=np.int64)
        counted_all = np.zeros(answers.shape[0], dtype=bool)
        for start in range(0, answers.shape[0], max(1, chunk_size)):
            end = min(start + chunk_size, answers.shape[0])
            cs, cw, ca, cf = s_idx[start:end], w_idx[start:end], answers[start:end], \
                counts_flag[start:end]
            credit = None
            if "retired" in self.learn:
                ls, lw, la, lc, _ = self._log_arrays()
                credit = (ls[lc], lw[lc], la[lc])
            counted, _ = replay_chunk(
                state, cs, cw, ca, cf, skill_prior=self.skill_prior, clip=self.clip,
                policy=self.policy, learn=self.learn,
                consensus_min_confidence=self.consensus_min_confidence,
                rule_codes=rule_codes, retired_credit=credit)
            counted_all[start:end] = counted
            keep = counted | (self._gold[cs] >= 0) if drop_retired else np.ones_like(counted)
            np.add.at(self._n_answers, cw[keep], 1)
            self._flush_log()
            self._log_chunks.append((cs[keep], cw[keep], ca[keep], counted[keep],
                                     np.full(int(keep.sum()), -1, np.int64)))
        self._lists = None
        return counted_all

    # ------------------------------------------------------------------ batch
    def fit(self, table: Any, gold: dict[Hashable, int] | None = None) -> ConsensusEstimator:
        """Offline: forget everything, take all answers as counted, run Dawid–Skene EM."""
        self._reset()
        subjects, workers, answers = answer_columns(table)
        if answers.shape[0] and (answers.min() < 0 or answers.max() >= self.n_classes):
            raise ValueError(f"answers must lie in 0..{self.n_classes - 1}")
        s_idx = self._subjects.get_many(subjects)
        w_idx = self._workers.get_many(workers)
        self._lists = None  # rebuilt from the log when needed
        self._grow_subjects(len(self._subjects))
        self._grow_workers(len(self._workers))
        n = answers.shape[0]
        self._log_chunks = [(s_idx, w_idx, answers, np.ones(n, bool), np.full(n, -1, np.int64))]
        for subj, truth in (gold or {}).items():
            self.set_gold(subj, int(truth))
        self._lists = None
        self._n_counted[: len(self._subjects)] = np.bincount(s_idx, minlength=len(self._subjects))
        self._n_answers[: len(self._workers)] = np.bincount(w_idx, minlength=len(self._workers))
        self._agree_stale = True  # first answers and agreeing runs: computed when needed
        self._events.append({"at": n, "kind": "fit"})
        self._refit(warm=False)
        return self

    def fit_predict(self, table: Any, gold: dict[Hashable, int] | None = None,
                    ) -> dict[Hashable, int]:
        """``fit``, then each subject's most likely answer (crowd-kit's ``fit_predict``)."""
        self.fit(table, gold=gold)
        return dict(zip(self.subjects, self.predict().tolist(), strict=True))

    def refit(self, *, retire: bool = True, max_iter: int | None = None) -> list[Hashable]:
        """Batch EM over the whole log, warm-started from the current skills.

        Replaces every skill and posterior (retired subjects keep their reason); with
        ``retire`` the policy is then asked about the active subjects. Returns the subjects
        this refit retired. The platform's worker runs this on a schedule; ``max_iter``
        bounds its EM iterations (default: the estimator's ``max_iter``).
        """
        self._events.append({"at": self.n_logged, "kind": "refit", "retire": bool(retire),
                             "max_iter": max_iter})
        return self._refit(warm=True, retire=retire, max_iter=max_iter)

    def _refit(self, *, warm: bool, retire: bool = False,
               max_iter: int | None = None) -> list[Hashable]:
        s, w, a, c, _ = self._log_arrays()
        n_s, n_w = len(self._subjects), len(self._workers)
        result = dawid_skene_em(
            s, w, a, c, n_subjects=n_s, n_workers=n_w, n_classes=self.n_classes,
            skill_prior=self.skill_prior, class_prior=self.class_prior,
            gold=self._gold[:n_s], clip=self.clip,
            init_counts=self._counts[:n_w].copy() if warm else None,
            init_log_prior=self._log_class_prior if warm else np.log(self.class_prior),
            learn_class_prior=self.learn_class_prior,
            max_iter=self.max_iter if max_iter is None else int(max_iter), tol=self.tol,
            leave_one_out=self.leave_one_out and warm)
        self._counts[:n_w] = result.counts
        if self.learn_skill_prior and n_w:
            pooled = result.counts.sum(axis=0) + self.skill_prior
            pooled /= pooled.sum(axis=1, keepdims=True)
            self.skill_prior = (self.prior_strength + self.skepticism) * pooled
        self._log_post[:n_s] = result.log_post
        self._log_class_prior = np.log(result.class_prior)
        self._log_post[n_s:] = self._log_class_prior
        self.n_iter_ = result.n_iter
        newly: list[Hashable] = []
        if not retire or self.policy is None:
            return newly
        active = np.flatnonzero((self._retired[:n_s] < 0) & (self._gold[:n_s] < 0))
        if not policy_is_vectorisable(self.policy):
            for idx in active.tolist():
                reason = self.policy.decide(self._summary(idx))
                if reason is not None:
                    self._retire(idx, reason)
                    newly.append(self._subjects.ids[idx])
            return newly
        self._ensure_agree()
        fired = decide_many(self.policy, self._log_post[active], self._n_counted[active],
                            self._agree[active], self._gold[active] >= 0)
        hit = active[fired >= 0]
        codes = np.array([self._reason_code(r.reason) for r in self.policy.rules])
        self._retired[hit] = codes[fired[fired >= 0]]
        if "retired" in self.learn and hit.shape[0]:
            mask = np.zeros(self._log_post.shape[0], dtype=bool)
            mask[hit] = True
            credit_retired(self._counts, self._log_post, mask, s[c], w[c], a[c])
        return [self._subjects.ids[i] for i in hit.tolist()]

    # ------------------------------------------------------------------ results
    @property
    def subjects(self) -> list[Hashable]:
        return list(self._subjects.ids)

    @property
    def workers(self) -> list[Hashable]:
        return list(self._workers.ids)

    @property
    def class_prior_(self) -> np.ndarray:
        """The class prior in force: the one ``fit``/``refit`` estimated when ``learn_class_prior``."""
        return np.exp(self._log_class_prior)

    def predict_proba(self, subjects: Iterable[Hashable] | None = None) -> np.ndarray:
        """Posteriors, one row per subject (all subjects in order of arrival by default)."""
        if subjects is None:
            return np.exp(self._log_post[: len(self._subjects)])
        rows = [self._subjects.pos.get(_json_id(x)) for x in subjects]
        out = np.tile(np.exp(self._log_class_prior), (len(rows), 1))
        for i, r in enumerate(rows):
            if r is not None:
                out[i] = np.exp(self._log_post[r])
        return out

    def predict(self, subjects: Iterable[Hashable] | None = None) -> np.ndarray:
        return np.argmax(self.predict_proba(subjects), axis=1)

    def retired(self) -> dict[Hashable, str]:
        """Retired subjects and their reasons."""
        n = len(self._subjects)
        return {self._subjects.ids[i]: self._reasons[self._retired[i]]
                for i in np.flatnonzero(self._retired[:n] >= 0).tolist()}

    def retirement_reason(self, subject: Hashable) -> str | None:
        s = self._subjects.pos.get(_json_id(subject))
        if s is None or self._retired[s] < 0:
            return None
        return self._reasons[self._retired[s]]

    # ------------------------------------------------------------------ per-key state
    def subject_state(self, subject: Hashable) -> dict:
        """One subject's state as a small JSON-safe dict (a Redis value)."""
        s = self._subjects.pos[_json_id(subject)]
        answers, workers = self._subject_lists()[s]
        return {
            "log_posterior": self._log_post[s].tolist(),
            "n_counted": int(self._n_counted[s]),
            "answers": list(answers),
            "workers": [self._workers.ids[w] for w in workers],
            "gold": None if self._gold[s] < 0 else int(self._gold[s]),
            "retired": self.retirement_reason(subject),
        }

    def load_subject_state(self, subject: Hashable, state: dict) -> None:
        """Put one subject's state back (e.g. read from Redis)."""
        s = self._subject(subject)
        self._log_post[s] = np.asarray(state["log_posterior"], dtype=float)
        self._n_counted[s] = int(state["n_counted"])
        answers = [int(x) for x in state["answers"]]
        workers = [self._worker(x) for x in state["workers"]]
        self._ensure_agree()
        self._subject_lists()[s] = (answers, workers)
        self._gold[s] = -1 if state.get("gold") is None else int(state["gold"])
        reason = state.get("retired")
        self._retired[s] = -1 if reason is None else self._reason_code(reason)
        self._first[s] = answers[0] if answers else -1
        run = 0
        while run < len(answers) and answers[run] == answers[0]:
            run += 1
        self._agree[s] = run

    def worker_state(self, worker: Hashable) -> dict:
        """One agent's skill as a small JSON-safe dict (a Redis value)."""
        w = self._workers.pos[_json_id(worker)]
        return {"counts": self._counts[w].tolist(), "n_answers": int(self._n_answers[w]),
                "n_gold": int(self._n_gold[w])}

    def load_worker_state(self, worker: Hashable, state: dict) -> None:
        w = self._worker(worker)
        counts = np.asarray(state["counts"], dtype=float)
        if counts.shape != (self.n_classes, self.n_classes):
            raise ValueError("worker counts must be a K×K matrix")
        self._counts[w] = counts
        self._n_answers[w] = int(state.get("n_answers", 0))
        self._n_gold[w] = int(state.get("n_gold", 0))

    def shared_state(self) -> dict:
        """The estimator-wide priors that a fit or refit updates (one more Redis key)."""
        return {"skill_prior": self.skill_prior.tolist(),
                "log_class_prior": self._log_class_prior.tolist()}

    def load_shared_state(self, state: dict) -> None:
        self.skill_prior = np.asarray(state["skill_prior"], dtype=float)
        self._log_class_prior = np.asarray(state["log_class_prior"], dtype=float)

    # ------------------------------------------------------------------ serialisation
    def log(self) -> list[dict]:
        """The classification log with refits and priors in place, as JSON-safe records."""
        s, w, a, c, g = self._log_arrays()
        records: list[dict] = []
        events = sorted(self._events, key=lambda e: e["at"])
        e_i = 0
        for i, (si, wi, ai, ci, gi) in enumerate(zip(s.tolist(), w.tolist(), a.tolist(),
                                                     c.tolist(), g.tolist(), strict=True)):
            while e_i < len(events) and events[e_i]["at"] <= i:
                records.append({k: v for k, v in events[e_i].items() if k != "at"})
                e_i += 1
            rec = {"kind": "answer", "subject": self._subjects.ids[si],
                   "worker": self._workers.ids[wi], "answer": ai, "counts": ci}
            if gi >= 0:
                rec["gold"] = gi
            records.append(rec)
        for event in events[e_i:]:
            records.append({k: v for k, v in event.items() if k != "at"})
        return records

    def to_dict(self, *, include_log: bool = True) -> dict:
        """All state as plain JSON-safe data; ``from_dict`` rebuilds it exactly.

        Without the log the restored estimator predicts and takes answers as before, but a
        later ``refit`` sees only the answers it gets from then on.
        """
        n_s, n_w = len(self._subjects), len(self._workers)
        lists = self._subject_lists()
        s, w, a, c, g = self._log_arrays()
        data = {
            "format": "chorus-consensus/1",
            "config": self._config(),
            "log_class_prior": self._log_class_prior.tolist(),
            "skill_prior": self.skill_prior.tolist(),
            "subjects": self._subjects.ids,
            "log_posterior": self._log_post[:n_s].tolist(),
            "n_counted": self._n_counted[:n_s].tolist(),
            "gold": self._gold[:n_s].tolist(),
            "retired": [None if r < 0 else self._reasons[r] for r in self._retired[:n_s]],
            "answers": [x[0] for x in lists[:n_s]],
            "answer_workers": [x[1] for x in lists[:n_s]],
            "workers": self._workers.ids,
            "counts": self._counts[:n_w].tolist(),
            "n_answers": self._n_answers[:n_w].tolist(),
            "n_gold": self._n_gold[:n_w].tolist(),
        }
        if include_log:
            data["log"] = {"subject": s.tolist(), "worker": w.tolist(), "answer": a.tolist(),
                           "counted": c.tolist(), "gold": g.tolist()}
            data["events"] = self._events
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ConsensusEstimator:
        est = cls._from_config(data["config"])
        est._log_class_prior = np.asarray(data["log_class_prior"], dtype=float)
        if "skill_prior" in data:
            est.skill_prior = np.asarray(data["skill_prior"], dtype=float)
        for x in data["subjects"]:
            est._subjects.get(x)
        for x in data["workers"]:
            est._workers.get(x)
        n_s, n_w = len(est._subjects), len(est._workers)
        k = est.n_classes
        est._log_post = np.asarray(data["log_posterior"], dtype=float).reshape(n_s, k)
        est._n_counted = np.asarray(data["n_counted"], dtype=np.int64)
        est._gold = np.asarray(data["gold"], dtype=np.int64)
        est._retired = np.array([-1 if r is None else est._reason_code(r)
                                 for r in data["retired"]], dtype=np.int64)
        est._lists = [(list(a), list(w)) for a, w in zip(data["answers"],
                                                         data["answer_workers"], strict=True)]
        est._first = np.array([x[0] if x else -1 for x in data["answers"]], dtype=np.int64)
        agree = []
        for x in data["answers"]:
            run = 0
            while run < len(x) and x[run] == x[0]:
                run += 1
            agree.append(run)
        est._agree = np.array(agree, dtype=np.int64)
        est._counts = np.asarray(data["counts"], dtype=float).reshape(n_w, k, k)
        est._n_answers = np.asarray(data["n_answers"], dtype=np.int64)
        est._n_gold = np.asarray(data["n_gold"], dtype=np.int64)
        if "log" in data:
            log = data["log"]
            est._log_chunks = [(np.asarray(log["subject"], np.int64),
                                np.asarray(log["worker"], np.int64),
                                np.asarray(log["answer"], np.int64),
                                np.asarray(log["counted"], bool),
                                np.asarray(log["gold"], np.int64))]
            est._events = [dict(e) for e in data.get("events", [])]
        return est

    def to_bytes(self, *, include_log: bool = True) -> bytes:
        return zlib.compress(json.dumps(self.to_dict(include_log=include_log)).encode())

    @classmethod
    def from_bytes(cls, blob: bytes) -> ConsensusEstimator:
        return cls.from_dict(json.loads(zlib.decompress(blob).decode()))


def replay_log(config: dict, records: Iterable[dict]) -> ConsensusEstimator:
    """Rebuild an estimator from its configuration (``to_dict()["config"]``) and ``log()``.

    Records up to the last "fit" are what that ``fit`` took in one batch; the rest are
    replayed one by one, as they happened.
    """
    est = ConsensusEstimator._from_config(config)
    records = list(records)
    fits = [i for i, rec in enumerate(records) if rec.get("kind") == "fit"]
    if fits:
        batch = records[: fits[-1]]
        rows = [(r["subject"], r["worker"], r["answer"]) for r in batch
                if r.get("kind", "answer") == "answer"]
        gold = {r["subject"]: r["truth"] for r in batch if r.get("kind") == "gold"}
        est.fit(rows, gold=gold)
        records = records[fits[-1] + 1:]
    for rec in records:
        kind = rec.get("kind", "answer")
        if kind == "answer":
            est.add_answer(rec["subject"], rec["worker"], rec["answer"],
                           counts=rec.get("counts", True), gold=rec.get("gold"))
        elif kind == "refit":
            est.refit(retire=rec.get("retire", True), max_iter=rec.get("max_iter"))
        elif kind == "gold":
            est.set_gold(rec["subject"], rec["truth"])
        elif kind == "prior":
            est.add_prior(rec["subject"], rec["probabilities"])
        else:
            raise ValueError(f"unknown log record kind {kind!r}")
    return est
