"""Sybil resistance by design (issue 25): a volunteer whose skill the engine does not know yet moves no
posterior and opens no retirement guard, however many such identities there are; an honest newcomer
helps as soon as it is right on gold; ``half_trust`` 0 is the engine before, which the same colluders
beat (so each test here could fail)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aggregation import defaults
from aggregation.core import confusion_from_counts, dirichlet_prior, established, trust, trusted_prior
from aggregation.estimator import ConsensusEstimator
from aggregation.retirement import parse_policy
from aggregation.workflow import WorkflowAggregator, WorkflowRetirement

TREE = {
    "T0": {"type": "single", "question": "Smooth, features, or star/artifact?",
           "answers": [{"label": "smooth", "next": None}, {"label": "features", "next": None},
                       {"label": "star or artifact", "next": None}]},
}
SMOOTH, FEATURES, ARTIFACT = range(3)


def established_crowd(half_trust: float | None = None, n_volunteers: int = 12) -> WorkflowAggregator:
    """A workflow whose volunteers have each been right on 6 gold subjects of 30 (and wrong on one)."""
    retirement = {} if half_trust is None else {"half_trust": half_trust}
    agg = WorkflowAggregator(TREE, retirement=retirement)
    truths = [SMOOTH, FEATURES, ARTIFACT] * 10
    for v in range(n_volunteers):
        for i in range(7):
            g = (v * 7 + i) % 30
            answer = truths[g] if i else (truths[g] + 1) % 3
            agg.add_classification(f"gold{g}", f"vol{v}", [{"task": "T0", "value": answer}], gold={"T0": truths[g]})
    return agg


def test_trust_and_the_trusted_prior_by_hand() -> None:
    assert trust(0.0, 3.0) == 0.0 and trust(3.0, 3.0) == 0.5 and trust(9.0, 3.0) == 0.75
    assert trust(0.0, 0.0) == 1.0 and established(0.0, 0.0) == 1.0  # half_trust 0: the engine before
    assert established(1.5, 3.0) == 0.5 and established(30.0, 3.0) == 1.0
    prior = dirichlet_prior(3, 0.7, 2.0)  # rows [1.4, 0.3, 0.3]
    np.testing.assert_allclose(trusted_prior(prior, 0.0), np.full((3, 3), 2.0 / 3))
    np.testing.assert_allclose(trusted_prior(prior, 0.5)[0], [0.5 * 1.4 + 1 / 3, 0.5 * 0.3 + 1 / 3, 0.5 * 0.3 + 1 / 3])
    # A newcomer's answer model says nothing of the truth: every row the same.
    newcomer = confusion_from_counts(np.zeros((3, 3)), prior, half_trust=3.0)
    np.testing.assert_allclose(newcomer, np.full((3, 3), 1 / 3))
    # Three answers' worth of record (all right on truth 0): prior half the crowd's, half even.
    counts = np.array([[3.0, 0, 0], [0, 0, 0], [0, 0, 0]])
    row = (counts[0] + trusted_prior(prior, 0.5)[0]) / 5.0
    np.testing.assert_allclose(confusion_from_counts(counts, prior, clip=None, half_trust=3.0)[0], row)


def test_fresh_identities_move_nothing_open_no_guard_and_spend_no_budget() -> None:
    agg = WorkflowAggregator(TREE)
    for n in range(200):  # five times the budget
        out = agg.add_classification("target", f"sybil{n}", [{"task": "T0", "value": ARTIFACT}])
        assert out.retired is None
    prior = agg.estimators["T0"].class_prior_
    np.testing.assert_allclose(agg.posterior("target", "T0"), prior, atol=1e-12)
    assert agg.n_established("target") == 0.0 and agg.n_counted("target") == 200
    # The engine before issue 25 (half_trust 0): the same colluders retire it on their answer.
    before = WorkflowAggregator(TREE, retirement={"half_trust": 0})
    for n in range(200):
        out = before.add_classification("target", f"sybil{n}", [{"task": "T0", "value": ARTIFACT}])
        if out.retired:
            break
    assert out.retired == "consensus:T0" and n + 1 <= defaults.BUDGET
    assert int(np.argmax(before.posterior("target", "T0"))) == ARTIFACT


@pytest.mark.parametrize("colluders", [3, 6, 12, defaults.BUDGET])
def test_colluders_cannot_retire_a_subject_against_established_volunteers(colluders: int) -> None:
    agg = established_crowd()
    for n in range(colluders):  # they come first, on a galaxy nobody has seen
        agg.add_classification("target", f"sybil{n}", [{"task": "T0", "value": ARTIFACT}])
    assert agg.retirement_reason("target") is None
    for v in range(12):  # then the crowd, who see a smooth galaxy
        out = agg.add_classification("target", f"vol{v}", [{"task": "T0", "value": SMOOTH}])
        if out.retired:
            break
    assert out.retired == "consensus:T0" and int(np.argmax(agg.posterior("target", "T0"))) == SMOOTH
    assert v + 1 == defaults.MIN_CLASSIFICATIONS  # the colluders did not delay it either
    # A refit weighs each identity by its record without this subject: one answer, no weight.
    agg.refit()
    assert int(np.argmax(agg.posterior("target", "T0"))) == SMOOTH

    if colluders < 6:
        return  # the engine before lost from six on (the fault run's six cookieless posts)
    # Before issue 25 the same colluders win: the subject retires on their answer.
    before = established_crowd(half_trust=0)
    for n in range(colluders):
        out = before.add_classification("target", f"sybil{n}", [{"task": "T0", "value": ARTIFACT}])
        if out.retired:
            break
    for v in range(12):
        if out.retired:
            break
        out = before.add_classification("target", f"vol{v}", [{"task": "T0", "value": SMOOTH}])
    assert out.retired is not None and int(np.argmax(before.posterior("target", "T0"))) == ARTIFACT


def test_colluders_among_the_crowd_never_flip_a_retirement() -> None:
    """Colluders interleaved with the crowd: the subject retires on the crowd's answer."""
    agg = established_crowd()
    crowd = iter(range(12))
    for n in range(defaults.BUDGET):
        agg.add_classification("target", f"sybil{n}", [{"task": "T0", "value": ARTIFACT}])
        if n % 10 == 9:  # one established volunteer in every eleven classifications
            out = agg.add_classification("target", f"vol{next(crowd)}", [{"task": "T0", "value": FEATURES}])
    while agg.retirement_reason("target") is None:
        out = agg.add_classification("target", f"vol{next(crowd)}", [{"task": "T0", "value": FEATURES}])
    assert out.retired.startswith("consensus") or out.retired == "limit"
    assert int(np.argmax(agg.posterior("target", "T0"))) == FEATURES


