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
from collections.abc import Hashable, Iterable, Mapping, Sequence
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
    established,
    expected_risk,
    information_bits,
    normalise_log,
    trust,
)
from .defaults import HALF_TRUST, LEARN_CLASS_PRIOR
from .difficulty import (
    DEFAULT_GRID,
    DifficultyParameters,
    answer_log_likelihoods,
    answer_terms,
    difficulty_em,
    initial_parameters,
    initial_wrong_shares,
    marginal_log_posterior,
)
from .retirement import RetirementPolicy, SubjectSummary, policy_from_dict
from .tables import IndexedAnswers, _Index, _json_id, answer_columns

LEARNING_MODES = ("gold", "consensus", "retired")


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


class ConsensusEstimator(IndexedAnswers):
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
    learn_class_prior: whether ``fit``/``refit`` re-estimate the class prior (default
        ``defaults.LEARN_CLASS_PRIOR``: yes, see there why).
    learn_skill_prior: whether ``fit``/``refit`` move the mean of the skill prior (what a
        newcomer is assumed to be) to the crowd's pooled confusion matrix, keeping its
        strength: empirical Bayes, as in Lean Crowdsourcing. Its first value comes from
        ``initial_skill``.
    leave_one_out: whether ``refit`` weighs each subject's answers with skills learned from
        the other subjects only (a subject's answers never vouch for themselves, as online;
        see ``batch.dawid_skene_em``), so that the posteriors the policy then reads are
        honest. ``fit`` (offline, no retirement) stays plain MAP EM.
    difficulty: whether each subject also has a difficulty (``aggregation.difficulty``): the
        posterior then sums over the difficulty a subject may have, with a skill offset per
        volunteer and answer and a distribution of difficulty per class, learnt at each
        ``fit``/``refit`` by the difficulty model's EM (between refits they stay fixed; a new
        volunteer answers as the average one). Why: Dawid–Skene takes agreeing answers on a hard
        subject for more evidence than they are (on GZ1's simulated crowds its posterior of 0.99
        was 94.8–96.5% right; this model's 0.97, 96.7–98.1%). The confusion matrices are still
        learnt (from the difficulty model's posteriors at each refit) for skills in bits.
    half_trust: how much evidence of a volunteer's skill the engine needs before taking its
        answers at that skill (default ``defaults.HALF_TRUST``, see there why). A volunteer's
        evidence is the answers' worth it has learned the skill from (its soft counts: gold
        answers, consensus credit, refits; in a refit, less the subject at hand); it is trusted
        ``core.trust`` = evidence / (evidence + half_trust), and its skill's prior is the crowd's
        only as far as it is trusted, otherwise uninformative (``core.trusted_prior``). A newcomer
        moves no posterior, as SWAP's new agents, and the policy's ``min:N`` guard and ``max:N``
        budget count each classification as ``core.established`` (evidence / half_trust, at most
        1), so N fresh identities can neither move a subject nor open its guard nor spend its
        budget. 0 trusts everyone at once (the engine before issue 25). Not applied with
        ``difficulty`` (that model weighs every answer).
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
        learn_class_prior: bool = LEARN_CLASS_PRIOR,
        learn_skill_prior: bool = True,
        leave_one_out: bool = True,
        difficulty: bool = False,
        half_trust: float = HALF_TRUST,
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
        self.difficulty = bool(difficulty)
        self.half_trust = float(half_trust)
        if not self.half_trust >= 0:
            raise ValueError("half_trust must be a number, 0 or more")
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
        self._established = np.empty(0)  # per subject: the min guard's count (SubjectSummary.n_established)
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
        # The difficulty model's state (``difficulty``): what it learnt, and per subject the log
        # likelihood of its counted answers under each (class, difficulty) and its added priors. (Its
        # parameters' log_prior is not read: the class prior in force is ``_log_class_prior``.)
        self._grid = np.asarray(DEFAULT_GRID)
        self._difficulty = initial_parameters(0, k, self._grid, self._log_class_prior)
        self._answer_ll = np.empty((0, k, self._grid.size))
        self._log_extra = np.empty((0, k))

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
            "difficulty": self.difficulty,
            "half_trust": self.half_trust,
            "policy": None if self.policy is None else self.policy.to_dict(),
            "max_iter": self.max_iter,
            "tol": self.tol,
        }

    @classmethod
    def _from_config(cls, config: dict) -> ConsensusEstimator:
        cfg = dict(config)
        policy = cfg.pop("policy", None)
        clip = cfg.pop("clip", DEFAULT_CLIP)
        cfg.setdefault("half_trust", 0.0)  # a config stored before issue 25 trusted everyone at once
        return cls(**cfg, clip=None if clip is None else tuple(clip),
                   policy=None if policy is None else policy_from_dict(policy))

    def _grow_subjects(self, n: int) -> None:
        old = self._log_post.shape[0]
        if n <= old:
            return
        extra = n - old
        k = self.n_classes
        self._log_post = np.concatenate(
            [self._log_post, np.tile(self._log_class_prior, (extra, 1))])
        self._n_counted = np.concatenate([self._n_counted, np.zeros(extra, np.int64)])
        self._established = np.concatenate([self._established, np.zeros(extra)])
        self._gold = np.concatenate([self._gold, np.full(extra, -1, np.int64)])
        self._retired = np.concatenate([self._retired, np.full(extra, -1, np.int64)])
        self._first = np.concatenate([self._first, np.full(extra, -1, np.int64)])
        self._agree = np.concatenate([self._agree, np.zeros(extra, np.int64)])
        if self._lists is not None:
            self._lists.extend(([], []) for _ in range(extra))
        if self.difficulty:
            self._answer_ll = np.concatenate([self._answer_ll, np.zeros((extra, k, self._grid.size))])
            self._log_extra = np.concatenate([self._log_extra, np.zeros((extra, k))])

    def _grow_workers(self, n: int) -> None:
        old = self._counts.shape[0]
        if n <= old:
            return
        extra = n - old
        k = self.n_classes
        self._counts = np.concatenate([self._counts, np.zeros((extra, k, k))])
        self._n_answers = np.concatenate([self._n_answers, np.zeros(extra, np.int64)])
        self._n_gold = np.concatenate([self._n_gold, np.zeros(extra, np.int64)])
        if self.difficulty:
            d = self._difficulty
            d.offsets = np.concatenate([d.offsets, np.zeros((extra, k))])
            d.log_wrong = np.concatenate([d.log_wrong, initial_wrong_shares(extra, k)])

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
    def _difficulty_log_post(self, rows: Any) -> np.ndarray:
        """The difficulty model's log posterior of these subjects: their answers' likelihoods summed
        over difficulty, with the class prior and any added priors."""
        prior = self._log_class_prior + self._log_extra[rows]  # subjects × k: class prior and added priors
        return marginal_log_posterior(self._answer_ll[rows] + self._difficulty.log_mix + prior[..., None])

    def _log_conf(self, w: int) -> np.ndarray:
        return np.log(confusion_from_counts(self._counts[w], self.skill_prior, self.clip, self._trust_scale))

    @property
    def _trust_scale(self) -> float:
        return 0.0 if self.difficulty else self.half_trust

    def confusion(self, worker: Hashable) -> np.ndarray:
        """The agent's answer model P(answer=j | truth=i) as the posteriors use it: its learned
        confusion matrix, trusted as far as its evidence says (uniform for a stranger when
        ``half_trust`` > 0, else the skill prior's mean)."""
        w = self._workers.pos.get(_json_id(worker))
        counts = np.zeros((self.n_classes,) * 2) if w is None else self._counts[w]
        return confusion_from_counts(counts, self.skill_prior, self.clip, self._trust_scale)

    def evidence(self, worker: Hashable) -> float:
        """The answers' worth of evidence the engine has learned this agent's skill from (0 for a
        stranger): what its trust and its standing in the retirement guard grow with."""
        w = self._workers.pos.get(_json_id(worker))
        return 0.0 if w is None else float(self._counts[w].sum())

    def trust(self, worker: Hashable) -> float:
        """``core.trust`` of the agent's evidence: how far its answers are taken at its skill."""
        return float(trust(self.evidence(worker), self._trust_scale))

    def skill_bits(self, worker: Hashable) -> float:
        """Expected information per answer, in bits (SWAP's single-number skill)."""
        return float(information_bits(self.confusion(worker), np.exp(self._log_class_prior)))

    def skills(self) -> dict[Hashable, float]:
        """Every agent's skill in bits."""
        conf = confusion_from_counts(self._counts[: len(self._workers)], self.skill_prior,
                                     self.clip, self._trust_scale)
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
        if self.difficulty:  # kept apart, so that refits keep it
            self._log_extra[s] += np.log(probs / probs.sum()) - self._log_class_prior
            self._log_post[s] = self._difficulty_log_post(s)
            return np.exp(self._log_post[s])
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
                              is_gold=bool(self._gold[s] >= 0),
                              n_established=float(self._established[s]))

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
        lc = self._log_conf(w) if counted and not self.difficulty else None
        # Its standing in the guard, from the same evidence as the skill it is weighed with.
        standing = float(established(self._counts[w].sum(), self._trust_scale))
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
            if self.difficulty:
                d = self._difficulty
                self._answer_ll[s] += answer_terms(self._grid, d.offsets[w][None], d.log_wrong[w][None], np.array([answer]))[0]
                self._log_post[s] = self._difficulty_log_post(s)
            else:
                self._log_post[s] = normalise_log(before + lc[:, answer])
            self._n_counted[s] += 1
            self._established[s] += standing
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

    def retire(self, subject: Hashable, reason: str) -> bool:
        """Retire a subject from outside the policy (a whole-workflow decision, the machine):
        later answers no longer count, and "retired" learning credits its answers now. Logged,
        so ``replay_log`` repeats it. Returns False if the subject is unknown or already retired."""
        s = self._subjects.pos.get(_json_id(subject))
        if s is None or self._retired[s] >= 0:
            return False
        self._events.append({"at": self.n_logged, "kind": "retire", "subject": subject, "reason": reason})
        self._retire(s, reason)
        return True

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
        if chunk_size is None or not policy_is_vectorisable(self.policy) or self.difficulty:  # no vectorised difficulty replay
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
                            self._first, self._agree, self._counts, self._n_gold, self._established)
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
                rule_codes=rule_codes, retired_credit=credit, half_trust=self._trust_scale)
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

    def refit(self, *, retire: bool = True, max_iter: int | None = None,
              subject_weights: Mapping[Hashable, float] | None = None) -> list[Hashable]:
        """Batch EM over the whole log, warm-started from the current skills.

        Replaces every skill and posterior (retired subjects keep their reason); with
        ``retire`` the policy is then asked about the active subjects. Returns the subjects
        this refit retired. The platform's worker runs this on a schedule; ``max_iter``
        bounds its EM iterations (default: the estimator's ``max_iter``).
        """
        event: dict[str, Any] = {"at": self.n_logged, "kind": "refit", "retire": bool(retire), "max_iter": max_iter}
        if subject_weights is not None:
            # Not stored (one number per subject per refit would swell the state): the workflow that
            # computed them from its own state repeats them when it replays (aggregation.workflow).
            event["weighted"] = True
        self._events.append(event)
        return self._refit(warm=True, retire=retire, max_iter=max_iter, subject_weights=subject_weights)

    def _refit(self, *, warm: bool, retire: bool = False, max_iter: int | None = None,
               subject_weights: Mapping[Hashable, float] | None = None) -> list[Hashable]:
        if self.difficulty:
            self._refit_difficulty(warm=warm, max_iter=max_iter)
            return self._retire_after_refit(retire)
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
            leave_one_out=self.leave_one_out and warm,
            subject_weights=None if subject_weights is None else np.array(
                [float(subject_weights.get(x, 1.0)) for x in self._subjects.ids[:n_s]]),
            half_trust=self.half_trust)
        self._counts[:n_w] = result.counts
        self._established[:n_s] = result.established
        if self.learn_skill_prior and n_w:
            pooled = result.counts.sum(axis=0) + self.skill_prior
            pooled /= pooled.sum(axis=1, keepdims=True)
            self.skill_prior = (self.prior_strength + self.skepticism) * pooled
        self._log_post[:n_s] = result.log_post
        self._log_class_prior = np.log(result.class_prior)
        self._log_post[n_s:] = self._log_class_prior
        self.n_iter_ = result.n_iter
        return self._retire_after_refit(retire)

    def _refit_difficulty(self, *, warm: bool, max_iter: int | None) -> None:
        """The difficulty model's EM over the log (counted answers, and every answer on a gold
        subject, as Dawid–Skene's refit learns from), then every posterior from counted answers."""
        s, w, a, c, _ = self._log_arrays()
        n_s, n_w = len(self._subjects), len(self._workers)
        gold = self._gold[:n_s]
        learn_from = c | (gold[s] >= 0)
        d = self._difficulty
        start = DifficultyParameters(d.offsets[:n_w], d.log_wrong[:n_w], d.log_mix, self._log_class_prior) if warm else \
            initial_parameters(n_w, self.n_classes, self._grid, np.log(self.class_prior))
        params, _, self.n_iter_ = difficulty_em(
            s[learn_from], w[learn_from], a[learn_from], n_s, self._grid, gold, start,
            max_iter=self.max_iter if max_iter is None else int(max_iter), tol=self.tol,
            learn_class_prior=self.learn_class_prior)
        d.offsets[:n_w], d.log_wrong[:n_w], d.log_mix = params.offsets, params.log_wrong, params.log_mix
        self._log_class_prior = params.log_prior
        self._answer_ll[:] = 0.0
        self._answer_ll[:n_s] = answer_log_likelihoods(self._grid, d.offsets, d.log_wrong, s[c], w[c], a[c], n_s)
        self._log_post[:n_s] = self._difficulty_log_post(slice(0, n_s))
        self._log_post[n_s:] = self._log_class_prior
        self._established[:n_s] = self._n_counted[:n_s]  # this model weighs every answer
        # Confusion matrices from these posteriors (gold: its truth), for skills in bits.
        weights = np.exp(self._log_post[:n_s])
        is_gold = gold >= 0
        weights[is_gold] = np.eye(self.n_classes)[gold[is_gold]]
        counts = np.zeros((n_w, self.n_classes, self.n_classes))
        np.add.at(counts, (w[learn_from], slice(None), a[learn_from]), weights[s[learn_from]])
        self._counts[:n_w] = counts

    def _retire_after_refit(self, retire: bool) -> list[Hashable]:
        s, w, a, c, _ = self._log_arrays()
        n_s = len(self._subjects)
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
                            self._agree[active], self._gold[active] >= 0, self._established[active])
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

    def subject_posterior(self, subject: Hashable) -> np.ndarray:
        """One subject's posterior (the class prior for a subject it has not seen): ``predict_proba``
        for a single subject, without building a table."""
        s = self._subjects.pos.get(_json_id(subject))
        return np.exp(self._log_class_prior if s is None else self._log_post[s])

    def subject_n_counted(self, subject: Hashable) -> int:
        """How many answers counted for this subject (0 for one it has not seen)."""
        s = self._subjects.pos.get(_json_id(subject))
        return 0 if s is None else int(self._n_counted[s])

    def subject_n_established(self, subject: Hashable) -> float:
        """What the ``min`` guard counts for this subject (``SubjectSummary.n_established``)."""
        s = self._subjects.pos.get(_json_id(subject))
        return 0.0 if s is None else float(self._established[s])

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
            "n_established": float(self._established[s]),
            "answers": list(answers),
            "workers": [self._workers.ids[w] for w in workers],
            "gold": None if self._gold[s] < 0 else int(self._gold[s]),
            "retired": self.retirement_reason(subject),
        } | ({"added_log_prior": self._log_extra[s].tolist()} if self.difficulty else {})

    def load_subject_state(self, subject: Hashable, state: dict) -> None:
        """Put one subject's state back (e.g. read from Redis)."""
        s = self._subject(subject)
        self._log_post[s] = np.asarray(state["log_posterior"], dtype=float)
        self._n_counted[s] = int(state["n_counted"])
        # A state saved before issue 25 counted every classification in the guard.
        self._established[s] = float(state.get("n_established", state["n_counted"]))
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
        if self.difficulty:  # its answers' likelihoods under the skills in force, as online
            d = self._difficulty
            self._log_extra[s] = np.asarray(state.get("added_log_prior", np.zeros(self.n_classes)), dtype=float)
            self._answer_ll[s] = answer_log_likelihoods(self._grid, d.offsets, d.log_wrong, np.zeros(len(answers), np.int64),
                                                        np.asarray(workers, np.int64), np.asarray(answers, np.int64), 1)[0]

    def worker_state(self, worker: Hashable) -> dict:
        """One agent's skill as a small JSON-safe dict (a Redis value)."""
        w = self._workers.pos[_json_id(worker)]
        state = {"counts": self._counts[w].tolist(), "n_answers": int(self._n_answers[w]), "n_gold": int(self._n_gold[w])}
        if self.difficulty:
            state |= {"offsets": self._difficulty.offsets[w].tolist(), "log_wrong": self._difficulty.log_wrong[w].tolist()}
        return state

    def load_worker_state(self, worker: Hashable, state: dict) -> None:
        w = self._worker(worker)
        counts = np.asarray(state["counts"], dtype=float)
        if counts.shape != (self.n_classes, self.n_classes):
            raise ValueError("worker counts must be a K×K matrix")
        self._counts[w] = counts
        self._n_answers[w] = int(state.get("n_answers", 0))
        self._n_gold[w] = int(state.get("n_gold", 0))
        if self.difficulty and "offsets" in state:
            self._difficulty.offsets[w] = np.asarray(state["offsets"], dtype=float)
            self._difficulty.log_wrong[w] = np.asarray(state["log_wrong"], dtype=float)

    def shared_state(self) -> dict:
        """The estimator-wide priors that a fit or refit updates (one more Redis key)."""
        state = {"skill_prior": self.skill_prior.tolist(), "log_class_prior": self._log_class_prior.tolist()}
        return state | ({"difficulty_log_mix": self._difficulty.log_mix.tolist()} if self.difficulty else {})

    def load_shared_state(self, state: dict) -> None:
        self.skill_prior = np.asarray(state["skill_prior"], dtype=float)
        self._log_class_prior = np.asarray(state["log_class_prior"], dtype=float)
        if self.difficulty and "difficulty_log_mix" in state:
            self._difficulty.log_mix = np.asarray(state["difficulty_log_mix"], dtype=float)

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
            "n_established": self._established[:n_s].tolist(),
            "gold": self._gold[:n_s].tolist(),
            "retired": [None if r < 0 else self._reasons[r] for r in self._retired[:n_s]],
            "answers": [x[0] for x in lists[:n_s]],
            "answer_workers": [x[1] for x in lists[:n_s]],
            "workers": self._workers.ids,
            "counts": self._counts[:n_w].tolist(),
            "n_answers": self._n_answers[:n_w].tolist(),
            "n_gold": self._n_gold[:n_w].tolist(),
        }
        if self.difficulty:
            d = self._difficulty
            # The answers' likelihoods are not stored: ``from_dict`` sums them again from each
            # subject's counted answers (the same terms in the same order, so the same numbers).
            data["difficulty"] = {"offsets": d.offsets[:n_w].tolist(), "log_wrong": d.log_wrong[:n_w].tolist(),
                                  "log_mix": d.log_mix.tolist(), "added_log_prior": self._log_extra[:n_s].tolist()}
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
        est._established = np.asarray(data.get("n_established", data["n_counted"]), dtype=float)
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
        if est.difficulty:
            state = data["difficulty"]
            est._difficulty = DifficultyParameters(
                np.asarray(state["offsets"], dtype=float).reshape(n_w, k), np.asarray(state["log_wrong"], dtype=float).reshape(n_w, k, k),
                np.asarray(state["log_mix"], dtype=float), est._log_class_prior)
            est._log_extra = np.asarray(state["added_log_prior"], dtype=float).reshape(n_s, k)
            sizes = [len(answers) for answers, _ in est._lists]
            est._answer_ll = answer_log_likelihoods(  # added one by one in each subject's order, as online
                est._grid, est._difficulty.offsets, est._difficulty.log_wrong, np.repeat(np.arange(n_s), sizes),
                np.fromiter((x for _, workers in est._lists for x in workers), np.int64, sum(sizes)),
                np.fromiter((x for answers, _ in est._lists for x in answers), np.int64, sum(sizes)), n_s)
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
            if rec.get("weighted"):
                raise ValueError("a refit with subject weights is repeated by replaying its workflow "
                                 "(aggregation.workflow), not this node's log alone")
            est.refit(retire=rec.get("retire", True), max_iter=rec.get("max_iter"))
        elif kind == "gold":
            est.set_gold(rec["subject"], rec["truth"])
        elif kind == "prior":
            est.add_prior(rec["subject"], rec["probabilities"])
        elif kind == "retire":
            est.retire(rec["subject"], rec["reason"])
        else:
            raise ValueError(f"unknown log record kind {kind!r}")
    return est
