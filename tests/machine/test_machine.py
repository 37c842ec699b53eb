"""The machine in the loop in-process, on real PostgreSQL and Redis and the real (tiny) CNN:
versions and their gold metrics, promotion only when better, predictions through the exactly-once
log, machine retirement only once trained and above the threshold, priorities from the acquisition
score with an exploration share, roll-back, the retraining trigger, and the settings' validation."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from django.core.cache import cache

from classifications.models import Classification, Volunteer
from classifications.selectors import next_subjects
from classifications.services import submit_classification
from live.services import apply_pending, rebuild_hot_state
from machine import (
    agents,
    evaluation,
    gold_gate,
    heartbeat,
    pretraining,
    priorities,
    promotion,
    training,
    training_data,
)
from machine.config import DEFAULTS, machine_settings, settings_of, validate_active_learning
from machine.models import ModelVersion
from machine.selectors import ancestor_versions, current_model, model_versions
from ml import GalaxyClassifier
from projects.models import AdminAction, SubjectWorkflowState
from tests.machine.conftest import vote

pytestmark = pytest.mark.django_db
State = ModelVersion.State


def _metrics(accuracies: Iterator[float]):
    """A stand-in for ``evaluation.evaluate``: the given gold accuracies, one per call."""

    def evaluate(classifier, workflow, cfg, gold=None, validation=None, **measured_on) -> dict:
        accuracy = next(accuracies)
        n = len(gold[0]) if gold else 12
        return {"accuracy": accuracy, "balanced_accuracy": None, "ece": 0.05, "confusion": [[1, 0], [0, 1]],
                "n_gold_test": n, "n_confident": n, "confident_accuracy": accuracy, "n_retire_gold": n, "retire_accuracy": accuracy,
                "n_retired_gold": n, "retired_gold_accuracy": accuracy}

    return evaluate


class _Oracle:
    """The real tiny CNN, except that its predictions are 0.97 sure of the truth: a tiny CNN trained for
    one epoch is useless (the engine rightly learns so from gold and ignores it), and these tests are
    about what the platform does with a good machine."""

    def __init__(self, real, seen: dict) -> None:
        self.real, self.seen = real, seen

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def predict_proba(self, images, tta: bool = True) -> dict:
        from projects.models import Subject

        labels = {pk: m["#label"] for pk, m in Subject.objects.filter(pk__in=self.seen["ids"]).values_list("pk", "metadata")}
        return {"T0": np.array([[0.97, 0.03] if labels[i] == 0 else [0.03, 0.97] for i in self.seen["ids"]])}

    def mc_predict(self, images, n_samples: int = 30, tta: bool = True, seed: int = 0) -> dict:
        return {"T0": np.repeat(self.predict_proba(images)["T0"][None], n_samples, axis=0)}


@pytest.fixture
def oracle(monkeypatch) -> None:
    seen: dict = {"ids": []}
    load_images, load_classifier = training_data.load_images, agents.load_classifier

    def recording_load_images(subject_ids, image_size):
        seen["ids"] = list(subject_ids)
        return load_images(subject_ids, image_size)

    monkeypatch.setattr(training_data, "load_images", recording_load_images)
    monkeypatch.setattr(agents, "load_classifier", lambda version: _Oracle(load_classifier(version), seen))


def _folds_big_enough(gold_ids, min_gold_subjects: int) -> bool:
    """Whether, in two calibration folds, each fold's complement has ``min_gold_subjects`` (the
    subjects' ids, and so their folds, depend on what the database created before)."""
    folds = [evaluation.gold_fold(i, 2) for i in gold_ids]
    return min(folds.count(0), folds.count(1)) >= min_gold_subjects


def _retired_by(workflow, reason: str) -> set[int]:
    return set(
        SubjectWorkflowState.objects.filter(workflow=workflow, status="retired", retirement_reason=reason).values_list("subject_id", flat=True)
    )


def _machine_rows(workflow):
    return Classification.objects.filter(workflow=workflow, volunteer__machine_agent__workflow=workflow)


def test_a_training_run_is_a_version_with_gold_metrics_and_the_first_is_promoted(machine_workflow) -> None:
    workflow = machine_workflow()
    vote(workflow)
    apply_pending(workflow.pk)
    human_retired = training_data.human_retired_count(workflow)
    assert human_retired >= 20
    posteriors_before = dict(SubjectWorkflowState.objects.filter(workflow=workflow).values_list("subject_id", "posterior"))

    version = training.train_model_version(workflow.pk, reason="test")

    version.refresh_from_db()
    assert version.version == 1 and version.state == State.PROMOTED and version.promoted_at is not None
    m = version.metrics
    assert m["n_train"] + m["n_validation"] == human_retired and m["n_validation"] >= 1
    # The 14 gold subjects all calibrate the CNN's probabilities, and all measure it, out of fold.
    gold_ids = set(SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=True).values_list("subject_id", flat=True))
    assert m["n_gold_test"] == 14 and m["n_gold_calibration"] == (14 if _folds_big_enough(gold_ids, 4) else 0)
    assert m["n_gold_calibration"] == 0 or (m["calibration"]["n"] == 14 and m["calibration"]["scale"] > 0)
    assert set(version.gold_predictions) == {str(i) for i in gold_ids}  # kept for its successors' retirement rule
    assert all(sum(p) == pytest.approx(1.0) for p in version.gold_predictions.values())
    # Alone (no ancestor yet), what it would retire is what it alone is sure of.
    assert m["n_retire_gold"] == m["n_retired_gold"] == m["n_confident"]
    assert m["retire_accuracy"] == m["retired_gold_accuracy"] == m["confident_accuracy"]
    assert agents.load_classifier(version).calibration["T0"] == m["calibration"]  # stored with the weights
    assert 0.0 <= m["validation_accuracy"] <= 1.0 and 0.0 <= m["comparison_accuracy"] <= 1.0
    assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["ece"] <= 1.0
    assert np.asarray(m["confusion"]).shape == (2, 2) and np.asarray(m["confusion"]).sum() == m["n_gold_test"]
    assert m["trained"] is False and "needed for stability" in m["trained_reason"]  # one version is not "stable"
    assert current_model(workflow) == version and list(model_versions(workflow)) == [version]
    assert AdminAction.objects.filter(workflow=workflow, action="promote", details__version=1).exists()

    # Promotion predicted every unretired subject (gold included), none counted (not trained yet).
    active = set(SubjectWorkflowState.objects.filter(workflow=workflow, status="active").values_list("subject_id", flat=True))
    rows = list(_machine_rows(workflow))
    assert {c.subject_id for c in rows} == active and len(rows) == len(active)
    assert all(c.metadata["model_version"] == 1 and len(c.metadata["probabilities"]) == 2 for c in rows)
    assert not any(c.counts or c.metadata["machine_retire"] for c in rows)

    # They go through the log exactly once; uncounted, they leave the posteriors alone.
    report = apply_pending(workflow.pk)
    assert report.applied == len(rows) and report.retired == 0
    assert all(c.applied_seq is not None for c in _machine_rows(workflow))
    assert apply_pending(workflow.pk).applied == 0
    after = dict(SubjectWorkflowState.objects.filter(workflow=workflow).values_list("subject_id", "posterior"))
    for state in SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False):
        assert after[state.subject_id] == posteriors_before[state.subject_id]
    # ... but its answers on gold subjects teach the engine the machine's confusion matrix.
    from live import engine as engine_lib
    from live.models import WorkflowAggregation
    from live.services import replay_log

    agent = agents.machine_agent(workflow)
    engine = replay_log(workflow, WorkflowAggregation.objects.get(workflow=workflow))
    assert engine.estimators["T0"].worker_state(agent.volunteer_id)["n_gold"] == 14
    assert engine_lib.skill_bits(engine, agent.volunteer_id) is not None
    assert rebuild_hot_state(workflow.pk).retirement_mismatches == []


