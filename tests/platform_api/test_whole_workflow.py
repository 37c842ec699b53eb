"""Whole-workflow retirement through the platform: a drawing-only workflow over the API, a question
tree that waits for its later question, the first-question rule kept as an option, the queue moved by
the engine, and bad settings refused with nothing created."""

from __future__ import annotations

import pytest

from live.services import RISK_KEY, VALUE_KEY, apply_pending, rebuild_hot_state
from projects.models import Project, SubjectWorkflowState, Workflow
from projects.services import DEMO_TASKS, create_workflow

pytestmark = pytest.mark.django_db

DRAWING_ONLY = {"first_task": "T0", "tasks": {"T0": {
    "type": "drawing", "instruction": "Mark every clump",
    "tools": [{"type": "rectangle", "label": "clump", "min": 0, "max": 5}], "next": None}}}


def _state(workflow, subject_id: int) -> SubjectWorkflowState:
    return SubjectWorkflowState.objects.get(workflow=workflow, subject_id=subject_id)


def test_a_drawing_only_workflow_is_served_aggregated_and_retired_through_the_api(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=2, tasks=DRAWING_ONLY)
    served = token_client("first").get(f"/api/workflows/{workflow.pk}/next-subjects/?count=2").json()
    subject_id = served["subjects"][0]["id"] if isinstance(served, dict) else served[0]["id"]
    clients = [token_client(f"v{i}") for i in range(6)]
    retired_after = None
    for n, client in enumerate(clients, start=1):
        box = {"tool": 0, "x": 20 + n % 2, "y": 30, "width": 25, "height": 18}
        response = client.post("/api/classifications/", payload(workflow, subject_id, [{"task": "T0", "value": [box]}]), format="json")
        assert response.status_code == 201, response.json()
        apply_pending(workflow.pk)
        if _state(workflow, subject_id).status == SubjectWorkflowState.Status.RETIRED:
            retired_after = n
            break
    state = _state(workflow, subject_id)
    assert retired_after is not None and retired_after <= 4
    assert state.retirement_reason == "consensus:T0"
    risk = state.posterior[RISK_KEY]["T0"]
    assert risk["kind"] == "drawing" and risk["settled"] and risk["weighted_risk"] < risk["bar"] == 0.02
    (clump,) = [o for o in state.posterior["T0"]["objects"] if o["probability"] >= 0.5]
    assert clump["x"] == pytest.approx(20.5, abs=0.6) and clump["width"] == pytest.approx(25, abs=0.5)
    assert state.posterior[VALUE_KEY] == 0.0
    # A box outside the image is refused with its field, and nothing stored.
    bad = {"tool": 0, "x": 90, "y": 10, "width": 30, "height": 10}
    response = token_client("late").post("/api/classifications/", payload(workflow, subject_id, [{"task": "T0", "value": [bad]}]), format="json")
    assert response.status_code == 400 and "annotations" in response.json()
    report = rebuild_hot_state(workflow.pk)
    assert report.max_posterior_difference == 0.0 and report.retirement_mismatches == []


def _disk_votes(workflow, token_client, payload, subject_id: int, t1_answers: list[int]) -> None:
    for i, t1 in enumerate(t1_answers):
        annotations = [{"task": "T0", "value": 1}, {"task": "T1", "value": t1}, {"task": "T2", "value": []}]
        response = token_client(f"d{i}").post("/api/classifications/", payload(workflow, subject_id, annotations), format="json")
        assert response.status_code == 201, response.json()
    apply_pending(workflow.pk)


@pytest.mark.parametrize("scope", ["workflow", "first_question"])
def test_a_disk_waits_for_its_second_question_unless_the_first_question_rule_is_asked_for(make_workflow, token_client, payload, scope) -> None:
    settings = {"scope": "first_question", "policy": "min:3,posterior:0.99,max:40"} if scope == "first_question" else {}
    # Skills stay the newcomer's (70% right) so the numbers are the prior's: six "disk" answers are 99% sure.
    # Every volunteer trusted at once (half_trust 0): this test is about the tree, not Sybil resistance.
    workflow = make_workflow(n=1, retirement=settings | {"half_trust": 0, "estimator": {"learn": ["gold"], "learn_class_prior": False}})
    subject_id = workflow.subject_states.get().subject_id
    before = _state(workflow, subject_id).priority
    _disk_votes(workflow, token_client, payload, subject_id, [0, 1, 2, 0, 1, 2, 0, 1])  # T1: no agreement at all
    state = _state(workflow, subject_id)
    assert state.posterior["T0"][1] > 0.99
    if scope == "first_question":
        assert state.status == SubjectWorkflowState.Status.RETIRED and state.retirement_reason == "consensus"
        return
    assert state.status == SubjectWorkflowState.Status.ACTIVE  # T1 is unsettled: no saving bought by starving it
    risks = state.posterior[RISK_KEY]
    assert risks["T0"]["settled"] and not risks["T1"]["settled"]
    assert risks["T1"]["reach"] == pytest.approx(state.posterior["T0"][1])
    assert state.priority != before and state.priority == pytest.approx(state.posterior[VALUE_KEY] / (1 + state.posterior[VALUE_KEY]))


@pytest.mark.parametrize(("retirement", "field"), [
    ({"bar": 2}, "bar"),
    ({"required": ["T7"]}, "required"),
    ({"policy": "min:3,posterior:0.99"}, "policy"),
    ({"scope": "first_question", "policy": "often"}, "policy"),
    ({"min": 5, "budget": 3}, "budget"),
    ({"estimator": {"bogus": 1}}, "estimator"),
])
def test_bad_retirement_settings_are_refused_and_nothing_is_created(retirement: dict, field: str) -> None:
    project = Project.objects.create(slug="p", title="P")
    with pytest.raises(ValueError, match=rf"\b{field}:"):
        create_workflow(project, "Bad", DEMO_TASKS, retirement=retirement)
    assert not Workflow.objects.exists()


def test_a_workflow_model_refuses_bad_settings_on_clean() -> None:
    from django.core.exceptions import ValidationError

    workflow = Workflow(project=Project.objects.create(slug="q", title="Q"), name="W", tasks=DRAWING_ONLY, retirement={"bar": {"T0": 0}})
    with pytest.raises(ValidationError) as error:
        workflow.full_clean()
    assert "retirement" in error.value.message_dict


def test_the_machine_acquisition_rank_enters_the_priority_as_one_term(make_workflow) -> None:
    from machine.priorities import update_priorities
    from projects.services import fresh_value

    workflow = make_workflow(n=3)
    states = list(workflow.subject_states.order_by("subject_id"))
    values = [2.0, 0.0, None]  # the third was never classified: a new subject's value
    for state, value in zip(states, values, strict=True):
        state.posterior = None if value is None else {VALUE_KEY: value}
        state.save(update_fields=["posterior"])
    scores = {states[0].subject_id: 0.1, states[1].subject_id: 0.9, states[2].subject_id: 0.5}  # e.g. BALD
    assert update_priorities(workflow, scores, exploration_share=0.0) == set()
    unseen = fresh_value(workflow)
    expected_rank = {states[0].subject_id: 0.5 / 3, states[1].subject_id: 2.5 / 3, states[2].subject_id: 1.5 / 3}
    for state, value in zip(states, values, strict=True):
        state.refresh_from_db()
        v = (unseen if value is None else value) + expected_rank[state.subject_id]
        assert state.machine_score == pytest.approx(expected_rank[state.subject_id])
        assert state.priority == pytest.approx(v / (1 + v))
    # The crowd's value still counts: the subject the machine wants least but humans most is served first.
    assert states[0].priority > states[1].priority
