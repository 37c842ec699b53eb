"""Retirement policy: ordered rules, the first that fires wins and names the reason.

The same rules serve questions and boxes: each engine summarises a subject as a
``SubjectSummary`` and a ``RetirementPolicy`` decides from that summary alone, so the
platform stores one kind of reason whatever produced it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class SubjectSummary:
    """What a retirement rule may look at for one subject.

    ``n_counted`` counts only classifications that count towards retirement (not gold
    checks, not repeats, not classifications of an already retired subject).
    ``posterior`` is the class posterior of a question (None for box-only subjects);
    ``expected_risk`` is the expected number of errors if the subject retired now
    (misclassification probability for a question, expected false + missed + badly
    placed objects for boxes). ``answers`` are the counted answers in arrival order.
    ``n_established`` counts the counted classifications of volunteers of established skill, each
    weighed by how established its volunteer was when it came (``core.established``: 0 for a
    newcomer, 1 once the engine holds ``half_trust`` answers' worth of evidence of its skill); None
    means every classification counts 1 (an engine that does not weigh by trust).
    """

    n_counted: int
    posterior: np.ndarray | None = None
    expected_risk: float | None = None
    answers: Sequence[int] = field(default_factory=tuple)
    is_gold: bool = False
    n_established: float | None = None


class RetirementRule(Protocol):
    """A rule: returns its reason when it fires for the subject, else None."""

    reason: str

    def fires(self, summary: SubjectSummary) -> bool: ...

    def to_dict(self) -> dict: ...


def _top(summary: SubjectSummary) -> tuple[int, float] | None:
    if summary.posterior is None:
        return None
    post = np.asarray(summary.posterior, dtype=float)
    best = int(np.argmax(post))
    return best, float(post[best])


@dataclass(frozen=True)
class PosteriorAbove:
    """Fires when the posterior of one answer exceeds ``threshold``.

    ``answer=None`` means any answer; GZX retires "featured" at P > 0.99 with
    ``PosteriorAbove(0.99, answer=1, reason="detected")`` and "smooth" at P(yes) < 0.004
    with ``PosteriorAbove(0.996, answer=0, reason="rejected")``.
    """

    threshold: float
    reason: str = "consensus"
    answer: int | None = field(default=None, kw_only=True)

    def fires(self, summary: SubjectSummary) -> bool:
        if summary.posterior is None:
            return False
        post = np.asarray(summary.posterior, dtype=float)
        if self.answer is None:
            return bool(post.max() > self.threshold)
        return bool(self.answer < post.shape[0] and post[self.answer] > self.threshold)

    def to_dict(self) -> dict:
        return {"type": "posterior_above", "threshold": self.threshold, "answer": self.answer,
                "reason": self.reason}


@dataclass(frozen=True)
class RiskBelow:
    """Fires when the expected misclassification risk falls below ``threshold``.

    For a question the risk is 1 − max posterior (Branson et al. 2017); the box engine
    supplies its own expected errors in ``SubjectSummary.expected_risk``.
    """

    threshold: float
    reason: str = "low_risk"

    def fires(self, summary: SubjectSummary) -> bool:
        risk = summary.expected_risk
        if risk is None:
            top = _top(summary)
            if top is None:
                return False
            risk = 1.0 - top[1]
        return bool(risk < self.threshold)

    def to_dict(self) -> dict:
        return {"type": "risk_below", "threshold": self.threshold, "reason": self.reason}


@dataclass(frozen=True)
class MinClassifications:
    """A guard: while fewer than ``n`` classifications of volunteers of established skill count
    (``SubjectSummary.n_established``; every classification where the engine does not weigh by
    trust), the rules after it cannot fire. So fresh identities, however many, never open it, and a
    budget (``max:N``) placed after it cannot be spent by them alone.

    It never retires a subject itself (``fires`` is always False); rules placed before it
    still can. ``RetirementPolicy.decide`` asks ``holds``.
    """

    n: int
    reason: str = "too_few"

    def holds(self, summary: SubjectSummary) -> bool:
        count = summary.n_counted if summary.n_established is None else summary.n_established
        return count < self.n

    def fires(self, summary: SubjectSummary) -> bool:
        return False

    def to_dict(self) -> dict:
        return {"type": "min_classifications", "n": self.n}


@dataclass(frozen=True)
class MaxClassifications:
    """Fires once ``n`` classifications have counted: the classification limit. Counted as the
    ``min`` guard counts (``SubjectSummary.n_established``), so fresh identities cannot spend it."""

    n: int
    reason: str = "limit"

    def fires(self, summary: SubjectSummary) -> bool:
        count = summary.n_counted if summary.n_established is None else summary.n_established
        return count >= self.n

    def to_dict(self) -> dict:
        return {"type": "max_classifications", "n": self.n, "reason": self.reason}


@dataclass(frozen=True)
class FirstKAgree:
    """Fires when the first ``k`` counted answers are all the same."""

    k: int
    reason: str = "agreement"

    def fires(self, summary: SubjectSummary) -> bool:
        answers = list(summary.answers)
        if len(answers) < self.k or self.k < 1:
            return False
        first = answers[: self.k]
        return all(a == first[0] for a in first)

    def to_dict(self) -> dict:
        return {"type": "first_k_agree", "k": self.k, "reason": self.reason}


_RULE_TYPES: dict[str, type] = {
    "posterior_above": PosteriorAbove,
    "risk_below": RiskBelow,
    "min_classifications": MinClassifications,
    "max_classifications": MaxClassifications,
    "first_k_agree": FirstKAgree,
}


def rule_from_dict(data: dict) -> RetirementRule:
    """Rebuild one rule from its ``to_dict()``."""
    kwargs = dict(data)
    kind = kwargs.pop("type", None)
    if kind not in _RULE_TYPES:
        raise ValueError(f"unknown retirement rule type: {kind!r}")
    return _RULE_TYPES[kind](**kwargs)


@dataclass(frozen=True)
class RetirementPolicy:
    """Ordered rules: the first that fires retires the subject and names the reason.

    Gold-standard subjects never retire through a policy.
    """

    rules: tuple = ()

    def __init__(self, rules: Sequence[RetirementRule] = ()) -> None:
        object.__setattr__(self, "rules", tuple(rules))

    def decide(self, summary: SubjectSummary) -> str | None:
        if summary.is_gold:
            return None
        for rule in self.rules:
            holds = getattr(rule, "holds", None)
            if holds is not None and holds(summary):
                return None
            if rule.fires(summary):
                return rule.reason
        return None

    def to_dict(self) -> dict:
        return {"rules": [rule.to_dict() for rule in self.rules]}

    @classmethod
    def from_dict(cls, data: dict) -> RetirementPolicy:
        return cls([rule_from_dict(r) for r in data.get("rules", [])])

    def __str__(self) -> str:
        return format_policy(self)


def policy_from_dict(data: dict) -> RetirementPolicy:
    """Rebuild a policy stored as JSON by ``RetirementPolicy.to_dict()``."""
    return RetirementPolicy.from_dict(data)


POLICY_SYNTAX = """\
A policy string is a comma-separated list of rules, tried in order; the first that fires
retires the subject and its reason is recorded:
  posterior:P        any answer's posterior > P           (reason "consensus")
  posterior[A]:P     answer A's posterior > P              (reason "consensus")
  risk:R             expected misclassification risk < R  (reason "low_risk")
  agree:K            the first K counted answers agree     (reason "agreement")
  max:N | limit:N    N counted classifications reached, counted as min counts
                                                          (reason "limit")
  min:N              guard: rules after it wait for N counted classifications from
                     volunteers of established skill (see --half-trust)
  none               never retire
A rule may rename its reason with '=NAME', e.g. 'posterior[1]:0.99=detected'.
Example (GZX): 'posterior[1]:0.99=detected,posterior[0]:0.996=rejected'.
Default for the CLI (python -m aggregation replay --online): 'min:3,risk:0.003'."""


def parse_policy(text: str) -> RetirementPolicy:
    """Parse the CLI's ``--policy`` string; see ``POLICY_SYNTAX``."""
    rules: list[RetirementRule] = []
    text = text.strip()
    if text in ("", "none"):
        return RetirementPolicy([])
    for raw in text.split(","):
        token = raw.strip()
        reason = None
        if "=" in token:
            token, reason = (part.strip() for part in token.split("=", 1))
        if ":" not in token:
            raise ValueError(f"bad policy rule {raw.strip()!r}: expected NAME:VALUE")
        name, value = (part.strip() for part in token.split(":", 1))
        answer = None
        extra = {"reason": reason} if reason else {}
        try:
            if name.startswith("posterior[") and name.endswith("]"):
                answer = int(name[len("posterior["):-1])
                name = "posterior"
            if name == "posterior":
                rule: RetirementRule = PosteriorAbove(float(value), answer=answer, **extra)
            elif name == "risk":
                rule = RiskBelow(float(value), **extra)
            elif name == "agree":
                rule = FirstKAgree(int(value), **extra)
            elif name in ("max", "limit"):
                rule = MaxClassifications(int(value), **extra)
            elif name == "min":
                rule = MinClassifications(int(value))
            else:
                raise ValueError(f"unknown rule name {name!r}")
        except ValueError as exc:
            raise ValueError(f"bad policy rule {raw.strip()!r}: {exc}") from None
        rules.append(rule)
    return RetirementPolicy(rules)


def format_policy(policy: RetirementPolicy) -> str:
    """The policy string that ``parse_policy`` reads back to the same policy."""
    parts = []
    defaults = {PosteriorAbove: "consensus", RiskBelow: "low_risk", FirstKAgree: "agreement",
                MaxClassifications: "limit"}
    for rule in policy.rules:
        if isinstance(rule, PosteriorAbove):
            name = "posterior" if rule.answer is None else f"posterior[{rule.answer}]"
            token = f"{name}:{rule.threshold!r}"
        elif isinstance(rule, RiskBelow):
            token = f"risk:{rule.threshold!r}"
        elif isinstance(rule, FirstKAgree):
            token = f"agree:{rule.k}"
        elif isinstance(rule, MaxClassifications):
            token = f"max:{rule.n}"
        elif isinstance(rule, MinClassifications):
            token = f"min:{rule.n}"
        else:
            raise ValueError(f"rule {rule!r} has no policy-string form")
        default = defaults.get(type(rule))
        if default is not None and rule.reason != default:
            token += f"={rule.reason}"
        parts.append(token)
    return ",".join(parts) or "none"