def test_promotion_requires_improvement(machine_workflow, monkeypatch) -> None:
    workflow = machine_workflow()
    vote(workflow)
    apply_pending(workflow.pk)
    # v1: 0.80 (promoted: nothing to compare with); v2: 0.70 against v1's 0.80 now: rejected;
    # v3: 0.85 against 0.80: promoted.
    monkeypatch.setattr(evaluation, "evaluate", _metrics(iter([0.80, 0.70, 0.80, 0.85, 0.80])))
    v1 = training.train_model_version(workflow.pk)
    v2 = training.train_model_version(workflow.pk)
    v2.refresh_from_db()
    assert v2.state == State.REJECTED and v2.parent == v1 and v2.metrics["compared_with"]["accuracy"] == 0.80
    assert current_model(workflow) == v1
    v3 = training.train_model_version(workflow.pk)
    v3.refresh_from_db()
    assert v3.state == State.PROMOTED and v3.parent == v1 and current_model(workflow) == v3
    assert v3.metrics["warm_start"] is True
    assert promotion.is_better({"accuracy": 0.9, "ece": 0.04}, {"accuracy": 0.9, "ece": 0.05})
    assert not promotion.is_better({"accuracy": 0.9, "ece": 0.05}, {"accuracy": 0.9, "ece": 0.05})
    assert not promotion.is_better({"accuracy": None}, {"accuracy": 0.5})
    # Gold and validation subjects together decide when both versions were measured on them.
    assert promotion.is_better({"accuracy": 0.8, "comparison_accuracy": 0.86}, {"accuracy": 0.85, "comparison_accuracy": 0.84})
    # Where both were measured, log loss decides: surer where right beats one point more accurate.
    assert promotion.is_better({"comparison_accuracy": 0.83, "comparison_log_loss": 0.35},
                              {"comparison_accuracy": 0.84, "comparison_log_loss": 0.38})
    assert not promotion.is_better({"comparison_accuracy": 0.90, "comparison_log_loss": 0.40},
                                  {"comparison_accuracy": 0.84, "comparison_log_loss": 0.38})
    # Only a trained version may retire: it beats an untrained one, and an untrained one never
    # replaces it, whatever their log losses; between equals, log loss decides.
    assert promotion.is_better({"comparison_log_loss": 0.37, "trained": True}, {"comparison_log_loss": 0.35, "trained": False})
    assert not promotion.is_better({"comparison_log_loss": 0.33, "trained": False}, {"comparison_log_loss": 0.35, "trained": True})
    assert promotion.is_better({"comparison_log_loss": 0.33, "trained": True}, {"comparison_log_loss": 0.35, "trained": True})
    # With the paired difference measured, worse within the tolerance (in standard errors) passes.
    near = {"log_loss_difference": {"mean": 0.004, "standard_error": 0.003, "n": 700}, "trained": True}
    assert promotion.is_better(near, {"trained": True}, tolerance=2.0)
    assert not promotion.is_better(near, {"trained": True}, tolerance=1.0)
    assert not promotion.is_better(near, {"trained": True})
    assert not promotion.is_better(near | {"trained": False}, {"trained": True}, tolerance=2.0)
    assert promotion.log_loss_difference(np.array([0.2, 0.4, 0.3]), np.array([0.1, 0.2, 0.3])) == pytest.approx(
        {"mean": 0.1, "standard_error": 0.1 / np.sqrt(3), "n": 3})
    held = [i for i in range(1000) if training_data.is_held_out(i, 0.2)]
    assert 150 < len(held) < 250 and held == [i for i in range(1000) if training_data.is_held_out(i, 0.2)]


def _losses(per_call: Iterator[np.ndarray]):
    """A stand-in for ``evaluation.evaluate`` scoring each call's version with the given per-subject
    log losses on the comparison subjects (and a gold accuracy no version is "trained" at)."""

    def evaluate(classifier, workflow, cfg, gold=None, validation=None, **measured_on) -> dict:
        losses = next(per_call)
        return {"accuracy": 0.5, "ece": 0.05, "n_gold_test": 12, "n_confident": 0, "confident_accuracy": None,
                "n_retire_gold": 0, "retire_accuracy": None, "n_retired_gold": 0, "retired_gold_accuracy": None,
                "comparison_accuracy": 0.5, "comparison_log_loss": float(losses.mean()),
                evaluation.COMPARISON_LOSSES: losses}

    return evaluate


