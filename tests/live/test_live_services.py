"""The live loop's services in-process (no worker): refits are logged and replayed, the rebuild
command, recovery, the ingest alarm, statistics snapshots, and retirement events."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from classifications.models import Classification, Volunteer
from classifications.services import submit_classification
from live import hot_state
from live.models import WorkflowAggregation
from live.services import (
    aggregation_of,
    apply_pending,
    check_ingest,
    rebuild_hot_state,
    refit_workflow,
    replay_log,
    snapshot_statistics,
)
from projects.models import SubjectWorkflowState

pytestmark = pytest.mark.django_db

# Where these tests need their new test volunteers to move posteriors and retire subjects: trusted from
# their first answer (half_trust 0, the engine before issue 25); Sybil resistance is tested in
# tests/aggregation/test_sybil.py.
TRUST_NEWCOMERS = {"half_trust": 0}


@pytest.fixture(autouse=True)
def _fresh_hot_state(clean_redis) -> None:
    """Each test starts with empty Redis state (its workflow ids may repeat across tests)."""


def _submit_votes(
    workflow, n_volunteers: int = 12, per_volunteer: int = 8, seed: int = 1,
    truth_of: Callable[[int], int] = lambda subject_id: subject_id % 2, skills: tuple[float, float] = (0.55, 0.95),
) -> None:
    rng = random.Random(seed)
    subject_ids = list(workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True))
    for _ in range(n_volunteers):
        volunteer = Volunteer.objects.create()
        skill = rng.uniform(*skills)
        for subject_id in rng.sample(subject_ids, min(per_volunteer, len(subject_ids))):
            truth = truth_of(subject_id)
            answer = truth if rng.random() < skill else 1 - truth
            annotations = [{"task": "T0", "value": answer}] + ([{"task": "T1", "value": 0}] if answer == 1 else [])
            submit_classification(volunteer, {
                "workflow": workflow.pk, "subject": subject_id, "idempotency_key": f"vote-{volunteer.pk}-{subject_id}",
                "annotations": [*annotations, {"task": "T2", "value": []}],
            })


@pytest.mark.parametrize("estimator", [{}, {"difficulty": True}], ids=["dawid_skene", "difficulty"])
def test_a_refit_is_logged_and_the_rebuild_repeats_it(make_workflow, estimator: dict) -> None:
    workflow = make_workflow(n=16, retirement={"scope": "first_question", "policy": "min:3,posterior:0.999,max:40", "estimator": estimator})
    _submit_votes(workflow)
    apply_pending(workflow.pk)
    before = {s.subject_id: s.posterior["T0"] for s in workflow.subject_states.all()}
    refit_workflow(workflow.pk)
    agg = WorkflowAggregation.objects.get(workflow=workflow)
    assert agg.refit_at_seq == [agg.applied_seq]
    after = {s.subject_id: s.posterior["T0"] for s in workflow.subject_states.all()}
    assert any(abs(before[k][0] - after[k][0]) > 1e-6 for k in before), "the refit should move posteriors"
    _submit_votes(workflow, n_volunteers=4, seed=2)  # more votes after the refit
    apply_pending(workflow.pk)
    hot_state.clear(workflow.pk)  # as if Redis had lost everything
    report = rebuild_hot_state(workflow.pk)
    assert report.max_posterior_difference == 0.0 and report.retirement_mismatches == []
    out = io.StringIO()
    call_command("rebuild_aggregation", "--workflow", str(workflow.pk), stdout=out)
    assert "live state matches the replay" in out.getvalue()


@pytest.mark.parametrize("learn", [True, False])
def test_a_refit_learns_how_common_each_answer_is_unless_told_not_to(make_workflow, learn: bool) -> None:
    # One subject in five is "featured" (1): with the platform's default the refit's class prior follows
    # the crowd; a workflow that sets learn_class_prior false keeps the uniform prior.
    retirement = {"scope": "first_question", "policy": "max:40"} | ({} if learn else {"estimator": {"learn_class_prior": False}})
    workflow = make_workflow(n=40, retirement=retirement)
    subject_ids = list(workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True))
    truth = {s: int(i % 5 == 0) for i, s in enumerate(subject_ids)}
    _submit_votes(workflow, n_volunteers=16, per_volunteer=12, seed=4, truth_of=truth.__getitem__, skills=(0.75, 0.95))
    apply_pending(workflow.pk)
    refit_workflow(workflow.pk)
    agg = aggregation_of(workflow)
    assert agg.engine_config["estimator"].get("learn_class_prior", True) is learn
    prior = replay_log(workflow, agg).aggregator.estimators["T0"].class_prior_
    if learn:
        # T0 has four answers; volunteers give only the first two (80:20), the other two stay rare.
        assert prior[0] > 0.6 and 0.1 < prior[1] < 0.35 and max(prior[2:]) < 0.05, prior
    else:
        np.testing.assert_allclose(prior, [0.25] * 4)


def test_a_task_locked_out_by_a_refit_leaves_the_next_vote_a_task_of_its_own(
    make_workflow, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    # The bench's stall: a task queued for votes that were already applied runs while a refit holds
    # the applier lock; once the refit is done, the next vote must still queue a task to apply it.
    from live import services, tasks

    queued: list[int] = []
    monkeypatch.setattr(tasks.apply_workflow, "delay", lambda workflow_id: queued.append(workflow_id))
    workflow = make_workflow(n=6)
    hot_state.clear_pending(workflow.pk)
    with django_capture_on_commit_callbacks(execute=True):
        _submit_votes(workflow, n_volunteers=1, per_volunteer=2)
    assert queued == [workflow.pk]
    apply_pending(workflow.pk)  # another worker's applier took these votes...
    assert hot_state.mark_pending(workflow.pk)  # ...before this submission's after-commit hook flagged them
    with services.applier_lock(workflow.pk, wait_seconds=5):  # a refit
        result = tasks.apply_workflow.apply(args=[workflow.pk]).get()  # the queued task runs now
    assert result["locked_out"] and result["applied"] == 0
    with django_capture_on_commit_callbacks(execute=True):
        _submit_votes(workflow, n_volunteers=1, per_volunteer=2, seed=8)
    assert queued == [workflow.pk, workflow.pk], "the vote after the refit queued no task: it would wait forever"
    apply_pending(workflow.pk)
    assert not Classification.objects.filter(workflow=workflow, applied_seq__isnull=True).exists()


def test_the_rebuild_command_reports_a_tampered_live_state(make_workflow) -> None:
    workflow = make_workflow(n=8, retirement=TRUST_NEWCOMERS)  # else new volunteers leave every posterior uniform
    _submit_votes(workflow, n_volunteers=6, per_volunteer=6)
    apply_pending(workflow.pk)
    state = workflow.subject_states.exclude(posterior=None).first()
    state.posterior = {**state.posterior, "T0": [0.25, 0.25, 0.25, 0.25]}
    state.save()
    with pytest.raises(CommandError, match="differs from the replay"):
        call_command("rebuild_aggregation", "--workflow", str(workflow.pk), stdout=io.StringIO())


def test_redis_state_behind_postgres_is_caught_up_before_applying(make_workflow) -> None:
    from live import services

    workflow = make_workflow(n=10)
    _submit_votes(workflow, n_volunteers=5, per_volunteer=5)
    apply_pending(workflow.pk)
    old_blob, old_version = hot_state.load_engine(workflow.pk)
    _submit_votes(workflow, n_volunteers=3, per_volunteer=5, seed=9)
    apply_pending(workflow.pk)
    # A worker died after committing batches but before saving the engine and the results: Redis
    # holds an older engine, and its results are incomplete. A new worker (no local copy) catches up.
    services._LOCAL_ENGINES.clear()
    hot_state.save_engine(workflow.pk, old_blob, old_version)
    hot_state.client().set(hot_state.key(workflow.pk, "results_version"), old_version.encode())
    _submit_votes(workflow, n_volunteers=3, per_volunteer=5, seed=10)
    apply_pending(workflow.pk)
    assert Classification.objects.filter(applied_seq__isnull=True).count() == 0
    assert hot_state.results_version(workflow.pk) == WorkflowAggregation.objects.get(workflow=workflow).state_version
    report = rebuild_hot_state(workflow.pk)
    assert report.max_posterior_difference == 0.0 and report.retirement_mismatches == []


def test_retirements_publish_events_and_leave_the_queue(make_workflow) -> None:
    workflow = make_workflow(n=6, retirement={"scope": "first_question", "policy": "agree:3"})
    volunteers = [Volunteer.objects.create() for _ in range(3)]
    subject_id = workflow.subject_states.first().subject_id
    for volunteer in volunteers:
        submit_classification(volunteer, {"workflow": workflow.pk, "subject": subject_id, "idempotency_key": f"agreement-{volunteer.pk}",
                                          "annotations": [{"task": "T0", "value": 0}, {"task": "T2", "value": []}]})
    # The test transaction never commits, so run what on_commit would have: apply directly.
    report = apply_pending(workflow.pk)
    assert report.applied == 3 and report.retired == 1
    state = SubjectWorkflowState.objects.get(workflow=workflow, subject_id=subject_id)
    assert state.status == "retired" and state.retirement_reason == "agreement" and state.retired_at is not None


def test_ingest_alarm_and_backlog(make_workflow, caplog) -> None:
    workflow = make_workflow(n=3)
    assert check_ingest(quiet_minutes=15)["quiet"] is True  # nothing ever arrived
    _submit_votes(workflow, n_volunteers=1, per_volunteer=3)
    Classification.objects.update(created_at=timezone.now() - timedelta(minutes=5))
    status = check_ingest(quiet_minutes=15)
    assert status["quiet"] is False and status["backlog"] == 3 and status["oldest_unapplied_seconds"] > 200
    assert "ALERT aggregation behind" in caplog.text
    apply_pending(workflow.pk)
    assert check_ingest(quiet_minutes=1)["quiet"] is True and "ALERT ingest quiet" in caplog.text


def test_statistics_snapshot(make_workflow) -> None:
    workflow = make_workflow(n=10, retirement={"scope": "first_question", "policy": "max:2", **TRUST_NEWCOMERS})
    _submit_votes(workflow, n_volunteers=4, per_volunteer=10)
    apply_pending(workflow.pk)
    stats = snapshot_statistics(workflow.pk).statistics
    assert stats["classifications"]["total"] == 40 and stats["classifications"]["unapplied"] == 0
    assert stats["retired_by_reason"] == {"limit": 10} and stats["retired"] == 10
    assert sum(stats["posterior_histogram"]["counts"]) == 10
    assert stats["volunteers_with_skill"] == 4


def test_each_classification_keeps_the_posterior_after_it(make_workflow) -> None:
    workflow = make_workflow(n=3, retirement=TRUST_NEWCOMERS)
    _submit_votes(workflow, n_volunteers=5, per_volunteer=3)
    apply_pending(workflow.pk)
    for state in workflow.subject_states.all():
        path = list(Classification.objects.filter(subject_id=state.subject_id).order_by("applied_seq").values_list("posterior_after", flat=True))
        assert len(path) == 5 and path[-1] == state.posterior
        assert len({round(p["T0"][0], 9) for p in path}) > 1  # the path moves vote by vote


def test_boxes_are_aggregated_with_the_questions(make_workflow) -> None:
    workflow = make_workflow(n=1)
    subject_id = workflow.subject_states.get().subject_id
    for i, dx in enumerate([0, 1, -1, 2]):
        volunteer = Volunteer.objects.create()
        marks = [{"tool": 0, "x": 20 + dx, "y": 30, "width": 25, "height": 20}]
        if i == 0:
            marks.append({"tool": 0, "x": 70, "y": 5, "width": 10, "height": 10})  # one volunteer's stray box
        submit_classification(volunteer, {"workflow": workflow.pk, "subject": subject_id, "idempotency_key": f"boxes-{volunteer.pk}",
                                          "annotations": [{"task": "T0", "value": 0}, {"task": "T2", "value": marks}]})
    apply_pending(workflow.pk)
    boxes = SubjectWorkflowState.objects.get(workflow=workflow, subject_id=subject_id).posterior["T2"]
    real = [o for o in boxes["objects"] if o["probability"] >= 0.5]
    assert len(real) == 1 and abs(real[0]["x"] - 20.5) < 1.5 and abs(real[0]["width"] - 25) < 1.5
    stray = [o for o in boxes["objects"] if o["x"] > 60]
    assert all(o["probability"] < 0.5 for o in stray)
    assert rebuild_hot_state(workflow.pk).max_posterior_difference == 0.0


def test_a_big_backlog_yields_the_worker_after_a_bounded_number_of_batches(make_workflow, monkeypatch) -> None:
    from live import services

    monkeypatch.setattr(services, "BATCH_SIZE", 5)
    monkeypatch.setattr(services, "MAX_BATCHES_PER_TASK", 2)
    workflow = make_workflow(n=8)
    _submit_votes(workflow, n_volunteers=4, per_volunteer=8)  # 32 classifications
    first = apply_pending(workflow.pk)
    assert (first.applied, first.more) == (10, True)
    while apply_pending(workflow.pk).more:
        pass
    assert Classification.objects.filter(applied_seq__isnull=True).count() == 0
    assert rebuild_hot_state(workflow.pk).max_posterior_difference == 0.0


def test_a_project_without_gold_retires_after_its_log_doubles_not_after_an_hour(make_workflow) -> None:
    """With the trust default (docs/sybil.md) nobody's skill is known in a new project without gold, so
    nothing retires on its votes alone; the growth refit (live.services.GROWTH_REFIT_MIN, then at every
    doubling of the log) teaches the engine who is reliable, and honest volunteers' subjects retire."""
    from live.services import GROWTH_REFIT_MIN, grown_workflows, refit_grown_workflow

    workflow = make_workflow(n=30, retirement={"scope": "first_question"})
    _submit_votes(workflow, n_volunteers=10, per_volunteer=12, seed=7, skills=(0.85, 0.97))
    apply_pending(workflow.pk)
    assert not workflow.subject_states.filter(status=SubjectWorkflowState.Status.RETIRED).exists()
    assert aggregation_of(workflow).applied_seq == 120 < GROWTH_REFIT_MIN and workflow.pk not in grown_workflows()
    assert refit_grown_workflow(workflow.pk) is None  # not due yet: nothing happens
    _submit_votes(workflow, n_volunteers=10, per_volunteer=12, seed=8, skills=(0.85, 0.97))
    apply_pending(workflow.pk)
    assert workflow.pk in grown_workflows()
    retired = refit_grown_workflow(workflow.pk)
    agg = aggregation_of(workflow)
    assert agg.refit_at_seq == [240] and retired and retired > 0
    assert workflow.subject_states.filter(status=SubjectWorkflowState.Status.RETIRED).count() == retired
    assert workflow.pk not in grown_workflows() and refit_grown_workflow(workflow.pk) is None  # next at 480
    # Logged like the hourly refit: a rebuild repeats it exactly.
    hot_state.clear(workflow.pk)
    report = rebuild_hot_state(workflow.pk)
    assert report.max_posterior_difference == 0.0 and report.retirement_mismatches == []
