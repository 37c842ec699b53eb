"""The machine over a whole two-question tree (T0 smooth / featured, T1 edge-on / clockwise /
anticlockwise for the featured), retired by the whole workflow: per-question labels masked by the
reach of their question, a question the machine is not trained on left to humans (its answer neither
given nor counted), machine retirement only once every required task is settled, mirror swaps wired
into every CNN built and reused, and the dashboard saying which questions the machine answers."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from classifications.models import Classification
from live import engine as engine_lib
from live.services import apply_pending, rebuild_hot_state
from machine import agents, evaluation, pretraining, training, training_data
from machine.config import machine_settings, settings_of, validate_active_learning
from projects.models import Subject, SubjectWorkflowState
from tests.machine.conftest import TREE_TASKS, vote_tree

pytestmark = pytest.mark.django_db


def _machine_rows(workflow):
    return Classification.objects.filter(workflow=workflow, volunteer__machine_agent__workflow=workflow)


def test_each_question_learns_only_from_the_subjects_that_reach_it(machine_tree_workflow) -> None:
    workflow = machine_tree_workflow()
    assert agents.machine_heads(workflow) == (("T0", 2), ("T1", 3))
    assert agents.mirror_swaps(workflow) == {"T1": [[1, 2]]}
    vote_tree(workflow, n_volunteers=6)
    apply_pending(workflow.pk)
    ids, labels = training_data.training_set(workflow)
    assert len(ids) >= 10 and set(labels) == {"T0", "T1"} and labels["T1"].shape == (len(ids), 3)
    posteriors = dict(SubjectWorkflowState.objects.filter(subject_id__in=ids, workflow=workflow).values_list("subject_id", "posterior"))
    masked = np.isnan(labels["T1"]).any(axis=1)
    assert not np.isnan(labels["T0"]).any()  # the first question is always reached
    for i, subject_id in enumerate(ids):
        posterior = posteriors[subject_id]
        reach = posterior["T0"][1]  # T1 is reached through "features or disk"
        assert posterior["@risk"]["T1"]["reach"] == pytest.approx(reach)  # the engine's own reach
        assert masked[i] == (reach < 0.5)
        assert labels["T0"][i] == pytest.approx(posterior["T0"])
        if not masked[i]:
            assert labels["T1"][i] == pytest.approx(posterior["T1"])
    assert masked.any() and (~masked).any()
    # The bar is a setting, per question too.
    _, everything = training_data.training_set(workflow, min_reach=0.0)
    assert not np.isnan(everything["T1"]).any()
    workflow.active_learning = {**workflow.active_learning, "questions": {"T1": {"label_min_reach": 0.0}}}
    workflow.save()
    assert not np.isnan(training_data.training_set(workflow)[1]["T1"]).any()
    # A subject's gold is gold for the questions its experts answered: T1 only for disks.
    gold = training_data.gold_sets(workflow)
    assert len(gold["T1"][0]) < len(gold["T0"][0]) and set(gold["T1"][0]) < set(gold["T0"][0])
    assert training_data.gold_set(workflow)[0] == gold["T0"][0]


def test_per_question_settings_are_validated() -> None:
    assert validate_active_learning({"questions": {"T1": {"machine_threshold": 0.9, "label_min_reach": 0.3}}}) == []
    assert validate_active_learning({"questions": []}) == ["questions must be an object {question key: {setting: value}}"]
    errors = validate_active_learning({"questions": {"T1": {"machine_threshold": 2, "epochs": 3}}, "label_min_reach": -1})
    assert "questions.T1.machine_threshold must be a number between 0 and 1" in errors
    assert any("questions.T1: unknown setting 'epochs'" in e for e in errors)
    assert "label_min_reach must be a number between 0 and 1" in errors
    from machine.config import question_settings

    cfg = settings_of({"machine_threshold": 0.97, "questions": {"T1": {"machine_threshold": 0.9}}})
    assert question_settings(cfg, "T1")["machine_threshold"] == 0.9 and question_settings(cfg, "T0")["machine_threshold"] == 0.97


class _TreeOracle:
    """The real tiny CNN, except that it is 0.97 sure of each galaxy's T0 and 0.94 of a disk's T1
    (a smooth galaxy's T1 is a coin flip): these tests are about what the platform does with it."""

    def __init__(self, real, seen: dict) -> None:
        self.real, self.seen = real, seen

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def predict_proba(self, images, tta: bool = True) -> dict:
        truth = {pk: m for pk, m in Subject.objects.filter(pk__in=self.seen["ids"]).values_list("pk", "metadata")}
        t0 = np.array([[0.97, 0.03] if truth[i]["#label"] == 0 else [0.03, 0.97] for i in self.seen["ids"]])
        t1 = np.array([np.eye(3)[truth[i]["#t1"]] * 0.91 + 0.03 if truth[i]["#t1"] is not None else [0.34, 0.33, 0.33]
                       for i in self.seen["ids"]])
        return {"T0": t0, "T1": t1}

    def mc_predict(self, images, n_samples: int = 30, tta: bool = True, seed: int = 0) -> dict:
        return {key: np.repeat(p[None], n_samples, axis=0) for key, p in self.predict_proba(images).items()}


@pytest.fixture
def tree_oracle(monkeypatch) -> None:
    seen: dict = {"ids": []}
    load_images, load_classifier = training_data.load_images, agents.load_classifier

    def recording_load_images(subject_ids, image_size):
        seen["ids"] = list(subject_ids)
        return load_images(subject_ids, image_size)

    monkeypatch.setattr(training_data, "load_images", recording_load_images)
    monkeypatch.setattr(agents, "load_classifier", lambda version: _TreeOracle(load_classifier(version), seen))


def _metrics_by_question(accuracies: dict[str, Iterator[float]]):
    """A stand-in for ``evaluation.evaluate``: per question, the given gold accuracies, one per call."""

    def evaluate(classifier, workflow, cfg, gold=None, validation=None, key=None, **measured_on) -> dict:
        accuracy = next(accuracies[key])
        n = len(gold[0])
        return {"accuracy": accuracy, "balanced_accuracy": None, "ece": 0.05, "confusion": None,
                "n_gold_test": n, "n_confident": n, "confident_accuracy": accuracy, "n_retire_gold": n, "retire_accuracy": accuracy,
                "n_retired_gold": n, "retired_gold_accuracy": accuracy}

    return evaluate


def test_a_question_the_machine_is_not_trained_on_stays_with_humans(machine_tree_workflow, monkeypatch, tree_oracle) -> None:
    from dashboards.selectors import machine_questions

    workflow = machine_tree_workflow({"machine_threshold": 0.5, "min_gold_accuracy": 0.9, "min_retire_accuracy": 0.9})
    non_gold = list(SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).values_list("subject_id", flat=True))
    vote_tree(workflow, n_volunteers=8, subject_ids=non_gold[:14])  # the others wait for the machine
    apply_pending(workflow.pk)
    # T0 proven on gold, T1 a coin flip there: the gate opens for T0 alone (at v2: two stable versions).
    monkeypatch.setattr(evaluation, "evaluate", _metrics_by_question({"T0": iter([0.94, 0.95, 0.94]), "T1": iter([0.5] * 3)}))
    v1 = training.train_model_version(workflow.pk)
    assert agents.load_classifier(v1).mirror_swaps == {"T1": ((1, 2),)}  # the tree's swaps reach the CNN
    v2 = training.train_model_version(workflow.pk)
    v2.refresh_from_db()
    questions = v2.metrics["questions"]
    assert v2.is_trained and questions["T0"]["trained"] and not questions["T1"]["trained"], v2.metrics
    assert v2.metrics["warm_start"] and set(v2.gold_predictions_by_question) == {"T0", "T1"}
    assert v2.gold_predictions == v2.gold_predictions_by_question["T0"]

    rows = list(_machine_rows(workflow).filter(metadata__model_version=2))
    truth = dict(Subject.objects.filter(pk__in=[c.subject_id for c in rows]).values_list("pk", "metadata"))
    for c in rows:
        tasks = [a["task"] for a in c.annotations]
        assert set(c.metadata["question_probabilities"]) == {"T0", "T1"}
        if c.is_gold:  # every answer on its path, for the engine to learn the machine's skill on each question
            assert tasks == (["T0", "T1"] if truth[c.subject_id]["#label"] == 1 else ["T0"])
        else:  # T1's answer is never given: it stays with humans
            assert tasks == ["T0"] and c.counts
    apply_pending(workflow.pk)
    by_machine = set(SubjectWorkflowState.objects.filter(workflow=workflow, retirement_reason="machine").values_list("subject_id", flat=True))
    unvoted = non_gold[14:]
    unvoted_smooth = {s for s in unvoted if truth[s]["#label"] == 0}
    unvoted_disks = {s for s in unvoted if truth[s]["#label"] == 1}
    # A galaxy it vouches is smooth never reaches T1: retired. A disk's T1 is unsettled: it waits for humans.
    assert unvoted_smooth and unvoted_disks and unvoted_smooth <= by_machine and not unvoted_disks & by_machine
    from live.models import WorkflowAggregation
    from live.services import replay_log

    engine = replay_log(workflow, WorkflowAggregation.objects.get(workflow=workflow))
    machine = agents.machine_agent(workflow).volunteer_id
    assert all(engine.estimators["T1"].subject_n_counted(s) == 0 for s in unvoted_disks)
    assert engine.estimators["T1"].worker_state(machine)["n_gold"] > 0  # its T1 skill is learnt all the same
    assert rebuild_hot_state(workflow.pk).retirement_mismatches == []

    # The dashboard says what it answers, and why not the rest.
    said = {q["task"]: q for q in machine_questions(v2)}
    assert said["T0"]["answers"] and said["T0"]["text"].startswith("T0: answers: 95% on")
    assert not said["T1"]["answers"] and said["T1"]["text"].startswith("T1: gate not passed: 50% on") and "needs 90%" in said["T1"]["text"]
    # ... and the admin page's model table says it per question, beside the overall "trained".
    from django.contrib.auth import get_user_model
    from django.test import Client

    admin = get_user_model().objects.create_superuser("machine-admin", password="x")
    client = Client()
    client.force_login(admin)
    page = client.get(f"/projects/{workflow.project.slug}/workflows/{workflow.pk}/admin/").content.decode()
    assert '<li data-task="T0">T0: answers: 95% on' in page
    assert '<li data-task="T1">T1: gate not passed: 50% on' in page