@pytest.mark.parametrize(("tolerance", "promoted"), [(2.0, [True, True, False]), (0.0, [True, False, False])])
def test_promotion_tolerates_noise_but_not_a_real_loss(machine_workflow, monkeypatch, tolerance, promoted) -> None:
    workflow = machine_workflow({"promotion_tolerance": tolerance})
    vote(workflow)
    apply_pending(workflow.pk)
    rng = np.random.default_rng(0)
    v1_losses = rng.exponential(0.35, 800)
    # v2: 0.003 nats worse on average, paired noise of 0.1 (standard error 0.0035): within noise.
    noise = rng.normal(0.0, 0.1, 800)
    v2_losses = v1_losses + 0.003 + noise - noise.mean()
    # v3: 0.05 nats worse than whichever version serves: a real loss, rejected either way.
    serving_after_v2 = v2_losses if promoted[1] else v1_losses
    calls = iter([v1_losses, v2_losses, v1_losses, serving_after_v2 + 0.05, serving_after_v2])
    monkeypatch.setattr(evaluation, "evaluate", _losses(calls))
    versions = [training.train_model_version(workflow.pk) for _ in range(3)]
    for version in versions:
        version.refresh_from_db()
    assert [v.state != State.REJECTED for v in versions] == promoted
    assert current_model(workflow) == versions[1 if promoted[1] else 0]
    difference = versions[1].metrics["log_loss_difference"]
    assert difference["n"] == 800 and difference["mean"] == pytest.approx(0.003)
    assert difference["standard_error"] == pytest.approx(noise.std(ddof=1) / np.sqrt(800))
    assert evaluation.COMPARISON_LOSSES not in versions[1].metrics
    assert versions[2].metrics["log_loss_difference"]["mean"] == pytest.approx(0.05)


def test_trained_needs_proven_accuracy_where_the_machine_would_retire() -> None:
    cfg = settings_of({"enabled": True, "min_gold_accuracy": 0.8, "min_retire_accuracy": 0.97,
                       "min_gold_subjects": 20, "stable_versions": 2})

    def version(accuracy: float, retired_accuracy: float | None, retired_share: float, parent=None) -> ModelVersion:
        return ModelVersion(version=1 if parent is None else parent.version + 1, parent=parent, metrics={
            "accuracy": accuracy, "n_gold_test": 200, "n_retired_gold": round(retired_share * 200),
            "retired_gold_accuracy": retired_accuracy})

    good = version(0.84, 0.99, 0.4)
    assert gold_gate.trained_criterion(version(0.85, 0.98, 0.35, good), cfg)[0]
    # Good on average, but wrong too often where it would retire: not trained.
    trained, why = gold_gate.trained_criterion(version(0.86, 0.95, 0.5, good), cfg)
    assert not trained and "would have retired" in why
    # Too few gold subjects it would have retired (19 of 200) to tell.
    assert not gold_gate.trained_criterion(version(0.85, 1.0, 0.095, good), cfg)[0]
    # The replay already covers the ancestors' retirements: it is measured once, on the newest.
    assert gold_gate.trained_criterion(version(0.85, 0.99, 0.4, version(0.84, 0.9, 0.4)), cfg)[0]
    # Stable: a drop of more than the tolerance below an ancestor is not, a rise is.
    trained, why = gold_gate.trained_criterion(version(0.80, 0.99, 0.4, version(0.86, 0.99, 0.4)), cfg)
    assert not trained and "fell by more than" in why
    assert gold_gate.trained_criterion(version(0.86, 0.99, 0.4, version(0.80, 0.99, 0.4)), cfg)[0]
    # The overall bar (GZX's) still holds, for every version of the chain.
    assert not gold_gate.trained_criterion(version(0.79, 1.0, 0.4, good), cfg)[0]
    assert not gold_gate.trained_criterion(version(0.85, 1.0, 0.4, version(0.79, 1.0, 0.4)), cfg)[0]


def test_a_trained_line_stops_retiring_only_when_its_gold_record_shows_it_is_below_the_bar() -> None:
    cfg = settings_of({"enabled": True, "min_gold_accuracy": 0.8, "min_retire_accuracy": 0.97,
                       "min_gold_subjects": 20, "stable_versions": 2, "retire_stop_confidence": 0.9})

    def version(right: int, retired: int, parent=None, trained: bool = False) -> ModelVersion:
        return ModelVersion(version=1 if parent is None else parent.version + 1, parent=parent, metrics={
            "accuracy": 0.85, "n_gold_test": 325, "n_retired_gold": retired, "retired_gold_accuracy": right / retired,
            "trained": trained})

    untrained, trained = version(160, 161), version(160, 161, trained=True)
    # 156 of 161 right (0.969) is below 0.97: not enough to start ...
    started, why = gold_gate.trained_criterion(version(156, 161, parent=untrained), cfg)
    assert not started and "< 0.97" in why
    # ... but a line already trained keeps going: P(accuracy < 0.97) is 0.64, not 0.9.
    going, why = gold_gate.trained_criterion(version(156, 161, parent=trained), cfg)
    assert going and "was trained" in why
    # It stops once the record says so: 152 of 160 (0.95): P(below) 0.945.
    stopped, why = gold_gate.trained_criterion(version(152, 160, parent=trained), cfg)
    assert not stopped and "with probability 0.9" in why
    # The stricter the confidence, the longer a trained line is trusted.
    assert gold_gate.trained_criterion(version(152, 160, parent=trained), cfg | {"retire_stop_confidence": 0.99})[0]
    # The other conditions still hold for a trained line's successors.
    weak = ModelVersion(version=2, parent=trained, metrics={"accuracy": 0.7, "n_gold_test": 325, "n_retired_gold": 161,
                                                            "retired_gold_accuracy": 1.0})
    assert not gold_gate.trained_criterion(weak, cfg)[0]


