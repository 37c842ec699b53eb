"""Replaying an answer table through the engine, offline (batch EM) or online (retiring).

The command line (``python -m aggregation replay``) and the benchmarks both call
``replay``; it returns plain figures. Accuracy is measured only on the truth questions that
appear in the answers; how many truth questions were not (``n_truth_unknown``, with a few
``truth_unknown_examples``) is part of the result, so a caller can see it, and
``match_truth`` gives the same split before any work is done. An empty table is an error.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .defaults import CLI_ONLINE_POLICY
from .estimator import ConsensusEstimator
from .io import AnswerTable
from .retirement import RetirementPolicy, parse_policy

DEFAULT_ONLINE_POLICY = CLI_ONLINE_POLICY  # see aggregation.defaults for why it differs from the platform's


@dataclass
class ReplayResult:
    mode: str
    n_answers: int
    answers_consumed: int
    answers_saved: int
    fraction_consumed: float
    n_subjects: int
    subjects_retired: int
    retirement_reasons: dict[str, int]
    accuracy: float | None
    accuracy_after_refit: float | None
    n_truth: int  # truth questions given
    n_truth_scored: int  # of them, in the answers: the questions accuracy is measured on
    n_truth_unknown: int  # of them, not in the answers (not scored)
    truth_unknown_examples: list[str]  # up to UNKNOWN_EXAMPLES of those, in truth order
    seconds: float
    answers_per_second: float
    policy: str | None = None
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


UNKNOWN_EXAMPLES = 5  # how many unknown ids (truth questions, gold images) a result or a warning names


def examples(ids: Sequence[str]) -> str:
    """The first ``UNKNOWN_EXAMPLES`` ids for a message, with "..." when there are more."""
    shown = ", ".join(ids[:UNKNOWN_EXAMPLES])
    return shown + (", ..." if len(ids) > UNKNOWN_EXAMPLES else "")


@dataclass
class TruthMatch:
    """Truth split into the questions present in the answers and those that are not."""

    scored: dict[str, int]  # truth of the questions that have answers
    unknown: list[str]  # questions with truth and no answers, in truth order

    @property
    def n_truth(self) -> int:
        return len(self.scored) + len(self.unknown)


def match_truth(subjects: np.ndarray, truth: dict[str, int]) -> TruthMatch:
    """Split ``truth`` by whether its question appears among ``subjects``."""
    present = set(np.unique(subjects).tolist()) if subjects.size else set()
    scored = {q: t for q, t in truth.items() if q in present}
    unknown = [q for q in truth if q not in present]
    return TruthMatch(scored, unknown)


def _accuracy(labels: dict, truth: dict[str, int]) -> float | None:
    """Share of ``truth`` (questions that have a label) labelled right; None without truth."""
    hits = [labels[q] == t for q, t in truth.items() if q in labels]
    return float(np.mean(hits)) if hits else None


def replay(
    table: AnswerTable,
    truth: dict[str, int] | None = None,
    *,
    n_classes: int | None = None,
    online: bool = False,
    policy: RetirementPolicy | str | None = None,
    refit_every: int = 250,
    refit_max_iter: int | None = None,
    chunk_size: int | None = None,
    order_seed: int | None = None,
    estimator_options: dict | None = None,
) -> tuple[ReplayResult, ConsensusEstimator]:
    """Feed ``table`` to a fresh estimator and measure it against ``truth``.

    Offline: one batch EM over every answer. Online: answers arrive in file order (or
    shuffled with ``order_seed``); a retired subject is fed no more answers (they are
    counted as saved); the batch refit runs every ``refit_every`` answers, as the
    platform's worker would. A retired subject's label is the one it had when it retired.

    Accuracy is over the truth questions that have answers; the others are counted in
    ``n_truth_unknown``, never as wrong. Accuracy is None without truth and when no truth
    question has answers (``n_truth_scored`` 0). Raises
    ``ValueError`` for an empty table, for ``n_classes`` below 2 or not above every answer,
    and for a truth label outside the classes (without ``n_classes``: above the largest
    answer, or 1 when that is 0).
    """
    subjects, workers, answers = table.subjects, table.workers, table.answers
    if answers.size == 0:
        raise ValueError("no answers to replay")
    top = int(answers.max())
    if n_classes is not None and (n_classes < 2 or n_classes <= top):
        raise ValueError(f"n_classes is {n_classes}; it must be at least 2 and above the "
                         f"largest answer, {top}")
    k = n_classes if n_classes is not None else max(top + 1, 2)
    truth = truth or {}
    outside = [q for q, t in truth.items() if t >= k]
    if outside:
        raise ValueError(f"{len(outside)} truth label(s) outside the classes 0..{k - 1}, "
                         f"e.g. {truth[outside[0]]} for {outside[0]!r}")
    match = match_truth(subjects, truth)
    if order_seed is not None:
        perm = np.random.default_rng(order_seed).permutation(answers.shape[0])
        subjects, workers, answers = subjects[perm], workers[perm], answers[perm]
    if isinstance(policy, str):
        policy = parse_policy(policy)
    if online and policy is None:
        policy = parse_policy(DEFAULT_ONLINE_POLICY)
    options = dict(estimator_options or {})
    est = ConsensusEstimator(k, policy=policy if online else None, **options)
    n = answers.shape[0]
    start = time.perf_counter()
    if not online:
        est.fit({"subject": subjects, "worker": workers, "answer": answers})
        consumed = n
        at_retirement: dict = {}
    else:
        consumed = 0
        at_retirement = {}

        def snapshot() -> None:
            fresh = [s for s in est.retired() if s not in at_retirement]
            if fresh:
                at_retirement.update(zip(fresh, est.predict(fresh).tolist(), strict=True))

        step = refit_every if refit_every and refit_every > 0 else max(n, 1)
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            part = {"subject": subjects[lo:hi], "worker": workers[lo:hi],
                    "answer": answers[lo:hi]}
            est.partial_fit(part, chunk_size=chunk_size, drop_retired=True)
            consumed += int(est.counted_.sum())
            snapshot()
            if refit_every and refit_every > 0:
                est.refit(max_iter=refit_max_iter)
                snapshot()
    seconds = time.perf_counter() - start
    labels = dict(zip(est.subjects, est.predict().tolist(), strict=True))
    acc_refit = _accuracy(labels, match.scored)
    labels.update(at_retirement)
    reasons: dict[str, int] = {}
    for reason in est.retired().values():
        reasons[reason] = reasons.get(reason, 0) + 1
    result = ReplayResult(
        mode="online" if online else "offline",
        n_answers=n,
        answers_consumed=consumed,
        answers_saved=n - consumed,
        fraction_consumed=consumed / n,
        n_subjects=len(est.subjects),
        subjects_retired=sum(reasons.values()),
        retirement_reasons=reasons,
        accuracy=_accuracy(labels, match.scored),
        accuracy_after_refit=acc_refit,
        n_truth=match.n_truth,
        n_truth_scored=len(match.scored),
        n_truth_unknown=len(match.unknown),
        truth_unknown_examples=match.unknown[:UNKNOWN_EXAMPLES],
        seconds=seconds,
        answers_per_second=n / seconds if seconds > 0 else float("inf"),
        policy=None if not online or policy is None else str(policy),
        settings={"n_classes": k, "refit_every": refit_every if online else None,
                  "chunk_size": chunk_size, "order_seed": order_seed, **options},
    )
    return result, est