def test_every_cnn_is_built_with_the_tree_mirror_swaps_and_reused_only_while_they_match(machine_tree_workflow) -> None:
    workflow = machine_tree_workflow({"pretrain_epochs": 1})
    pretraining.pretrain_machine(workflow.pk)
    cfg, heads = machine_settings(workflow), agents.machine_heads(workflow)
    trunk = pretraining.pretrained_classifier(workflow, cfg, heads)
    assert trunk is not None and trunk.mirror_swaps == {"T1": ((1, 2),)}
    vote_tree(workflow)
    apply_pending(workflow.pk)
    v1 = training.train_model_version(workflow.pk)
    assert v1.metrics["from_pretrained"] and agents.load_classifier(v1).mirror_swaps == {"T1": ((1, 2),)}
    # The swaps change (here: dropped): neither the trunk nor the serving version is reused.
    tasks = {**TREE_TASKS, "tasks": {**TREE_TASKS["tasks"], "T1": {k: v for k, v in TREE_TASKS["tasks"]["T1"].items() if k != "mirror_swaps"}}}
    workflow.tasks = tasks
    workflow.save()
    assert pretraining.pretrained_classifier(workflow, cfg, heads) is None
    v2 = training.train_model_version(workflow.pk, promote=False)
    assert not v2.metrics["warm_start"] and not v2.metrics["from_pretrained"] and agents.load_classifier(v2).mirror_swaps == {}