def test_each_answer_must_prove_itself_on_the_gold_it_would_have_retired() -> None:
    cfg = settings_of({"enabled": True, "min_gold_accuracy": 0.8, "min_retire_accuracy": 0.97,
                       "min_gold_subjects": 20, "stable_versions": 1, "retire_stop_confidence": 0.9, "retire_record": "per_answer"})

    def version(by_answer: list[list[int]], parent=None, retire_answers=None) -> ModelVersion:
        n, right = sum(r[0] for r in by_answer), sum(r[1] for r in by_answer)
        metrics = {"accuracy": 0.85, "n_gold_test": 325, "n_retired_gold": n, "retired_gold_accuracy": right / n,
                   "retired_gold_by_answer": by_answer}
        if parent is None and retire_answers is not None:
            metrics |= {"trained": True, "retire_answers": retire_answers}
        return ModelVersion(version=1 if parent is None else parent.version + 1, parent=parent, metrics=metrics)

    # 149 of 150 smooth right, 28 of 30 featured (0.933): 177 of 180 (0.983) together, over the bar.
    skewed = version([[150, 149], [30, 28]])
    assert gold_gate.trained_criterion(skewed, cfg | {"retire_record": "overall"})[0]  # the default
    trained, why = gold_gate.trained_criterion(skewed, cfg)
    assert trained and gold_gate.certified_answers(skewed, cfg)[0] == [0]
    assert "answer 1: 28 of 30 right (0.933 < 0.97)" in why
    # Too few gold subjects retired with an answer: not that answer; with no answer certified, not trained.
    few = version([[19, 19], [30, 30]])
    assert gold_gate.certified_answers(few, cfg)[0] == [1]
    trained, why = gold_gate.trained_criterion(version([[19, 19], [30, 28]]), cfg)
    assert not trained and "answer 0: 19 of 19 right, 20 needed" in why
    # Hysteresis per answer: an answer the parent retired with stays until its record shows it is below.
    parent = version([[150, 149], [30, 30]], retire_answers=[0, 1])
    assert parent.retire_answers == [0, 1]
    assert gold_gate.certified_answers(version([[150, 149], [34, 33]], parent), cfg)[0] == [0, 1]  # 0.971, P(below) small
    kept = version([[150, 149], [40, 38]], parent)  # 0.95 but P(below 0.97) = 0.80 <= 0.9
    assert gold_gate.certified_answers(kept, cfg)[0] == [0, 1]
    assert gold_gate.certified_answers(version([[150, 149], [40, 36]], parent), cfg)[0] == [0]  # P(below) 0.99
    # ... while one the parent did not retire with starts only at the bar.
    assert gold_gate.certified_answers(version([[150, 149], [40, 38]], version([[150, 149], [30, 30]], retire_answers=[0])), cfg)[0] == [0]
    # A version measured before records per answer retires with any answer.
    assert ModelVersion(metrics={"trained": True}).retire_answers is None
    assert ModelVersion(metrics={"trained": False, "retire_answers": [0]}).retire_answers == []


def test_the_machine_retires_only_with_the_answers_its_gold_record_certifies(machine_workflow, monkeypatch, oracle) -> None:
    workflow = machine_workflow({"machine_threshold": 0.5, "min_gold_accuracy": 0.9, "min_retire_accuracy": 0.9, "min_gold_subjects": 1,
                                 "retire_record": "per_answer"})
    measured = _metrics(iter([0.94, 0.95, 0.94]))  # v1, v2 and v1 again (v2 is compared with it)

    def evaluate(*args, **kwargs) -> dict:  # answer 0 proven on gold, answer 1 wrong half the time
        return measured(*args, **kwargs) | {"retired_gold_by_answer": [[10, 10], [10, 5]]}

    some = list(SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).values_list("subject_id", flat=True))
    vote(workflow, n_volunteers=8, subject_ids=some[:14])  # the others wait for the machine
    apply_pending(workflow.pk)
    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    training.train_model_version(workflow.pk)
    v2 = training.train_model_version(workflow.pk)
    v2.refresh_from_db()
    assert v2.is_trained and v2.retire_answers == [0], v2.metrics
    rows = _machine_rows(workflow).filter(metadata__model_version=2, is_gold=False)
    answers = {c.subject_id: (c.annotations[0]["value"], c.metadata["machine_retire"]) for c in rows}
    assert {a for a, _ in answers.values()} == {0, 1}  # the oracle gives both answers
    assert all(retire == (answer == 0) for answer, retire in answers.values())
    apply_pending(workflow.pk)
    by_machine = _retired_by(workflow, "machine")
    assert by_machine and all(answers[s][0] == 0 for s in by_machine)


