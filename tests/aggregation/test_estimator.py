"""The stateful estimator: counting, serialisation, exact replay, vectorised replay, refit."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.estimator import ConsensusEstimator, replay_log
from aggregation.retirement import RetirementPolicy, SubjectSummary, parse_policy
from aggregation.simulate import simulate_crowd


def small_crowd(seed: int = 0, n_classes: int = 3, n: int = 600):
    sim = simulate_crowd(n_subjects=60, n_workers=15, answers_per_subject=n // 60,
                         n_classes=n_classes, gold_fraction=0.1, seed=seed)
    return sim


def feed(est: ConsensusEstimator, sim, *, refit_at: tuple[int, ...] = ()) -> None:
    for g_subject, truth in sim.gold.items():
        est.set_gold(g_subject, truth)
    for i, (s, w, a) in enumerate(zip(sim.subjects.tolist(), sim.workers.tolist(),
                                      sim.answers.tolist(), strict=True)):
        est.add_answer(s, w, a, counts=(i % 17 != 5))
        if i in refit_at:
            est.refit()


def assert_same_state(a: ConsensusEstimator, b: ConsensusEstimator) -> None:
    assert a.subjects == b.subjects and a.workers == b.workers
    np.testing.assert_allclose(a.predict_proba(), b.predict_proba(), rtol=0, atol=1e-12)
    for w in a.workers:
        np.testing.assert_allclose(a.confusion(w), b.confusion(w), rtol=0, atol=1e-12)
    assert a.retired() == b.retired()


def test_non_counting_classifications_do_not_move_the_subject() -> None:
    est = ConsensusEstimator(2, policy=parse_policy("max:2"), half_trust=0.0)  # max:2 counts every newcomer
    est.add_answer("s", "a", 1)
    before = est.subject_state("s")
    d = est.add_answer("s", "b", 1, counts=False)
    assert not d.counted and d.retired is None
    assert est.subject_state("s") == before
    d = est.add_answer("s", "c", 0)
    assert d.retired == "limit" and est.subject_state("s")["n_counted"] == 2
    after = est.subject_state("s")
    d = est.add_answer("s", "d", 1)  # the subject is retired: the answer does not count
    assert not d.counted and est.subject_state("s") == after


def test_gold_answers_teach_even_when_they_do_not_count() -> None:
    est = ConsensusEstimator(2, learn=("gold",))
    est.add_answer("g", "v", 1, gold=1, counts=False)
    assert est.worker_state("v")["counts"] == [[0.0, 0.0], [0.0, 1.0]]
    assert est.subject_state("g")["n_counted"] == 0


@pytest.mark.parametrize("learn", [("gold",), ("gold", "consensus"), ("consensus", "retired"),
                                   ("gold", "consensus", "retired")])
def test_serialisation_and_log_replay_rebuild_the_state_exactly(learn) -> None:
    sim = small_crowd()
    est = ConsensusEstimator(3, learn=learn, policy=parse_policy("min:3,risk:0.05,max:8"))
    feed(est, sim, refit_at=(250, 400))
    est.add_prior("machine-only", [0.2, 0.5, 0.3])
    # JSON, bytes and the log all give the same posteriors to 1e-12.
    from_json = ConsensusEstimator.from_dict(json.loads(json.dumps(est.to_dict())))
    assert_same_state(est, from_json)
    assert_same_state(est, ConsensusEstimator.from_bytes(est.to_bytes()))
    rebuilt = replay_log(est.to_dict()["config"], json.loads(json.dumps(est.log())))
    assert_same_state(est, rebuilt)
    assert rebuilt.to_dict()["retired"] == est.to_dict()["retired"]
    # A restored estimator carries on exactly like the original.
    for e in (est, from_json):
        e.add_answer("new", "w1", 2)
        e.add_answer("new", "w2", 2)
    assert_same_state(est, from_json)


def test_per_key_state_round_trip_like_redis() -> None:
    sim = small_crowd(1)
    est = ConsensusEstimator(3, policy=parse_policy("risk:0.05"))
    feed(est, sim)
    est.refit()  # moves the shared priors too
    fresh = ConsensusEstimator(3, policy=parse_policy("risk:0.05"))
    fresh.load_shared_state(json.loads(json.dumps(est.shared_state())))
    for w in est.workers:
        fresh.load_worker_state(w, json.loads(json.dumps(est.worker_state(w))))
    for s in est.subjects:
        fresh.load_subject_state(s, json.loads(json.dumps(est.subject_state(s))))
    assert_same_state(est, fresh)
    state = est.subject_state(est.subjects[0])
    assert set(state) == {"log_posterior", "n_counted", "n_established", "answers", "workers", "gold",
                          "retired"}
    assert set(est.worker_state(est.workers[0])) == {"counts", "n_answers", "n_gold"}
    # The next answer gives the same decision in both.
    s = next(x for x in est.subjects if est.retirement_reason(x) is None)
    d1, d2 = est.add_answer(s, "z", 1), fresh.add_answer(s, "z", 1)
    np.testing.assert_allclose(d1.posterior, d2.posterior, atol=1e-12)


@pytest.mark.parametrize("learn", [("gold",), ("gold", "consensus", "retired")])
def test_vectorised_replay_in_chunks_of_one_is_add_answer(learn) -> None:
    sim = small_crowd(2)
    policy = parse_policy("min:2,posterior:0.97,agree:4,max:7")
    seq = ConsensusEstimator(3, learn=learn, policy=policy)
    vec = ConsensusEstimator(3, learn=learn, policy=policy)
    for est in (seq, vec):
        for g_subject, truth in sim.gold.items():
            est.set_gold(g_subject, truth)
    table = {"subject": sim.subjects, "worker": sim.workers, "answer": sim.answers}
    m_seq = seq.partial_fit(table, drop_retired=True).counted_
    m_vec = vec.partial_fit(table, chunk_size=1, drop_retired=True).counted_
    np.testing.assert_array_equal(m_seq, m_vec)
    assert_same_state(seq, vec)
    assert len(seq.retired()) > 10


def test_vectorised_gold_learning_is_exact_with_big_chunks() -> None:
    sim = small_crowd(3)
    policy = parse_policy("risk:0.02,max:9")
    seq = ConsensusEstimator(3, learn=("gold",), policy=policy)
    vec = ConsensusEstimator(3, learn=("gold",), policy=policy)
    for est in (seq, vec):
        for g_subject, truth in sim.gold.items():
            est.set_gold(g_subject, truth)
    table = {"subject": sim.subjects, "worker": sim.workers, "answer": sim.answers}
    seq.partial_fit(table)
    vec.partial_fit(table, chunk_size=256)
    np.testing.assert_allclose(seq.predict_proba(), vec.predict_proba(), atol=1e-9)
    assert seq.retired() == vec.retired()


def test_fit_recovers_truth_and_refit_warm_starts() -> None:
    sim = simulate_crowd(n_subjects=600, n_workers=40, answers_per_subject=5, n_classes=2,
                         mean_accuracy=0.7, concentration=2.0, seed=4)
    labels = ConsensusEstimator(2).fit_predict({"task": sim.subjects, "worker": sim.workers,
                                                "label": sim.answers})
    est = ConsensusEstimator(2).fit({"task": sim.subjects, "worker": sim.workers,
                                     "label": sim.answers})
    assert labels == dict(zip(est.subjects, est.predict().tolist(), strict=True))
    truth = np.array([sim.truth[s] for s in est.subjects])
    acc = (est.predict() == truth).mean()
    votes = np.zeros((len(est.subjects), 2))
    index = {s: i for i, s in enumerate(est.subjects)}
    for s, a in zip(sim.subjects.tolist(), sim.answers.tolist(), strict=True):
        votes[index[s], a] += 1
    assert acc > (votes.argmax(1) == truth).mean() + 0.03
    iters = est.n_iter_
    est.refit()
    assert est.n_iter_ < iters  # warm start: already at the fixed point


def test_bad_answers_are_rejected_without_changing_state() -> None:
    est = ConsensusEstimator(2)
    est.add_answer("s", "v", 1)
    before = est.to_dict()
    with pytest.raises(ValueError):
        est.add_answer("s", "v", 2)
    with pytest.raises(ValueError):
        est.partial_fit([("s", "v", 0), ("s", "w", 5)])
    with pytest.raises(ValueError):
        est.set_gold("s", 7)
    with pytest.raises(ValueError):
        est.add_answer("new", "new-volunteer", 1, gold=3)
    assert est.to_dict() == before
    est.set_gold("g", 0)
    before = est.to_dict()
    with pytest.raises(ValueError):
        est.add_answer("g", "other-volunteer", 1, gold=1)
    assert est.to_dict() == before


def test_machine_agent_learns_its_confusion_from_gold_and_retired() -> None:
    # Every volunteer trusted at once: the humans' answers move x, whose posterior is then credited.
    est = ConsensusEstimator(2, learn=("gold", "retired"), policy=parse_policy("max:3"), half_trust=0.0)
    for i in range(10):  # the machine says 1 on every gold "0": a biased classifier
        est.add_answer(f"g{i}", "cnn", 1, gold=0)
    assert est.confusion("cnn")[0, 1] > 0.8
    for i in range(3):
        est.add_answer("x", f"human{i}", 1)
    assert est.retirement_reason("x") == "limit"
    assert est.worker_state("human0")["counts"][1][1] > 0.5


@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 4), st.integers(0, 2)),
                min_size=1, max_size=80),
       st.sampled_from(["min:2,posterior:0.9", "agree:2,max:4", "risk:0.2", "none"]),
       st.integers(1, 9))
@settings(max_examples=40, deadline=None)
def test_chunked_replay_agrees_with_add_answer_on_gold_only_learning(rows, policy, chunk):
    table = [(f"s{s}", f"w{w}", a) for s, w, a in rows]
    results = []
    for chunk_size in (None, chunk):
        est = ConsensusEstimator(3, learn=("gold",), policy=parse_policy(policy))
        est.set_gold("s0", 1)
        mask = est.partial_fit(table, chunk_size=chunk_size, drop_retired=True).counted_
        results.append((mask, est))
    (m1, e1), (m2, e2) = results
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_allclose(e1.predict_proba(), e2.predict_proba(), atol=1e-9)
    assert e1.retired() == e2.retired()


def test_custom_rules_fall_back_to_one_answer_at_a_time() -> None:
    @dataclass(frozen=True)
    class EvenCount:
        reason: str = "even"

        def fires(self, summary: SubjectSummary) -> bool:
            return summary.n_counted == 2

        def to_dict(self) -> dict:
            return {"type": "even"}

    est = ConsensusEstimator(2, policy=RetirementPolicy([EvenCount()]))
    mask = est.partial_fit([("a", "x", 1), ("a", "y", 0), ("a", "z", 1)],
                           chunk_size=100).counted_
    assert mask.tolist() == [True, True, False]
    assert est.retired() == {"a": "even"}


def test_a_fitted_estimator_replays_from_its_log() -> None:
    sim = small_crowd(5)
    est = ConsensusEstimator(3).fit({"subject": sim.subjects, "worker": sim.workers,
                                     "answer": sim.answers}, gold=dict(sim.gold))
    est.add_answer("late", "w3", 1)
    rebuilt = replay_log(est.to_dict()["config"], est.log())
    assert_same_state(est, rebuilt)


def test_machine_prediction_as_a_prior_multiplies_the_posterior() -> None:
    est = ConsensusEstimator(2, class_prior=[0.5, 0.5], initial_skill=0.8, learn=(), half_trust=0.0)
    np.testing.assert_allclose(est.add_prior("x", [0.2, 0.8]), [0.2, 0.8], atol=1e-15)
    d = est.add_answer("x", "v", 0)  # P("0"|0) = 0.8: odds 0.25 × 4 = 1
    np.testing.assert_allclose(d.posterior, [0.5, 0.5], atol=1e-12)
    with pytest.raises(ValueError):
        est.add_prior("x", [1.0, 0.0])


@pytest.mark.parametrize("n_classes", [2, 4])
def test_refit_leaves_each_subjects_own_answers_out_of_the_skills_that_weigh_them(n_classes):
    """Volunteers seen on one subject only: their skill given the *other* subjects is the
    prior, so after a refit the subject's posterior is what the prior gives, however well
    the answers agree; plain EM lets them vouch for themselves and is more sure."""
    rows = [("lonely", w, 1) for w in ("a", "b", "c")]
    sim = small_crowd(seed=3, n_classes=n_classes)
    rows += list(zip(sim.subjects.tolist(), sim.workers.tolist(), sim.answers.tolist(),
                     strict=True))
    posteriors = {}
    for loo in (True, False):
        est = ConsensusEstimator(n_classes, learn_skill_prior=False, leave_one_out=loo,
                                 learn_class_prior=False)  # the prior's share, not the class's
        est.partial_fit(rows, chunk_size=100)
        est.refit()
        posteriors[loo] = est.predict_proba(["lonely"])[0]
    prior = ConsensusEstimator(n_classes, learn_class_prior=False).confusion("stranger")[:, 1]
    expected = prior**3 / (prior**3).sum()
    np.testing.assert_allclose(posteriors[True], expected, atol=1e-9)
    risk = 1 - expected[1]
    assert 1 - posteriors[False][1] < 0.9 * risk  # plain EM: the answers vouch for themselves
    # The skills themselves are plain MAP EM either way; fit (offline) never leaves out.
    est = ConsensusEstimator(n_classes, leave_one_out=True)
    est.fit(rows)
    assert 1 - est.predict_proba(["lonely"])[0][1] < 0.9 * risk


def test_leave_one_out_refit_replays_exactly_from_the_log() -> None:
    sim = small_crowd(seed=4, n_classes=3)
    est = ConsensusEstimator(3, policy=parse_policy("min:3,risk:0.01"))
    feed(est, sim, refit_at=(150, 400))
    again = replay_log(est.to_dict()["config"], est.log())
    np.testing.assert_allclose(again.predict_proba(), est.predict_proba(), atol=1e-12)
    assert again.retired() == est.retired()
    assert ConsensusEstimator.from_dict(json.loads(json.dumps(est.to_dict()))).leave_one_out


def test_an_answer_that_is_never_true_does_not_become_a_class_of_ambiguous_subjects() -> None:
    """Four answers, the last never true, but ambiguous subjects draw it (a galaxy that is hard to
    call gets "star or artifact" votes). Unconstrained Dawid–Skene made answer 3 a cluster of those
    subjects (prior 0.11, 84% right where plurality is 95%); a class the crowd does not name when it
    is true keeps only its pseudo-count share (``batch.unidentified_classes``)."""
    rng = np.random.default_rng(1)
    n, workers, per_subject = 600, 100, 30
    truth = (rng.random(n) < 0.3).astype(int)
    right, artifact_share = rng.uniform(0.45, 0.85, n), rng.uniform(0.0, 0.6, n)
    s = np.repeat(np.arange(n), per_subject)
    w = np.concatenate([rng.choice(workers, per_subject, replace=False) for _ in range(n)])
    wrong = np.where(rng.random(s.size) < artifact_share[s], 3, np.where(rng.random(s.size) < 0.1, 2, 1 - truth[s]))
    a = np.where(rng.random(s.size) < right[s], truth[s], wrong)
    votes = np.zeros((n, 4), int)
    np.add.at(votes, (s, a), 1)
    plurality = (votes.argmax(axis=1) == truth).mean()
    est = ConsensusEstimator(4).fit({"subject": s, "worker": w, "answer": a})
    assert est.class_prior_[3] < 0.05
    assert (est.predict() == truth).mean() >= plurality - 0.05


def test_subject_weights_keep_answers_on_subjects_without_the_question_out_of_the_skills() -> None:
    """A refit weighs each subject's answers by ``subject_weights``: answers on subjects weighted 0
    (a spiral-arms question on a galaxy that is surely smooth) teach no skill and no class share."""
    rows = [(f"disk{i}", w, 0) for i in range(20) for w in ("a", "b", "c")]
    noise = [(f"smooth{i}", "a", i % 2) for i in range(60)] + [(f"smooth{i}", "b", (i + 1) % 2) for i in range(60)]
    weights = {f"smooth{i}": 0.0 for i in range(60)}
    skills = {}
    for weighted in (False, True):
        est = ConsensusEstimator(2)
        est.partial_fit(rows + noise)
        est.refit(subject_weights=weights if weighted else None)
        skills[weighted] = est.confusion("a")[0, 0]
        if weighted:
            with pytest.raises(ValueError, match="replaying its workflow"):
                replay_log(est.to_dict()["config"], est.log())
    assert skills[True] > 0.9 > skills[False]  # the noise on the smooth galaxies no longer drags "a" down