def test_honest_newcomers_help_once_right_on_gold() -> None:
    agg = established_crowd()
    est = agg.estimators["T0"]
    # Three newcomers, each right on three gold subjects: half trusted, established in the guard.
    for v in range(3):
        for g in range(3):
            agg.add_classification(f"gold{g}", f"new{v}", [{"task": "T0", "value": [SMOOTH, FEATURES, ARTIFACT][g]}],
                                   gold={"T0": [SMOOTH, FEATURES, ARTIFACT][g]})
        assert est.trust(f"new{v}") == pytest.approx(0.5) and est.evidence(f"new{v}") == 3.0
    prior = est.class_prior_
    for v in range(3):
        out = agg.add_classification("target", f"new{v}", [{"task": "T0", "value": FEATURES}])
    assert agg.n_established("target") == 3.0
    assert agg.posterior("target", "T0")[FEATURES] > 0.9 > prior[FEATURES]
    # A fourth, still unknown, adds nothing; an established volunteer settles it.
    before = agg.posterior("target", "T0")
    agg.add_classification("target", "stranger", [{"task": "T0", "value": FEATURES}])
    np.testing.assert_allclose(agg.posterior("target", "T0"), before, atol=1e-12)
    out = agg.add_classification("target", "vol0", [{"task": "T0", "value": FEATURES}])
    assert out.retired == "consensus:T0"


def test_the_first_question_policy_guard_counts_established_volunteers() -> None:
    est = ConsensusEstimator(2, policy=parse_policy(defaults.FIRST_QUESTION_POLICY))
    for n in range(100):
        assert est.add_answer("x", f"sybil{n}", 1).retired is None  # max:40 sits behind min:3
    assert est.summary("x").n_established == 0.0 and est.summary("x").n_counted == 100
    chunked = ConsensusEstimator(2, policy=parse_policy(defaults.FIRST_QUESTION_POLICY))
    chunked.partial_fit([("x", f"sybil{n}", 1) for n in range(100)], chunk_size=17)
    assert chunked.retired() == {} and chunked.subject_n_established("x") == 0.0


def test_states_and_settings_stored_before_issue_25_replay_as_they_were_applied() -> None:
    """A config without half_trust was applied trusting everyone at once, and must replay so."""
    old = ConsensusEstimator(2, half_trust=0.0, policy=parse_policy("min:3,posterior:0.99"))
    for n in range(3):
        old.add_answer("x", f"v{n}", 1)
    data = json.loads(json.dumps(old.to_dict()))
    del data["config"]["half_trust"], data["n_established"]
    restored = ConsensusEstimator.from_dict(data)
    assert restored.half_trust == 0.0 and restored.subject_n_established("x") == 3.0
    for n in range(3, 8):  # newcomers still move it, and it retires on the same answer (the sixth)
        a, b = old.add_answer("x", f"v{n}", 1), restored.add_answer("x", f"v{n}", 1)
        np.testing.assert_allclose(a.posterior, b.posterior, atol=1e-15)
        assert a.retired == b.retired
    assert restored.retirement_reason("x") == "consensus"
    state = old.subject_state("x")
    del state["n_established"]
    restored.load_subject_state("y", state)
    assert restored.subject_n_established("y") == state["n_counted"]
    stored = WorkflowRetirement.from_settings({}, TREE, "T0").to_dict()
    assert stored["half_trust"] == defaults.HALF_TRUST
    del stored["half_trust"]
    assert WorkflowRetirement.from_dict(stored).half_trust == 0.0
    assert WorkflowAggregator(TREE, retirement=WorkflowRetirement.from_dict(stored)).estimators["T0"].half_trust == 0.0


def test_bad_half_trust_is_a_field_error() -> None:
    from aggregation.workflow import SettingsError

    for bad in (-1, "lots", True, 1e9):
        with pytest.raises(SettingsError) as error:
            WorkflowRetirement.from_settings({"half_trust": bad}, TREE, "T0")
        assert any(p.startswith("half_trust:") for p in error.value.problems)
    with pytest.raises(ValueError):
        ConsensusEstimator(2, half_trust=-1)