def test_what_it_would_retire_is_measured_by_the_rule_it_retires_by_over_its_line(machine_workflow) -> None:
    workflow = machine_workflow()
    cfg = settings_of({"enabled": True, "machine_threshold": 0.9})  # retirement_versions 2
    gold = ([11, 12, 13, 14, 15], np.array([0, 0, 1, 1, 0]))
    probs = np.array([[0.97, 0.03], [0.95, 0.05], [0.02, 0.98], [0.96, 0.04], [0.6, 0.4]])
    alone = evaluation.evaluate(None, workflow, cfg, gold, gold_probs=probs)
    assert alone["n_retire_gold"] == alone["n_confident"] == 4 and alone["retire_accuracy"] == 0.75  # 14 is wrong
    # With its parent: 12's mean falls below the threshold, 14's parent disagrees; 15 stays unsure.
    parent = {"11": [0.99, 0.01], "12": [0.8, 0.2], "13": [0.05, 0.95], "14": [0.1, 0.9], "15": [0.99, 0.01]}
    ruled = evaluation.evaluate(None, workflow, cfg, gold, gold_probs=probs, line=[(parent, True)])
    assert ruled["n_retire_gold"] == 2 and ruled["retire_accuracy"] == 1.0 and ruled["retire_share"] == 0.4
    assert ruled["n_confident"] == 4  # this version alone, for the record
    # The parent alone (no grandparent) retired nothing; so its line's retirements are this version's.
    assert ruled["n_retired_gold"] == 2 and ruled["retired_gold_accuracy"] == 1.0
    # A trained version before the parent, sure of 14 and 15 with the grandparent: the line retired
    # them then, with the answer it gave (15 wrongly); this version's own rule knows nothing of that.
    grandparent = {"11": [0.9, 0.1], "12": [0.5, 0.5], "13": [0.5, 0.5], "14": [0.05, 0.95], "15": [0.05, 0.95]}
    older = {"11": [0.5, 0.5], "12": [0.5, 0.5], "13": [0.5, 0.5], "14": [0.04, 0.96], "15": [0.02, 0.98]}
    line = [(grandparent, False), (older, True), (parent, True)]
    replayed = evaluation.evaluate(None, workflow, cfg, gold, gold_probs=probs, line=line)
    assert replayed["n_retire_gold"] == 2 and replayed["retire_accuracy"] == 1.0
    assert replayed["n_retired_gold"] == 4 and replayed["retired_gold_accuracy"] == 0.75  # 11, 13 now; 14, 15 then
    assert replayed["retired_gold_by_answer"] == [[1, 1], [3, 2]]  # 11 smooth; 13, 14 right and 15 wrong as featured
    assert gold_gate.replay_line(gold[0], line, cfg).tolist() == [-1, -1, -1, 1, 1]  # the line alone: 14, 15
    # An untrained version retires nothing, in the replay as on the platform: 15 stays, 14 waits for the parent.
    untrained = evaluation.evaluate(None, workflow, cfg, gold, gold_probs=probs, line=[(grandparent, False), (older, False), (parent, True)])
    assert untrained["n_retired_gold"] == 3 and untrained["retired_gold_accuracy"] == 1.0
    # An ancestor that never measured a subject (an older version): that subject cannot be retired.
    assert evaluation.evaluate(None, workflow, cfg, gold, gold_probs=probs, line=[({}, True)])["n_retire_gold"] == 0


def test_the_machine_retires_only_once_trained_above_its_threshold(machine_workflow, monkeypatch, oracle) -> None:
    # A threshold of 0.5 means every prediction is "sure": only the trained criterion holds it back.
    workflow = machine_workflow({"machine_threshold": 0.5, "min_gold_accuracy": 0.9, "min_retire_accuracy": 0.9},
                                policy="min:3,posterior:0.99,max:10")
    some = list(SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).values_list("subject_id", flat=True))
    vote(workflow, n_volunteers=8, subject_ids=some[:14])  # half the subjects retire by humans
    apply_pending(workflow.pk)
    assert len(_retired_by(workflow, "consensus")) >= 4
    monkeypatch.setattr(evaluation, "evaluate", _metrics(iter([0.94, 0.95, 0.94, 0.96, 0.95])))

    training.train_model_version(workflow.pk)  # v1: one version, not stable yet
    apply_pending(workflow.pk)
    assert _retired_by(workflow, "machine") == set()

    v2 = training.train_model_version(workflow.pk)  # v2: 0.95 and 0.94 >= 0.9, within 0.03: trained
    v2.refresh_from_db()
    assert v2.state == State.PROMOTED and v2.is_trained, v2.metrics
    active_before = SubjectWorkflowState.objects.filter(workflow=workflow, status="active")
    gold_ids = set(active_before.filter(is_gold=True).values_list("subject_id", flat=True))
    requests = {c.subject_id: c for c in _machine_rows(workflow).filter(metadata__model_version=2)}
    assert all(c.counts for c in requests.values())  # the first trained prediction counts ...
    assert {s for s, c in requests.items() if c.metadata["machine_retire"]} == set(requests) - gold_ids  # ... never gold
    apply_pending(workflow.pk)
    by_machine = _retired_by(workflow, "machine")
    assert by_machine and not by_machine & gold_ids
    for state in SubjectWorkflowState.objects.filter(subject_id__in=by_machine, workflow=workflow):
        assert int(np.argmax(state.posterior["T0"])) == requests[state.subject_id].annotations[0]["value"]
    # Subjects that humans had left undecided but the machine settled, and untouched ones, retire.
    assert len(by_machine) >= 10
    # The log replays to the same retirements, reasons included.
    assert rebuild_hot_state(workflow.pk).retirement_mismatches == []

    # v3 predicts again: never counted a second time for the same subject.
    training.train_model_version(workflow.pk)
    apply_pending(workflow.pk)
    counted = _machine_rows(workflow).filter(counts=True).values_list("subject_id", flat=True)
    assert len(counted) == len(set(counted))

    # A human cannot ask for a machine retirement through the metadata.
    left = SubjectWorkflowState.objects.filter(workflow=workflow, status="active", is_gold=False).first()
    if left is not None:
        submit_classification(Volunteer.objects.create(), {
            "workflow": workflow.pk, "subject": left.subject_id, "annotations": [{"task": "T0", "value": 0}],
            "idempotency_key": "human-asks-to-retire", "metadata": {"machine_retire": True},
        })
        apply_pending(workflow.pk)
        left.refresh_from_db()
        assert left.retirement_reason != "machine"


def test_no_machine_retirement_below_the_threshold_or_when_switched_off(machine_workflow, monkeypatch, oracle) -> None:
    for settings in ({"machine_threshold": 1.0}, {"machine_threshold": 0.5, "machine_retirement": False}):
        settings |= {"min_retire_accuracy": 0.9}
        workflow = machine_workflow(settings)
        vote(workflow)
        apply_pending(workflow.pk)
        monkeypatch.setattr(evaluation, "evaluate", _metrics(iter([0.94, 0.95, 0.94])))
        training.train_model_version(workflow.pk)
        v2 = training.train_model_version(workflow.pk)
        v2.refresh_from_db()
        assert v2.is_trained
        apply_pending(workflow.pk)
        assert _retired_by(workflow, "machine") == set()
        assert not _machine_rows(workflow).filter(metadata__machine_retire=True).exists()


