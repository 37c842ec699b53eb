"""The live loop end to end with real PostgreSQL, real Redis and real Celery worker processes.

- A stream of classifications from many simulated volunteers ends with the same posteriors and
  retirements as an offline replay of the same log through the engine.
- SIGKILL of a worker mid-stream, a Redis restart, and re-sending every submission lose nothing and
  count nothing twice; the rebuild agrees with the live state.
- A retired subject is never served again while others remain.
"""

from __future__ import annotations

import random
import signal
import threading
import time

import numpy as np
import pytest
from django.conf import settings
from django.db import connection

from aggregation.workflow import WorkflowAggregator
from chorus import embedded
from classifications.models import Classification, Volunteer
from classifications.selectors import next_subjects
from classifications.services import submit_classification
from live import engine as engine_lib
from live.models import WorkflowAggregation
from live.services import rebuild_hot_state, requeue_unapplied
from projects.models import SubjectWorkflowState

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _simulated_stream(workflow, n_volunteers: int, per_volunteer: int, seed: int = 3) -> list[tuple[Volunteer, dict]]:
    """Volunteers of varied skill answering the first question (truth: even subjects smooth)."""
    rng = random.Random(seed)
    volunteers = [Volunteer.objects.create() for _ in range(n_volunteers)]
    subject_ids = list(workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True))
    stream = []
    for volunteer in volunteers:
        skill = rng.uniform(0.6, 0.95)
        for subject_id in rng.sample(subject_ids, per_volunteer):
            truth = 0 if subject_id % 2 == 0 else 1
            answer = truth if rng.random() < skill else 1 - truth
            annotations = [{"task": "T0", "value": answer}]
            if answer == 1:
                annotations.append({"task": "T1", "value": rng.randrange(3)})
            annotations.append({"task": "T2", "value": []})
            data = {"workflow": workflow.pk, "subject": subject_id, "annotations": annotations,
                    "idempotency_key": f"stream-{volunteer.pk}-{subject_id}"}
            stream.append((volunteer, data))
    rng.shuffle(stream)
    return stream


