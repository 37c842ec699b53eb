"""The dashboard's running tally and the subject page's place in the queue: human votes on the
retired subjects against a fixed-N majority (N the workflow's budget), accuracy against the subjects'
known answers (gold, hidden ``#truth.<task>`` metadata) for the crowd alone, the machine's
retirements and both together, and why the queue serves a subject when it does (its value for
humans, the machine's term, its acquisition score)."""

from __future__ import annotations

import pytest

from classifications.models import Classification, Volunteer
from dashboards import selectors
from machine.agents import machine_agent
from projects.models import SubjectWorkflowState

pytestmark = pytest.mark.django_db

SMOOTH = [0.9, 0.05, 0.03, 0.02]
DISK = [0.1, 0.85, 0.03, 0.02]


def _classify(workflow, subject_id: int, volunteer: Volunteer, counts: bool, key: str, metadata: dict | None = None) -> None:
    Classification.objects.create(workflow=workflow, subject_id=subject_id, volunteer=volunteer, counts=counts,
                                  idempotency_key=key, annotations=[{"task": "T0", "value": 0}], metadata=metadata or {})


def _state(workflow, index: int, *, reason: str = "", posterior: dict | None = None, truth: dict | None = None,
           humans: int = 0, machine_counted: int = 0, machine_uncounted: int = 0) -> SubjectWorkflowState:
    """The ``index``-th subject, with that many counted human votes and machine predictions, retired
    for ``reason`` (none: active), its posterior and its hidden ``#truth.<task>`` answers."""
    state = SubjectWorkflowState.objects.select_related("subject").filter(workflow=workflow).order_by("id")[index]
    subject = state.subject
    subject.metadata = {**subject.metadata, **{f"#truth.{task}": str(value) for task, value in (truth or {}).items()}}
    subject.save()
    for i in range(humans):
        _classify(workflow, subject.pk, Volunteer.objects.create(), True, f"h-{subject.pk}-{i}")
    agent = machine_agent(workflow)
    for i in range(machine_counted + machine_uncounted):
        _classify(workflow, subject.pk, agent.volunteer, i < machine_counted, f"machine-v{i + 1}-{subject.pk}")
    SubjectWorkflowState.objects.filter(pk=state.pk).update(
        status="retired" if reason else "active", retirement_reason=reason, posterior=posterior,
        classification_count=humans + machine_counted, retired_at=selectors.timezone.now() if reason else None,
    )
    state.refresh_from_db()
    return state


def test_the_tally_counts_human_votes_against_a_fixed_n_and_scores_known_answers(owned_workflow) -> None:
    workflow = owned_workflow(n=9, retirement={"budget": 10})
    _state(workflow, 0, reason="consensus:T0", posterior={"T0": SMOOTH}, truth={"T0": 0}, humans=5)
    _state(workflow, 1, reason="consensus:T1", posterior={"T0": DISK, "T1": [0.1, 0.2, 0.7]}, truth={"T0": 1, "T1": 2}, humans=7)
    # The budget spent: T0 right, T1 wrong, so the subject is wrong.
    _state(workflow, 2, reason="limit", posterior={"T0": DISK, "T1": [0.2, 0.1, 0.7]}, truth={"T0": 1, "T1": 0}, humans=10)
    # The machine's: one human vote and its counted prediction (its later, uncounted ones are not votes).
    _state(workflow, 3, reason="machine", posterior={"T0": SMOOTH}, truth={"T0": 0}, humans=1, machine_counted=1, machine_uncounted=2)
    _state(workflow, 4, reason="machine", posterior={"T0": DISK}, truth={"T0": 0}, machine_counted=1)
    _state(workflow, 5, reason="consensus:T2", posterior={"T0": SMOOTH}, humans=4)  # no known answer: not scored
    _state(workflow, 6, posterior={"T0": SMOOTH}, truth={"T0": 0}, humans=2)  # active: only in the total
    first = SubjectWorkflowState.objects.filter(workflow=workflow).order_by("id").first()
    _classify(workflow, first.subject_id, Volunteer.objects.create(), False, "late-look")  # after retirement: not counted

    tally = selectors.running_tally(workflow)
    assert tally["fixed_n"] == {"n": 10, "source": "the workflow's budget"}
    crowd, machine, both = (tally["groups"][name] for name in ("crowd", "machine", "all"))
    assert (crowd["retired"], crowd["human_votes"], crowd["fixed_n_votes"], crowd["saved"]) == (4, 26, 40, 14)
    assert crowd["votes_per_subject"] == pytest.approx(6.5) and crowd["fewer"] == pytest.approx(40 / 26)
    assert (machine["retired"], machine["human_votes"], machine["fixed_n_votes"]) == (2, 1, 20)
    assert machine["votes_per_subject"] == pytest.approx(0.5) and machine["fewer"] == pytest.approx(20.0)
    assert (both["retired"], both["human_votes"], both["fixed_n_votes"], both["saved"]) == (6, 27, 60, 33)
    assert both["fewer"] == pytest.approx(60 / 27)
    assert tally["human_votes_total"] == 27 + 2  # every counted human vote, the active subject's too

    assert {k: crowd["accuracy"][k] for k in ("scored", "right")} == {"scored": 3, "right": 2}
    assert crowd["accuracy"]["accuracy"] == pytest.approx(2 / 3)
    assert crowd["accuracy"]["by_task"] == {"T0": {"scored": 3, "right": 3, "accuracy": 1.0},
                                            "T1": {"scored": 2, "right": 1, "accuracy": 0.5}}
    assert machine["accuracy"]["by_task"] == {"T0": {"scored": 2, "right": 1, "accuracy": 0.5}}
    assert (both["accuracy"]["scored"], both["accuracy"]["right"]) == (5, 3)
    assert both["accuracy"]["by_task"]["T0"] == {"scored": 5, "right": 4, "accuracy": 0.8}