def test_machine_retirement_needs_the_earlier_versions_sure_too(machine_workflow, monkeypatch, oracle) -> None:
    # Three versions in all: v2 is trained but has one ancestor, so it asks to retire nothing; v3 does.
    workflow = machine_workflow({"machine_threshold": 0.5, "min_retire_accuracy": 0.9, "retirement_versions": 3})
    some = list(SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).values_list("subject_id", flat=True))
    vote(workflow, n_volunteers=8, subject_ids=some[:14])  # the others wait for the machine
    apply_pending(workflow.pk)
    monkeypatch.setattr(evaluation, "evaluate", _metrics(iter([0.94, 0.95, 0.94, 0.96, 0.95])))
    training.train_model_version(workflow.pk)
    v2 = training.train_model_version(workflow.pk)
    v2.refresh_from_db()
    assert v2.is_trained and ancestor_versions(v2, 2) == [1]
    assert not _machine_rows(workflow).filter(metadata__machine_retire=True).exists()
    v3 = training.train_model_version(workflow.pk)
    assert ancestor_versions(v3, 2) == [2, 1] and ancestor_versions(v3, 1) == [2]
    assert _machine_rows(workflow).filter(metadata__machine_retire=True, metadata__model_version=3).exists()
    apply_pending(workflow.pk)
    assert _retired_by(workflow, "machine")


def test_sure_enough_averages_the_versions() -> None:
    # Sure now, unsure before: the mean (0.8) is below 0.9.
    assert not gold_gate.sure_enough(np.array([0.98, 0.02]), [[0.62, 0.38]], 0.9)
    assert gold_gate.sure_enough(np.array([0.98, 0.02]), [[0.9, 0.1]], 0.9)
    assert gold_gate.sure_enough(np.array([0.95, 0.05]), [], 0.9)  # one version: its own probability
    # The mean must give this version's answer, and every earlier prediction must be known.
    assert not gold_gate.sure_enough(np.array([0.45, 0.55]), [[0.99, 0.01]], 0.7)
    assert not gold_gate.sure_enough(np.array([0.99, 0.01]), [None], 0.5)


def test_priorities_follow_the_acquisition_score_with_an_exploration_share(machine_workflow) -> None:
    workflow = machine_workflow({"acquisition": "entropy", "exploration_share": 0.25})
    ids = list(SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).values_list("subject_id", flat=True))
    scores = {sid: float(i) for i, sid in enumerate(reversed(ids))}
    explored = priorities.update_priorities(workflow, scores, 0.25, seed=3)
    assert len(explored) == round(0.25 * len(ids))
    priority = dict(SubjectWorkflowState.objects.filter(workflow=workflow).values_list("subject_id", "priority"))
    exploited = sorted((s for s in ids if s not in explored), key=scores.get)
    assert [priority[s] for s in exploited] == sorted(priority[s] for s in exploited)  # rank order = score order
    # The volunteer's queue starts with the highest score (or an exploration subject placed above it;
    # gold subjects keep their own priority).
    served = [q.subject_id for q in next_subjects(workflow, Volunteer.objects.create(), 20)[0] if q.subject_id in scores]
    assert served[0] == max(exploited, key=scores.get) or served[0] in explored

    # Through a promotion: the stored acquisition scores rank the queue.
    vote(workflow)
    apply_pending(workflow.pk)
    version = training.train_model_version(workflow.pk)
    rows = _machine_rows(workflow).filter(metadata__model_version=version.version, is_gold=False)
    score = {c.subject_id: c.metadata["acquisition"] for c in rows}
    probs = {c.subject_id: c.metadata["probabilities"] for c in rows}
    for sid, p in probs.items():  # entropy of the prediction
        assert score[sid] == pytest.approx(-sum(x * np.log(x) for x in p if x > 0), abs=1e-9)
    explored = priorities.update_priorities(workflow, score, 0.25, seed=DEFAULTS["seed"] + version.version)
    priority = dict(SubjectWorkflowState.objects.filter(workflow=workflow).values_list("subject_id", "priority"))
    ranked = sorted((s for s in score if s not in explored), key=lambda s: (score[s], -s))
    assert [priority[s] for s in ranked] == sorted(priority[s] for s in ranked)


def test_bald_scores_come_from_monte_carlo_dropout(machine_workflow) -> None:
    workflow = machine_workflow({"acquisition": "bald", "mc_samples": 6})
    vote(workflow)
    apply_pending(workflow.pk)
    training.train_model_version(workflow.pk)
    scores = [c.metadata["acquisition"] for c in _machine_rows(workflow)]
    assert scores and all(s >= 0 for s in scores) and max(scores) > 0


def test_roll_back_serves_the_previous_version_and_is_logged(machine_workflow, monkeypatch) -> None:
    workflow = machine_workflow()
    assert promotion.roll_back(workflow) is None  # nothing serves yet
    vote(workflow)
    apply_pending(workflow.pk)
    monkeypatch.setattr(evaluation, "evaluate", _metrics(iter([0.80, 0.85, 0.80])))
    v1 = training.train_model_version(workflow.pk)
    v2 = training.train_model_version(workflow.pk)
    assert current_model(workflow) == v2
    back = promotion.roll_back(workflow, predict="no")
    assert back == v1 and current_model(workflow) == v1
    v2.refresh_from_db()
    assert v2.state == State.ROLLED_BACK
    assert AdminAction.objects.filter(workflow=workflow, action="roll_back", details={"from_version": 2, "to_version": 1}).exists()
    assert promotion.roll_back(workflow) is None  # v1 had no predecessor
    # An admin may promote the rolled-back version again.
    promotion.promote_model_version(v2, predict="no")
    assert current_model(workflow) == v2