def _wait_until_applied(total: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while Classification.objects.filter(applied_seq__isnull=False).count() < total:
        if time.monotonic() > deadline:
            unapplied = Classification.objects.filter(applied_seq__isnull=True).count()
            raise AssertionError(f"{unapplied} classifications still unapplied after {timeout} s")
        time.sleep(0.2)


def _offline_replay(workflow) -> WorkflowAggregator:
    """The question engine on its own, fed the log in the order the workers applied it."""
    agg = WorkflowAggregation.objects.get(workflow=workflow)
    engine = engine_lib.new_engine(workflow.tasks, agg.engine_config).aggregator
    for c in Classification.objects.filter(workflow=workflow).select_related("subject").order_by("applied_seq"):
        engine.add_classification(
            c.subject_id, c.volunteer_id, c.annotations, counts=c.counts,
            gold={k: v for k, v in (c.subject.gold or {}).items() if k in ("T0", "T1")} if c.is_gold else None,
        )
    return engine


def _assert_matches_offline_replay(workflow) -> None:
    engine = _offline_replay(workflow)
    retired = dict(engine.estimators["T0"].retired())
    assert retired, "the stream should retire some subjects"
    for state in SubjectWorkflowState.objects.filter(workflow=workflow):
        assert state.posterior is not None
        np.testing.assert_allclose(state.posterior["T0"], engine.posterior(state.subject_id, "T0"), rtol=0, atol=1e-12)
        if state.status == SubjectWorkflowState.Status.RETIRED:
            assert retired.get(state.subject_id) == state.retirement_reason
        else:
            assert state.subject_id not in retired


# The simulated volunteers are all new: trusted from their first answer (half_trust 0, the engine before
# issue 25) so that the stream retires subjects; Sybil resistance is tested in tests/aggregation/test_sybil.py.
TRUST_NEWCOMERS = {"half_trust": 0}


def test_a_stream_through_real_workers_matches_the_offline_replay(make_workflow, start_worker) -> None:
    workflow = make_workflow(n=30, gold_every=10, retirement=TRUST_NEWCOMERS)
    start_worker("w1", concurrency=2)
    start_worker("w2", concurrency=1)  # two worker processes race for the same workflow
    stream = _simulated_stream(workflow, n_volunteers=25, per_volunteer=12)

    def submit(part: list) -> None:
        for volunteer, data in part:
            submit_classification(volunteer, data)
        connection.close()

    threads = [threading.Thread(target=submit, args=(stream[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _wait_until_applied(len(stream))
    seqs = sorted(Classification.objects.values_list("applied_seq", flat=True))
    assert seqs == list(range(1, len(stream) + 1))  # every classification applied exactly once
    _assert_matches_offline_replay(workflow)
    report = rebuild_hot_state(workflow.pk)
    assert report.max_posterior_difference == 0.0 and report.retirement_mismatches == []


def test_sigkill_redis_restart_and_resending_lose_nothing_and_count_nothing_twice(make_workflow, start_worker) -> None:
    workflow = make_workflow(n=30, retirement=TRUST_NEWCOMERS)
    worker = start_worker("doomed", concurrency=1)
    stream = _simulated_stream(workflow, n_volunteers=20, per_volunteer=12, seed=5)
    half = len(stream) // 2
    for volunteer, data in stream[:half]:
        submit_classification(volunteer, data)
    worker.send_signal(signal.SIGKILL)  # mid-stream: some applied, some queued, maybe one mid-batch
    worker.wait(timeout=10)
    embedded.stop_redis(settings.DATA_DIR)
    embedded.start_redis(settings.DATA_DIR)
    # The browser re-sends everything it is unsure about (the first half again) and the rest.
    results = [submit_classification(volunteer, data) for volunteer, data in stream]
    assert [r.created for r in results[:half]] == [False] * half
    assert all(r.created for r in results[half:])
    start_worker("phoenix", concurrency=2)
    requeue_unapplied(older_than_seconds=0)  # what beat's recovery task does every 30 s
    _wait_until_applied(len(stream))
    assert Classification.objects.count() == len(stream)
    assert sorted(Classification.objects.values_list("applied_seq", flat=True)) == list(range(1, len(stream) + 1))
    for state in SubjectWorkflowState.objects.filter(workflow=workflow):
        counted = Classification.objects.filter(workflow=workflow, subject_id=state.subject_id, counts=True).count()
        assert state.classification_count == counted
    report = rebuild_hot_state(workflow.pk)
    assert report.applied == len(stream) and report.retirement_mismatches == []
    assert report.max_posterior_difference == 0.0
    _assert_matches_offline_replay(workflow)


def test_a_retired_subject_is_never_served_again(make_workflow, start_worker) -> None:
    workflow = make_workflow(n=24, retirement=TRUST_NEWCOMERS)
    start_worker("w1")
    stream = _simulated_stream(workflow, n_volunteers=10, per_volunteer=12, seed=11)
    for volunteer, data in stream:
        submit_classification(volunteer, data)
    _wait_until_applied(len(stream))
    retired = set(workflow.subject_states.filter(status=SubjectWorkflowState.Status.RETIRED).values_list("subject_id", flat=True))
    assert retired and len(retired) < 24
    newcomer = Volunteer.objects.create()
    served = set()
    for _ in range(24 - len(retired)):
        states, _ = next_subjects(workflow, newcomer, 1)
        assert states[0].subject_id not in retired
        served.add(states[0].subject_id)
        submit_classification(newcomer, {"workflow": workflow.pk, "subject": states[0].subject_id,
                                         "annotations": [{"task": "T0", "value": 0}, {"task": "T2", "value": []}],
                                         "idempotency_key": f"newcomer-{states[0].subject_id}"})
    assert not served & retired
