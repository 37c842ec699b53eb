"""Replaying an answer table through the engine, offline (batch EM) or online (retiring).

The command line (``python -m aggregation replay``) and the benchmarks both call
``replay``; it returns plain figures.
"""

from __future__ import annotations

import time
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
    n_truth: int
    seconds: float
    answers_per_second: float
    policy: str | None = None
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _accuracy(labels: dict, truth: dict[str, int] | None) -> float | None:
    if not truth:
        return None
    hits = [labels.get(q) == t for q, t in truth.items()]
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
    """
    subjects, workers, answers = table.subjects, table.workers, table.answers
    if order_seed is not None:
        perm = np.random.default_rng(order_seed).permutation(answers.shape[0])
        subjects, workers, answers = subjects[perm], workers[perm], answers[perm]
    k = n_classes or max(int(answers.max(initial=0)) + 1,
                         max(truth.values(), default=0) + 1 if truth else 2, 2)
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
    acc_refit = _accuracy(labels, truth)
    labels.update(at_retirement)
    reasons: dict[str, int] = {}
    for reason in est.retired().values():
        reasons[reason] = reasons.get(reason, 0) + 1
    result = ReplayResult(
        mode="online" if online else "offline",
        n_answers=n,
        answers_consumed=consumed,
        answers_saved=n - consumed,
        fraction_consumed=consumed / n if n else 0.0,
        n_subjects=len(est.subjects),
        subjects_retired=sum(reasons.values()),
        retirement_reasons=reasons,
        accuracy=_accuracy(labels, truth),
        accuracy_after_refit=acc_refit,
        n_truth=len(truth or {}),
        seconds=seconds,
        answers_per_second=n / seconds if seconds > 0 else float("inf"),
        policy=None if not online or policy is None else str(policy),
        settings={"n_classes": k, "refit_every": refit_every if online else None,
                  "chunk_size": chunk_size, "order_seed": order_seed, **options},
    )
    return result, est