def test_retraining_is_due_every_n_human_retirements(machine_workflow, django_capture_on_commit_callbacks) -> None:
    workflow = machine_workflow({"retrain_every": 5})
    assert not training.retraining_due(workflow)
    vote(workflow)
    apply_pending(workflow.pk)
    assert training.retraining_due(workflow)
    with django_capture_on_commit_callbacks() as callbacks:
        training.request_retraining(workflow, reason="manual")
    assert len(callbacks) == 1  # the training task, sent to the "ml" queue on commit
    assert AdminAction.objects.filter(workflow=workflow, action="retrain", details={"reason": "manual"}).exists()
    assert not training.retraining_due(workflow)  # already queued
    training.train_model_version(workflow.pk)
    assert not training.retraining_due(workflow)  # no new retirement since
    workflow.active_learning = {**workflow.active_learning, "enabled": False}
    workflow.save()
    assert training.check_retraining() == []


def test_the_trunk_is_pretrained_once_on_unlabelled_non_gold_images_and_the_first_version_starts_from_it(
        machine_workflow, django_capture_on_commit_callbacks) -> None:
    workflow = machine_workflow({"pretrain_epochs": 2})
    non_gold = SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).count()
    assert pretraining.pretraining_due(workflow)  # before any vote: the images are there
    with django_capture_on_commit_callbacks() as callbacks:
        assert training.check_retraining() == [workflow.pk]
    assert len(callbacks) == 1 and AdminAction.objects.filter(workflow=workflow, action="pretrain").exists()
    assert not pretraining.pretraining_due(workflow) and not training.retraining_due(workflow)  # its key holds both
    cache.delete(heartbeat.training_key(workflow.pk))  # as the task does when it ends

    agent = pretraining.pretrain_machine(workflow.pk)
    assert agent.pretraining["state"] == "done" and agent.pretraining["n_images"] == non_gold  # gold never seen
    assert len(agent.pretraining["loss"]) == 2 and agent.pretrained_model
    assert not pretraining.pretraining_due(workflow)  # once

    vote(workflow)
    apply_pending(workflow.pk)
    version = training.train_model_version(workflow.pk)
    assert version.metrics["from_pretrained"] and not version.metrics["warm_start"]
    cfg = machine_settings(workflow)
    pretrained = pretraining.pretrained_classifier(workflow, cfg, agents.machine_heads(workflow))
    assert pretrained is not None and pretrained.history[-1]["pretraining"]
    # A pretrained trunk of another image size is not used: the first version would start from random weights.
    assert pretraining.pretrained_classifier(workflow, cfg | {"image_size": 64}, agents.machine_heads(workflow)) is None
    assert training.check_retraining() == []  # nothing due: no new retirement, pretrained already


def test_a_new_image_size_before_the_first_version_calls_for_a_new_pretraining(machine_workflow) -> None:
    workflow = machine_workflow({"pretrain_epochs": 1})
    pretraining.pretrain_machine(workflow.pk)
    assert not pretraining.pretraining_due(workflow)
    workflow.active_learning = {**workflow.active_learning, "image_size": 48}
    workflow.save()
    assert pretraining.pretraining_due(workflow)
    assert pretraining.pretrain_machine(workflow.pk).pretraining["image_size"] == 48
    assert not pretraining.pretraining_due(workflow)


def test_a_failed_pretraining_is_recorded_not_retried_and_training_starts_from_random_weights(machine_workflow) -> None:
    workflow = machine_workflow({"pretrain_epochs": 1})
    state = SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).first()
    Path(state.subject.images.first().file.path).write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        pretraining.pretrain_machine(workflow.pk)
    agent = agents.machine_agent(workflow)
    assert agent.pretraining["state"] == "failed" and "cannot read image" in agent.pretraining["error"]
    assert not agent.pretrained_model and not pretraining.pretraining_due(workflow)


def test_a_lost_pretraining_is_tried_again_a_bounded_number_of_times(machine_workflow) -> None:
    workflow = machine_workflow({"pretrain_epochs": 1})
    agent = agents.machine_agent(workflow)
    size = machine_settings(workflow)["image_size"]
    # What a worker killed mid-run leaves: the "running" record of its try, and a key that lapses.
    agent.pretraining = {"state": "running", "attempts": 1, "image_size": size}
    agent.save(update_fields=["pretraining"])
    assert pretraining.pretraining_due(workflow)
    pretraining.request_pretraining(workflow)
    assert not pretraining.pretraining_due(workflow)  # queued or alive: not asked for twice
    cache.delete(heartbeat.training_key(workflow.pk))
    pretraining.pretrain_machine(workflow.pk)
    agent = agents.machine_agent(workflow)
    assert agent.pretraining["state"] == "done" and agent.pretraining["attempts"] == 2 and agent.pretrained_model
    # Lost as often as allowed: the next try records a failure without training, and nothing is asked again.
    agent.pretraining = {"state": "running", "attempts": pretraining.PRETRAINING_ATTEMPTS, "image_size": size}
    agent.pretrained_model = None
    agent.save(update_fields=["pretraining", "pretrained_model"])
    assert pretraining.pretraining_due(workflow)
    agent = pretraining.pretrain_machine(workflow.pk)
    assert agent.pretraining["state"] == "failed" and "lost 3 times" in agent.pretraining["error"]
    assert not agents.machine_agent(workflow).pretrained_model and not pretraining.pretraining_due(workflow)


def test_no_pretraining_when_switched_off_or_once_a_version_exists(machine_workflow) -> None:
    assert not pretraining.pretraining_due(machine_workflow({"pretrain_epochs": 0}))
    workflow = machine_workflow({"pretrain_epochs": 1})
    vote(workflow)
    apply_pending(workflow.pk)
    training.train_model_version(workflow.pk)
    assert not pretraining.pretraining_due(workflow)


def test_the_admin_lists_each_machine_with_its_pretrained_trunk(machine_workflow, admin_client) -> None:
    workflow = machine_workflow({"pretrain_epochs": 1})
    pretraining.pretrain_machine(workflow.pk)
    non_gold = SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).count()
    page = admin_client.get("/django-admin/machine/machineagent/")
    assert page.status_code == 200 and f"done ({non_gold} images, 32 px)" in page.content.decode()
    agent = agents.machine_agent(workflow)
    page = admin_client.get(f"/django-admin/machine/machineagent/{agent.pk}/change/")
    assert page.status_code == 200 and "pretrained_model" not in page.content.decode()