def _machine_answer(subject: int, answers: dict[str, int], *, counts: bool = True) -> engine_lib.LoggedClassification:
    return engine_lib.LoggedClassification(
        subject_id=subject, volunteer_id=7, annotations=[{"task": k, "value": v} for k, v in answers.items()], counts=counts, gold=None,
        machine_retire=True, machine_probabilities=[0.01, 0.99])


def _human(subject: int, volunteer: int, t0: int, t1: int | None = None) -> engine_lib.LoggedClassification:
    annotations = [{"task": "T0", "value": t0}] + ([] if t1 is None else [{"task": "T1", "value": t1}])
    return engine_lib.LoggedClassification(subject_id=subject, volunteer_id=volunteer, annotations=annotations, counts=True, gold=None)


def test_the_machine_retires_a_subject_only_when_every_required_task_is_settled() -> None:
    # The machine agent trusted from its first answer (half_trust 0): this is about which tasks it settles.
    engine = engine_lib.new_engine(TREE_TASKS, engine_lib.engine_config({"scope": "workflow", "half_trust": 0}, TREE_TASKS))
    # It vouches that 1 is a disk but says nothing of its arms (not trusted on T1): T1 is unsettled.
    applied = engine_lib.apply(engine, _machine_answer(1, {"T0": 1}))
    assert applied.retired_reason is None and not applied.stored["@risk"]["T1"]["settled"]
    # That 2 is smooth: the arms question is not reached.
    assert engine_lib.apply(engine, _machine_answer(2, {"T0": 0})).retired_reason == engine_lib.MACHINE_REASON
    # That 3 is a clockwise disk: both its answers, and nothing else is required.
    assert engine_lib.apply(engine, _machine_answer(3, {"T0": 1, "T1": 1})).retired_reason == engine_lib.MACHINE_REASON
    # Humans said 4's arms wind the other way: the posterior disagrees with its T1, no retirement.
    for volunteer in range(100, 105):
        engine_lib.apply(engine, _human(4, volunteer, 1, 2))
    assert engine_lib.retired_subjects(engine).get(4) is None
    assert engine_lib.apply(engine, _machine_answer(4, {"T0": 1, "T1": 1}, counts=False)).retired_reason is None
    # Humans settled 5's arms but split on its shape: vouching for the shape settles the subject.
    for volunteer, (t0, t1) in enumerate([(1, 1), (0, None)] * 5 + [(1, 1)], start=200):
        engine_lib.apply(engine, _human(5, volunteer, t0, t1))
    risks = {r.task: r for r in engine.aggregator.task_risks(5)}
    assert engine_lib.retired_subjects(engine).get(5) is None and not risks["T0"].settled and risks["T1"].risk < 0.01
    assert engine_lib.apply(engine, _machine_answer(5, {"T0": 1}, counts=False)).retired_reason == engine_lib.MACHINE_REASON
    # ... which its first answer (1) still is not: T1 has no answer.
    assert engine_lib.apply(engine, _machine_answer(1, {"T0": 1}, counts=False)).retired_reason is None

    # The first-question rule: its answer to the first question alone decides, as before.
    first = engine_lib.new_engine(TREE_TASKS, engine_lib.engine_config({"scope": "first_question", "half_trust": 0}, TREE_TASKS))
    assert engine_lib.apply(first, _machine_answer(1, {"T0": 1})).retired_reason == engine_lib.MACHINE_REASON


