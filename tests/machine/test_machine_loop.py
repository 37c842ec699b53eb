"""The whole machine loop, tiny, with real worker processes: volunteers' votes are applied by an
"aggregation" worker; the retraining trigger sends a training run to an "ml" worker, which trains
the CNN (40 demo galaxies, 32 px, one epoch, from a trunk it pretrained on their images first),
promotes it and predicts; the aggregation worker then
applies the machine's predictions exactly once, and the log replays to the same state. Then the same
on the two-question tree, retired by the whole workflow."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache

from classifications.models import Classification
from live.services import rebuild_hot_state
from machine import agents, evaluation, heartbeat, training, training_data
from machine.models import ModelVersion
from machine.selectors import current_model
from projects.models import AdminAction, SubjectWorkflowState
from tests.machine.conftest import vote, vote_tree

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_votes_train_the_cnn_whose_predictions_enter_the_engine_exactly_once(machine_workflow, start_worker) -> None:
    # Trained as soon as it exists (no accuracy bar) and sure of every answer at a 0.5 threshold: the
    # retirement path runs whatever a one-epoch CNN learned.
    workflow = machine_workflow({"min_gold_accuracy": 0.0, "min_retire_accuracy": 0.0, "stable_versions": 1, "machine_threshold": 0.5,
                                 "pretrain_epochs": 1})
    aggregation = start_worker("aggregation", "aggregation")
    ml = start_worker("ml", "ml")
    # Before any vote, the beat sends the pretraining of the CNN's trunk on the images to the ml worker.
    assert training.check_retraining() == [workflow.pk]  # what beat runs every 30 s
    agent = agents.machine_agent(workflow)
    _wait(lambda: cache.get(heartbeat.training_key(workflow.pk)) is None, 90, "the trunk to be pretrained")
    agent.refresh_from_db()
    assert agent.pretraining["state"] == "done" and agent.pretrained_model
    n_votes = vote(workflow, n_volunteers=5)
    _wait(lambda: not Classification.objects.filter(applied_seq__isnull=True).exists(), 60, "the votes to be applied")
    assert training_data.human_retired_count(workflow) >= 4

    assert training.check_retraining() == [workflow.pk]
    _wait(lambda: current_model(workflow) is not None, 90, "model v1 to be trained and promoted")
    version = current_model(workflow)
    assert version.version == 1 and version.is_trained and version.metrics["from_pretrained"]
    # Every gold subject calibrates the CNN's probabilities and measures them, out of fold.
    gold_folds = [evaluation.gold_fold(i, 2) for i in SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=True).values_list("subject_id", flat=True)]
    calibrated = min(gold_folds.count(0), gold_folds.count(1)) >= 4  # each fold's complement: min_gold_subjects
    assert version.metrics["n_gold_test"] == 14 and version.metrics["n_gold_calibration"] == (14 if calibrated else 0)
    machine = Classification.objects.filter(workflow=workflow, volunteer__machine_agent__workflow=workflow)
    # The training task predicts in batches and clears its key when it ends; then the applier catches up.
    _wait(lambda: cache.get(heartbeat.training_key(workflow.pk)) is None and machine.exists()
          and not Classification.objects.filter(applied_seq__isnull=True).exists(), 60, "the machine's predictions to be applied")

    seqs = list(Classification.objects.filter(workflow=workflow).values_list("applied_seq", flat=True))
    assert len(seqs) == n_votes + machine.count() and len(set(seqs)) == len(seqs) and None not in seqs
    asked = set(machine.filter(metadata__machine_retire=True).values_list("subject_id", flat=True))
    by_machine = set(SubjectWorkflowState.objects.filter(workflow=workflow, retirement_reason="machine").values_list("subject_id", flat=True))
    assert by_machine <= asked
    report = rebuild_hot_state(workflow.pk)
    assert report.max_posterior_difference < 1e-9 and report.retirement_mismatches == []

    # On demand: a second version, warm-started from the first.
    training.request_retraining(workflow, reason="manual")
    _wait(lambda: cache.get(heartbeat.training_key(workflow.pk)) is None
          and ModelVersion.objects.filter(workflow=workflow, version=2).exists(), 90, "model v2")
    v2 = ModelVersion.objects.get(workflow=workflow, version=2)
    assert v2.parent_id == version.pk and v2.metrics["warm_start"] and v2.state in {"promoted", "rejected"}
    assert AdminAction.objects.filter(workflow=workflow, action="retrain").count() == 2
    assert aggregation.poll() is None and ml.poll() is None


def test_the_whole_tree_loop_answers_every_question_it_is_trained_on_exactly_once(machine_tree_workflow, start_worker) -> None:
    """The same loop on the two-question tree, retired by the whole workflow: one CNN head per
    question (T1's with its mirror swaps), gated question by question; the machine follows its own
    answers down the tree, and retires only where every required task is settled."""
    # Trained as soon as it exists on both questions (a 3-answer head of a one-epoch CNN is seldom 0.5
    # sure: T1's own threshold is 0), so the paths for answers to both run.
    workflow = machine_tree_workflow({"min_gold_accuracy": 0.0, "min_retire_accuracy": 0.0, "stable_versions": 1,
                                      "machine_threshold": 0.5, "questions": {"T1": {"machine_threshold": 0.0}}})
    aggregation = start_worker("aggregation", "aggregation")
    ml = start_worker("ml", "ml")
    n_votes = vote_tree(workflow, n_volunteers=5)
    _wait(lambda: not Classification.objects.filter(applied_seq__isnull=True).exists(), 60, "the votes to be applied")
    assert training_data.human_retired_count(workflow) >= 4

    assert training.check_retraining() == [workflow.pk]
    _wait(lambda: current_model(workflow) is not None, 120, "model v1 to be trained and promoted")
    version = current_model(workflow)
    questions = version.metrics["questions"]
    assert set(questions) == {"T0", "T1"} and all(q["trained"] for q in questions.values()), {k: q["trained_reason"] for k, q in questions.items()}
    assert questions["T1"]["n_gold_test"] < questions["T0"]["n_gold_test"] == 14  # T1's gold: the gold disks
    assert agents.load_classifier(version).mirror_swaps == {"T1": ((1, 2),)}
    machine = Classification.objects.filter(workflow=workflow, volunteer__machine_agent__workflow=workflow)
    _wait(lambda: cache.get(heartbeat.training_key(workflow.pk)) is None and machine.exists()
          and not Classification.objects.filter(applied_seq__isnull=True).exists(), 60, "the machine's predictions to be applied")

    # Down the tree as a volunteer goes: T1 only after "features or disk".
    for c in machine:
        tasks = [a["task"] for a in c.annotations]
        assert tasks == (["T0", "T1"] if c.annotations[0]["value"] == 1 else ["T0"]), c.annotations
    seqs = list(Classification.objects.filter(workflow=workflow).values_list("applied_seq", flat=True))
    assert len(seqs) == n_votes + machine.count() and len(set(seqs)) == len(seqs) and None not in seqs
    # A second version, warm-started (same heads, same swaps): its line may retire, by the whole tree.
    training.request_retraining(workflow, reason="manual")
    _wait(lambda: cache.get(heartbeat.training_key(workflow.pk)) is None
          and ModelVersion.objects.filter(workflow=workflow, version=2).exists()
          and not Classification.objects.filter(applied_seq__isnull=True).exists(), 120, "model v2")
    v2 = ModelVersion.objects.get(workflow=workflow, version=2)
    assert v2.metrics["warm_start"] and set(v2.metrics["questions"]) == {"T0", "T1"}
    asked = set(machine.filter(metadata__machine_retire=True).values_list("subject_id", flat=True))
    by_machine = SubjectWorkflowState.objects.filter(workflow=workflow, retirement_reason="machine")
    assert set(by_machine.values_list("subject_id", flat=True)) <= asked
    report = rebuild_hot_state(workflow.pk)
    assert report.max_posterior_difference < 1e-9 and report.retirement_mismatches == []
    assert aggregation.poll() is None and ml.poll() is None