def test_settings_are_validated() -> None:
    assert validate_active_learning({}) == []
    assert settings_of({"acquisition": "entropy"})["machine_threshold"] == DEFAULTS["machine_threshold"]
    errors = validate_active_learning({"acquisition": "loudest", "exploration_share": 1.5, "retrain_every": 0, "colour": 1})
    assert len(errors) == 4
    with pytest.raises(ValueError):
        settings_of({"machine_threshold": "high"})
    assert validate_active_learning([]) == ["active_learning must be an object"]
    assert settings_of({})["enabled"] is False and settings_of({"acquisition": "bald"})["enabled"] is True
    assert settings_of({"acquisition": "bald", "enabled": False})["enabled"] is False


def test_a_batch_that_fails_to_commit_is_not_applied_twice_on_retry(machine_workflow, monkeypatch) -> None:
    """Found by bench/machine_loop.py: a deadlock (the machine's priority updates or a batch
    submission against the applier's posterior writes) aborted a batch after the engine cached in the
    worker had applied it; the task's retry reused that engine and counted the batch twice. Any failed
    commit must drop the cached engine."""
    from django.db import OperationalError

    import live.services as live_services
    from live import engine as engine_lib
    from live.models import WorkflowAggregation

    workflow = machine_workflow(policy="max:40")
    vote(workflow, n_volunteers=2, seed=1)
    apply_pending(workflow.pk)  # a cached engine now exists in this process
    vote(workflow, n_volunteers=2, seed=2)
    store = live_services._store_posteriors
    calls = {"n": 0}

    def deadlock_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("deadlock detected")
        return store(*args, **kwargs)

    monkeypatch.setattr(live_services, "_store_posteriors", deadlock_once)
    with pytest.raises(OperationalError):
        apply_pending(workflow.pk)
    apply_pending(workflow.pk)  # the task's retry
    engine, _ = live_services._current_engine(workflow, WorkflowAggregation.objects.get(workflow=workflow))
    replayed = live_services.replay_log(workflow, WorkflowAggregation.objects.get(workflow=workflow))
    for state in SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False):
        live_count = engine.estimators["T0"].subject_state(state.subject_id)["n_counted"]
        assert live_count == replayed.estimators["T0"].subject_state(state.subject_id)["n_counted"] == 4
        assert state.posterior["T0"] == pytest.approx(engine_lib.posterior_of(replayed, state.subject_id, "T0"), abs=1e-12)


def test_gold_folds_are_stable_and_calibration_falls_back_to_none_when_gold_is_scarce(machine_workflow) -> None:
    folds = [evaluation.gold_fold(i, 2) for i in range(1, 1001)]
    assert 400 < folds.count(0) < 600 and set(folds) == {0, 1}
    assert folds == [0 if training_data.is_held_out(i, 0.5) else 1 for i in range(1, 1001)]  # two folds: the old halves
    assert set(evaluation.gold_fold(i, 5) for i in range(1, 1001)) == {0, 1, 2, 3, 4}

    workflow = machine_workflow()
    gold = training_data.gold_set(workflow)
    classifier = GalaxyClassifier([("T0", 2)], image_size=32, channels=(8, 16, 32, 32), embedding_dim=32, seed=0)
    plain = classifier.predict_proba(training_data.load_images(gold[0], 32), tta=False)["T0"]
    fold_sizes = [[evaluation.gold_fold(i, 2) for i in gold[0]].count(f) for f in (0, 1)]
    enough = min(fold_sizes)  # the smaller fold is the larger one's complement
    assert enough >= 1
    for cfg in ({"calibration_folds": 2, "min_gold_subjects": enough + 1}, {"calibration_folds": 0}):
        probs = evaluation.calibrate_on_gold(classifier, gold, settings_of({"enabled": True} | cfg))
        assert classifier.calibration == {} and np.allclose(probs, plain, atol=1e-6)
    probs = evaluation.calibrate_on_gold(classifier, gold, settings_of({"enabled": True, "calibration_folds": 2, "min_gold_subjects": enough}))
    assert classifier.calibration["T0"]["n"] == 14 and probs.shape == (14, 2) and not np.allclose(probs, plain, atol=1e-4)

    assert settings_of({"enabled": True})["calibration_folds"] == 2
    assert validate_active_learning({"calibration_folds": 1}) == ["calibration_folds must be 0 (no calibration) or at least 2"]
    assert validate_active_learning({"calibration_share": 0.5}) == ["unknown key 'calibration_share'"]
    assert validate_active_learning({"promotion_tolerance": -1}) == ["promotion_tolerance must be a number >= 0"]
    assert validate_active_learning({"promotion_tolerance": 3}) == []


def test_the_migration_turns_a_calibration_share_into_folds_and_back(machine_workflow) -> None:
    from django.apps import apps

    from projects.models import Workflow

    migration = importlib.import_module("machine.migrations.0002_gold_predictions")
    off, on, untouched = machine_workflow(), machine_workflow(), machine_workflow()
    Workflow.objects.filter(pk=off.pk).update(active_learning={"enabled": True, "calibration_share": 0.0})
    Workflow.objects.filter(pk=on.pk).update(active_learning={"enabled": True, "calibration_share": 0.3, "epochs": 4})
    before = Workflow.objects.get(pk=untouched.pk).active_learning
    migration.share_to_folds(apps, None)
    settings = {w.pk: w.active_learning for w in Workflow.objects.filter(pk__in=[off.pk, on.pk, untouched.pk])}
    assert settings[off.pk] == {"enabled": True, "calibration_folds": 0}
    assert settings[on.pk] == {"enabled": True, "calibration_folds": 2, "epochs": 4}
    assert settings[untouched.pk] == before
    assert all(validate_active_learning(s) == [] for s in settings.values())
    migration.folds_to_share(apps, None)
    assert Workflow.objects.get(pk=off.pk).active_learning == {"enabled": True, "calibration_share": 0.0}
    assert Workflow.objects.get(pk=on.pk).active_learning["calibration_share"] == 0.5