def test_the_tally_reaches_the_dashboard_json(client, owned_workflow, users) -> None:
    workflow = owned_workflow(n=3)
    _state(workflow, 0, reason="consensus:T0", posterior={"T0": SMOOTH}, truth={"T0": 0}, humans=3)
    client.force_login(users["owner"])
    tally = client.get(f"/dashboards/workflows/{workflow.pk}/statistics/").json()["tally"]
    assert tally["fixed_n"] == {"n": 40, "source": "the workflow's budget: Galaxy Zoo 2's votes per galaxy"}
    assert tally["groups"]["all"]["fixed_n_votes"] == 40 and tally["groups"]["all"]["human_votes"] == 3
    assert tally["groups"]["machine"]["retired"] == 0 and tally["groups"]["machine"]["fewer"] is None
    assert tally["groups"]["all"]["accuracy"]["accuracy"] == 1.0
    page = client.get(f"/projects/{workflow.project.slug}/workflows/{workflow.pk}/dashboard/").content.decode()
    assert 'data-stat="tally_votes"' in page and 'data-stat="tally_accuracy_note"' in page


@pytest.mark.parametrize(("retirement", "expected"), [
    ({}, {"n": 40, "source": "the workflow's budget: Galaxy Zoo 2's votes per galaxy"}),
    ({"budget": 12, "min": 3}, {"n": 12, "source": "the workflow's budget"}),
    ({"scope": "first_question", "policy": "min:3,posterior:0.99,max:25"}, {"n": 25, "source": "the policy's max"}),
    ({"scope": "first_question", "policy": "min:3,posterior:0.99"},
     {"n": 40, "source": "the policy has no max: Galaxy Zoo 2's votes per galaxy"}),
])
def test_n_is_the_workflows_budget(owned_workflow, retirement: dict, expected: dict) -> None:
    assert selectors.fixed_n(owned_workflow(n=1, retirement=retirement)) == expected


def test_known_answers_come_from_hidden_truth_and_gold() -> None:
    metadata = {"#truth.T0": "1", "#truth.T1": "", "#truth.T2": "many", "ra": 3, "truth.T1": "2"}
    assert selectors.known_answers(metadata, None) == {"T0": 1}
    assert selectors.known_answers(metadata, {"T0": 2, "T1": 0, "T2": [[1, 2, 3, 4]]}) == {"T0": 2, "T1": 0}
    assert selectors.known_answers(None, None) == {}


def test_the_subject_page_says_why_the_queue_serves_it(client, owned_workflow, users) -> None:
    from projects.services import fresh_value

    workflow = owned_workflow(n=5)
    states = list(SubjectWorkflowState.objects.filter(workflow=workflow).order_by("id"))
    agent = machine_agent(workflow)
    priorities = [0.5, 0.7, 0.6, 0.2, 0.9]
    for state, priority in zip(states, priorities, strict=True):
        SubjectWorkflowState.objects.filter(pk=state.pk).update(priority=priority)
    ranked, explored, unseen, retired = states[0], states[1], states[3], states[4]
    SubjectWorkflowState.objects.filter(pk=ranked.pk).update(machine_score=0.375, posterior={"T0": SMOOTH, "@value": 0.25})
    SubjectWorkflowState.objects.filter(pk=explored.pk).update(posterior={"T0": DISK, "@value": 0.5})
    SubjectWorkflowState.objects.filter(pk=retired.pk).update(status="retired", retirement_reason="consensus:T0")
    for state, score in ((ranked, 0.0123), (explored, 0.2)):
        _classify(workflow, state.subject_id, agent.volunteer, False, f"machine-v1-{state.subject_id}")
        _classify(workflow, state.subject_id, agent.volunteer, False, f"machine-v2-{state.subject_id}",
                  {"acquisition": score, "model_version": 2})
    client.force_login(users["owner"])

    def standing(state) -> dict:
        return client.get(f"/dashboards/workflows/{workflow.pk}/subjects/{state.subject_id}/").json()["queue"]

    queue = standing(ranked)  # 0.9 is retired: 0.7 and 0.6 come before 0.5 among the 4 active
    assert (queue["rank"], queue["active"], queue["acquisition"], queue["model_version"]) == (3, 4, 0.0123, 2)
    assert queue["value"] == 0.25 and queue["machine_score"] == 0.375 and not queue["explored"]
    assert queue["text"].startswith("Served 3rd of 4 active subjects")
    assert "its value for humans, 0.250 bits" in queue["text"] and "the machine's term 0.375" in queue["text"]
    assert "acquisition score (bald) 0.0123, from model version 2" in queue["text"]
    queue = standing(explored)
    assert queue["rank"] == 1 and queue["explored"] and "drew it at random to explore" in queue["text"]
    queue = standing(unseen)
    assert queue["rank"] == 4 and queue["value"] == pytest.approx(fresh_value(workflow)) and not queue["value_seen"]
    assert "nobody has classified it yet" in queue["text"] and "no model version ranks the queue yet" in queue["text"]
    queue = standing(retired)
    assert queue["rank"] is None and queue["text"].startswith("Retired")
    page = client.get(f"/projects/{workflow.project.slug}/workflows/{workflow.pk}/subjects/{ranked.subject_id}/").content.decode()
    assert "Served 3rd of 4 active subjects" in page and "0.01230 · model version 2" in page
