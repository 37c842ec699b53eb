"""Retirement rules: order, guards, gold subjects, JSON and the policy string."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aggregation.estimator import ConsensusEstimator
from aggregation.retirement import (
    FirstKAgree,
    MaxClassifications,
    MinClassifications,
    PosteriorAbove,
    RetirementPolicy,
    RiskBelow,
    SubjectSummary,
    parse_policy,
    policy_from_dict,
)


def summary(n: int, post: list[float] | None = None, answers: tuple = (), gold: bool = False,
            risk: float | None = None) -> SubjectSummary:
    return SubjectSummary(n_counted=n, posterior=None if post is None else np.array(post),
                          expected_risk=risk, answers=answers, is_gold=gold)


def test_first_rule_that_fires_wins() -> None:
    s = summary(10, [0.001, 0.999], answers=(1, 1, 1))
    assert RetirementPolicy([PosteriorAbove(0.99), MaxClassifications(10)]).decide(s) == \
        "consensus"
    assert RetirementPolicy([MaxClassifications(10), PosteriorAbove(0.99)]).decide(s) == "limit"
    assert RetirementPolicy([FirstKAgree(3), RiskBelow(0.01)]).decide(s) == "agreement"
    assert RetirementPolicy([RiskBelow(0.01), FirstKAgree(3)]).decide(s) == "low_risk"
    assert RetirementPolicy([]).decide(s) is None


def test_rules_fire_only_when_they_should() -> None:
    assert not PosteriorAbove(0.99).fires(summary(3, [0.5, 0.5]))
    assert PosteriorAbove(0.99, answer=0).fires(summary(3, [0.995, 0.005]))
    assert not PosteriorAbove(0.99, answer=1).fires(summary(3, [0.995, 0.005]))
    assert not PosteriorAbove(0.9).fires(summary(3))
    assert RiskBelow(0.05).fires(summary(3, [0.97, 0.03]))
    assert not RiskBelow(0.02).fires(summary(3, [0.97, 0.03]))
    # The box engine supplies expected_risk directly (no posterior).
    assert RiskBelow(0.5).fires(summary(3, risk=0.2))
    assert not RiskBelow(0.1).fires(summary(3, risk=0.2))
    assert not MaxClassifications(5).fires(summary(4))
    assert MaxClassifications(5).fires(summary(5))
    assert not FirstKAgree(3).fires(summary(2, answers=(1, 1)))
    assert not FirstKAgree(3).fires(summary(3, answers=(1, 0, 1)))
    assert FirstKAgree(3).fires(summary(4, answers=(2, 2, 2, 0)))


def test_min_guard_blocks_the_rules_after_it_only() -> None:
    s = summary(2, [0.0, 1.0], answers=(1, 1))
    assert RetirementPolicy([MinClassifications(3), PosteriorAbove(0.9)]).decide(s) is None
    assert RetirementPolicy([PosteriorAbove(0.9), MinClassifications(3)]).decide(s) == \
        "consensus"
    assert RetirementPolicy([MinClassifications(2), PosteriorAbove(0.9)]).decide(s) == \
        "consensus"


def test_gold_never_retires_through_a_policy() -> None:
    policy = RetirementPolicy([MaxClassifications(1), PosteriorAbove(0.5)])
    assert policy.decide(summary(100, [0.0, 1.0], gold=True)) is None
    est = ConsensusEstimator(2, policy=policy, half_trust=0.0)  # max:1 counts every newcomer
    for i in range(5):
        d = est.add_answer("gold-1", f"v{i}", 1, gold=1)
        assert d.retired is None
    d = est.add_answer("plain", "v0", 1)
    assert d.retired == "limit" and d.newly_retired


def test_policy_json_round_trip_and_string() -> None:
    policy = parse_policy("min:3, posterior[1]:0.99=detected, posterior[0]:0.996=rejected,"
                          "risk:0.01, agree:4, max:30")
    assert [type(r) for r in policy.rules] == [MinClassifications, PosteriorAbove,
                                               PosteriorAbove, RiskBelow, FirstKAgree,
                                               MaxClassifications]
    assert policy.rules[1] == PosteriorAbove(0.99, answer=1, reason="detected")
    data = json.loads(json.dumps(policy.to_dict()))
    assert policy_from_dict(data) == policy
    assert parse_policy(str(policy)) == policy
    assert parse_policy("limit:7").rules == (MaxClassifications(7),)
    assert parse_policy("none").rules == ()


@pytest.mark.parametrize("bad", ["posterior", "risk:abc", "banana:3", "agree:1.5",
                                 "posterior[x]:0.9"])
def test_bad_policy_strings_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="bad policy rule"):
        parse_policy(bad)


def test_unknown_rule_type_in_json() -> None:
    with pytest.raises(ValueError, match="unknown retirement rule type"):
        policy_from_dict({"rules": [{"type": "nope"}]})