def test_a_machine_request_waits_for_the_rest_of_the_tree_and_a_newer_prediction_withdraws_it() -> None:
    """The machine asks to retire a disk whose arms are not yet settled: the request stands, and the
    human classification that settles the arms retires the subject as the machine's; a newer
    prediction that no longer asks withdraws it. Both survive a save and restore of the engine."""
    config = engine_lib.engine_config({"scope": "workflow", "half_trust": 0}, TREE_TASKS)
    with_request = engine_lib.new_engine(TREE_TASKS, config)
    without = engine_lib.new_engine(TREE_TASKS, config)
    assert engine_lib.apply(with_request, _machine_answer(1, {"T0": 1}, counts=False)).retired_reason is None
    assert with_request.machine_requests == {1: {"T0": 1}}
    with_request = engine_lib.WorkflowEngine.from_dict(engine_lib.WorkflowEngine.to_dict(with_request))  # saved and restored
    assert with_request.machine_requests == {1: {"T0": 1}}
    reasons = []
    for volunteer in range(300, 320):
        reasons.append(engine_lib.apply(with_request, _human(1, volunteer, 1, 1)).retired_reason)
        engine_lib.apply(without, _human(1, volunteer, 1, 1))
        if reasons[-1] is not None:
            break
    # Granted on a human's classification, before the humans alone retired the subject.
    assert reasons[-1] == engine_lib.MACHINE_REASON and reasons[:-1] == [None] * (len(reasons) - 1)
    assert engine_lib.retired_subjects(without).get(1) is None and with_request.machine_requests == {}

    # A newer prediction without the request withdraws it: the same humans then do not retire it early.
    withdrawn = engine_lib.new_engine(TREE_TASKS, config)
    engine_lib.apply(withdrawn, _machine_answer(2, {"T0": 1}, counts=False))
    newer = engine_lib.LoggedClassification(subject_id=2, volunteer_id=7, annotations=[{"task": "T0", "value": 1}], counts=False,
                                            gold=None, machine_retire=False, machine_probabilities=[0.2, 0.8])
    engine_lib.apply(withdrawn, newer)
    assert withdrawn.machine_requests == {}
    for volunteer in range(300, 300 + len(reasons)):
        assert engine_lib.apply(withdrawn, _human(2, volunteer, 1, 1)).retired_reason is None
