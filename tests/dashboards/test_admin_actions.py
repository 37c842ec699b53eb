"""The admin page's actions: retirement rules (whole-workflow or first-question, validated, logged,
and applied at once by re-aggregating the log), gold rate, active-learning settings, pause and resume, retraining, model
promotion and roll-back; invalid input gets 400 with field errors and changes nothing."""

from __future__ import annotations

import pytest

from classifications.models import Classification
from live import hot_state
from live import services as live_services
from live.models import WorkflowAggregation
from live.services import apply_pending, reset_engine_config
from projects.models import AdminAction, SubjectWorkflowState
from tests.dashboards.conftest import submit_votes

pytestmark = pytest.mark.django_db

# Where the votes of these tests' new volunteers must reach a limit: trusted from their first answer
# (half_trust 0, the engine before issue 25; the admin form keeps it). Sybil resistance: tests/aggregation/test_sybil.py.
TRUST = {"half_trust": 0}


def _post(client, workflow, action: str, data: dict | None = None):
    return client.post(f"/dashboards/workflows/{workflow.pk}/{action}/", data or {})


def _admin_url(workflow) -> str:
    return f"/projects/{workflow.project.slug}/workflows/{workflow.pk}/admin/"


@pytest.fixture
def owner_client(client, users):
    client.force_login(users["owner"])
    return client


def test_new_retirement_rules_apply_at_once_and_are_logged(owner_client, owned_workflow, users) -> None:
    workflow = owned_workflow(n=6, retirement={"scope": "first_question", "policy": "max:40", **TRUST})
    submit_votes(workflow, n_volunteers=3, per_volunteer=6)
    apply_pending(workflow.pk)
    assert not SubjectWorkflowState.objects.filter(workflow=workflow, status="retired").exists()
    response = _post(owner_client, workflow, "retirement", {"scope": "first_question", "policy": "min:1,max:3", "estimator": '{"skepticism": 1.0}'})
    assert response.status_code == 302 and response["Location"] == _admin_url(workflow)
    workflow.refresh_from_db()
    assert workflow.retirement == {"scope": "first_question", "policy": "min:1,max:3", "estimator": {"skepticism": 1.0}, **TRUST}
    # Every subject has 3 counted classifications: the new limit retires them all now.
    states = SubjectWorkflowState.objects.filter(workflow=workflow)
    assert states.filter(status="retired", retirement_reason="limit").count() == 6
    agg = WorkflowAggregation.objects.get(workflow=workflow)
    assert agg.engine_config["retirement"] == live_services.engine_lib.engine_config(workflow.retirement, workflow.tasks)["retirement"]
    assert agg.engine_config["retirement"]["scope"] == "first_question"
    assert agg.engine_config["estimator"] == {"learn_class_prior": True, "skepticism": 1.0}
    assert hot_state.results_version(workflow.pk) == agg.state_version
    action = AdminAction.objects.get(workflow=workflow, action="retirement_updated")
    assert action.user == users["owner"] and action.details["after"]["policy"] == "min:1,max:3"
    assert action.details["before"] == {"scope": "first_question", "policy": "max:40", **TRUST} and action.details["retired_now"] == 6
    page = owner_client.get(_admin_url(workflow)).content.decode()
    assert "retirement_updated" in page and "owner" in page and "6 subject(s) retired" in page


def test_new_rules_keep_how_the_machine_answers_enter(owner_client, owned_workflow) -> None:
    kept = owned_workflow(n=2, retirement={"scope": "first_question", "policy": "max:40", "machine_agents": "by_confidence"})
    _post(owner_client, kept, "retirement", {"scope": "first_question", "policy": "max:3", "estimator": ""})
    kept.refresh_from_db()
    assert kept.retirement["machine_agents"] == "by_confidence" and kept.retirement["policy"] == "max:3"
    assert WorkflowAggregation.objects.get(workflow=kept).engine_config["machine_agents"] == "by_confidence"
    fresh = owned_workflow(n=2, slug="other-galaxies", retirement={"scope": "first_question", "policy": "max:40"})
    _post(owner_client, fresh, "retirement", {"scope": "first_question", "policy": "max:3", "estimator": ""})
    assert WorkflowAggregation.objects.get(workflow=fresh).engine_config["machine_agents"] == "one"
    # So does how far new volunteers are trusted (half_trust): a JSON setting the form does not show.
    trusting = owned_workflow(n=2, slug="trusting-galaxies", retirement={"scope": "first_question", "policy": "max:40", "half_trust": 0})
    _post(owner_client, trusting, "retirement", {"scope": "first_question", "policy": "max:3", "estimator": ""})
    trusting.refresh_from_db()
    assert trusting.retirement["half_trust"] == 0
    assert WorkflowAggregation.objects.get(workflow=trusting).engine_config["retirement"]["half_trust"] == 0.0


def test_the_new_policy_governs_later_votes_even_in_a_process_with_a_stale_engine(owned_workflow) -> None:
    workflow = owned_workflow(n=4, retirement={"scope": "first_question", "policy": "max:40", **TRUST})
    subject_ids = list(workflow.subject_states.order_by("id").values_list("subject_id", flat=True))
    submit_votes(workflow, n_volunteers=2, per_volunteer=2, subject_ids=subject_ids[:2])
    apply_pending(workflow.pk)
    stale = live_services._LOCAL_ENGINES[workflow.pk]  # another worker's copy, built under max:40
    retired = reset_engine_config(workflow.pk, live_services.engine_lib.engine_config({"scope": "first_question", "policy": "max:3", **TRUST}, workflow.tasks))
    assert retired == 0  # two votes each: not yet at the new limit
    live_services._LOCAL_ENGINES[workflow.pk] = stale
    submit_votes(workflow, n_volunteers=1, per_volunteer=2, seed=5, subject_ids=subject_ids[:2])
    report = apply_pending(workflow.pk)
    assert report.applied == 2 and report.retired == 2
    assert set(SubjectWorkflowState.objects.filter(status="retired").values_list("retirement_reason", flat=True)) == {"limit"}


def test_the_reset_keeps_earlier_retirements_and_matches_a_rebuild(owned_workflow) -> None:
    workflow = owned_workflow(n=5, retirement={"scope": "first_question", "policy": "max:2", **TRUST})
    submit_votes(workflow, n_volunteers=3, per_volunteer=5)
    apply_pending(workflow.pk)
    retired_before = set(SubjectWorkflowState.objects.filter(status="retired").values_list("subject_id", flat=True))
    assert retired_before
    reset_engine_config(workflow.pk, live_services.engine_lib.engine_config({"scope": "first_question", "policy": "max:40", **TRUST}, workflow.tasks))
    assert set(SubjectWorkflowState.objects.filter(status="retired").values_list("subject_id", flat=True)) == retired_before
    report = live_services.rebuild_hot_state(workflow.pk)
    assert report.max_posterior_difference == 0.0  # posteriors stored are the new config's replay


def test_whole_workflow_rules_are_saved_and_applied_at_once(owner_client, owned_workflow, users) -> None:
    workflow = owned_workflow(n=6, retirement={"scope": "first_question", "policy": "max:40", **TRUST})
    submit_votes(workflow, n_volunteers=3, per_volunteer=6)
    apply_pending(workflow.pk)
    assert not SubjectWorkflowState.objects.filter(workflow=workflow, status="retired").exists()
    # The first-question policy still in the form is ignored: only the chosen scope's fields count.
    data = {"scope": "workflow", "required": ["T0"], "bar": "0.2", "min": "1", "budget": "3", "policy": "max:40", "estimator": ""}
    response = _post(owner_client, workflow, "retirement", data)
    assert response.status_code == 302
    workflow.refresh_from_db()
    assert workflow.retirement == {"scope": "workflow", "required": ["T0"], "bar": 0.2, "min": 1, "budget": 3, "estimator": {}, **TRUST}
    agg = WorkflowAggregation.objects.get(workflow=workflow)
    assert agg.engine_config["retirement"] == {"scope": "workflow", "required": ["T0"], "bars": {"T0": 0.2}, "min": 1, "budget": 3, "half_trust": 0.0}
    # Three counted classifications each, the budget: every subject retires now, those whose T0 was
    # settled by the consensus on T0, the others at the limit.
    states = SubjectWorkflowState.objects.filter(workflow=workflow)
    reasons = set(states.values_list("retirement_reason", flat=True))
    assert states.filter(status="retired").count() == 6 and reasons <= {"consensus:T0", "limit"}
    assert "consensus:T0" in reasons
    for state in states.filter(retirement_reason="consensus:T0"):
        assert set(state.posterior["@risk"]) == {"T0", "T1", "T2"}
        assert state.posterior["@risk"]["T0"]["settled"] and state.posterior["@risk"]["T0"]["bar"] == 0.2
        assert state.posterior["@risk"]["T2"]["bar"] is None  # not required
    assert hot_state.results_version(workflow.pk) == agg.state_version
    action = AdminAction.objects.get(workflow=workflow, action="retirement_updated")
    assert action.user == users["owner"] and action.details["after"] == workflow.retirement
    # The page shows the settings back: T0 required, T1 and T2 not, the common bar, min and budget.
    page = owner_client.get(_admin_url(workflow)).content.decode()
    assert 'name="required" value="T0" id="required-T0" checked' in page
    assert 'name="required" value="T1" id="required-T1">' in page and 'name="required" value="T2" id="required-T2">' in page
    assert 'id="bar" name="bar" value="0.2"' in page and 'id="min" name="min" min="1" step="1" value="1"' in page
    assert 'name="scope" value="workflow" checked' in page


def test_per_task_bars_override_the_common_one(owner_client, owned_workflow) -> None:
    workflow = owned_workflow(n=2, retirement={"scope": "first_question", "policy": "max:40"})
    data = {"scope": "workflow", "required": ["T0", "T1", "T2"], "bar": "0.03", "bar.T2": "0.5", "min": "", "budget": "", "estimator": ""}
    assert _post(owner_client, workflow, "retirement", data).status_code == 302
    workflow.refresh_from_db()
    assert workflow.retirement["bar"] == {"T0": 0.03, "T1": 0.03, "T2": 0.5}
    assert "min" not in workflow.retirement and "budget" not in workflow.retirement  # empty: the defaults
    stored = WorkflowAggregation.objects.get(workflow=workflow).engine_config["retirement"]
    assert stored == {"scope": "workflow", "required": ["T0", "T1", "T2"], "bars": {"T0": 0.03, "T1": 0.03, "T2": 0.5}, "min": 3, "budget": 40,
                      "half_trust": 3.0}  # the default (aggregation.defaults.HALF_TRUST), written in
    # Own bars only: the tasks without one keep their kind's default.
    data = {"scope": "workflow", "required": ["T0", "T2"], "bar.T0": "0.005", "estimator": ""}
    assert _post(owner_client, workflow, "retirement", data).status_code == 302
    stored = WorkflowAggregation.objects.get(workflow=workflow).engine_config["retirement"]
    assert stored["bars"] == {"T0": 0.005, "T2": 0.02}
    page = owner_client.get(_admin_url(workflow)).content.decode()
    assert 'name="bar.T0" id="bar-T0" value="0.005"' in page and 'name="bar.T2" id="bar-T2" value=""' in page
    # And back to the first question's rule, the whole-workflow fields left in the form.
    data = {"scope": "first_question", "policy": "", "required": ["T0"], "bar": "0.5", "estimator": ""}
    assert _post(owner_client, workflow, "retirement", data).status_code == 302
    workflow.refresh_from_db()
    assert workflow.retirement == {"scope": "first_question", "estimator": {}}  # empty policy: the default
    stored = WorkflowAggregation.objects.get(workflow=workflow).engine_config["retirement"]
    assert stored["scope"] == "first_question"
    assert stored["policy"] == live_services.engine_lib.engine_config({"scope": "first_question", "policy": "min:3,posterior:0.99,max:40"}, workflow.tasks)["retirement"]["policy"]


WORKFLOW_SCOPE = {"scope": "workflow", "required": ["T0", "T2"], "estimator": ""}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"scope": "first_question", "policy": "posterior:abc", "estimator": ""}, "policy"),
        ({"scope": "first_question", "policy": "bogus:3", "estimator": ""}, "policy"),
        ({"scope": "first_question", "policy": "max:3", "estimator": "{not json"}, "estimator"),
        ({"scope": "first_question", "policy": "max:3", "estimator": "[1, 2]"}, "estimator"),
        ({"scope": "first_question", "policy": "max:3", "estimator": '{"unknown_option": 1}'}, "estimator"),
        ({"policy": "max:3", "estimator": ""}, "scope"),  # no scope: the form always sends one
        ({"scope": "sometimes", "estimator": ""}, "scope"),
        ({"scope": "workflow", "estimator": ""}, "required"),  # no task ticked
        ({**WORKFLOW_SCOPE, "required": ["T0", "T9"]}, "required"),
        ({**WORKFLOW_SCOPE, "bar": "abc"}, "bar"),
        ({**WORKFLOW_SCOPE, "bar": "1.5"}, "bar"),
        ({**WORKFLOW_SCOPE, "bar": "0"}, "bar"),
        ({**WORKFLOW_SCOPE, "bar.T0": "-0.1"}, "bar"),
        ({**WORKFLOW_SCOPE, "bar.T1": "0.05"}, "bar"),  # T1 is not required
        ({**WORKFLOW_SCOPE, "min": "0"}, "min"),
        ({**WORKFLOW_SCOPE, "min": "2.5"}, "min"),
        ({**WORKFLOW_SCOPE, "min": "many"}, "min"),
        ({**WORKFLOW_SCOPE, "budget": "0"}, "budget"),
        ({**WORKFLOW_SCOPE, "budget": "20000"}, "budget"),
        ({**WORKFLOW_SCOPE, "min": "5", "budget": "4"}, "budget"),
        ({**WORKFLOW_SCOPE, "estimator": '{"unknown_option": 1}'}, "estimator"),
    ],
)
def test_invalid_retirement_rules_get_400_and_change_nothing(owner_client, owned_workflow, data, field) -> None:
    workflow = owned_workflow(n=2, retirement={"scope": "first_question", "policy": "max:40"})
    submit_votes(workflow, n_volunteers=1, per_volunteer=2)
    apply_pending(workflow.pk)
    agg = WorkflowAggregation.objects.get(workflow=workflow)
    version = hot_state.results_version(workflow.pk)
    response = _post(owner_client, workflow, "retirement", data)
    assert response.status_code == 400
    html = response.content.decode()
    assert "Nothing was changed" in html and f"<li>{field}: " in html
    assert f'data-testid="error-{field}"' in html  # also next to the field
    workflow.refresh_from_db()
    assert workflow.retirement == {"scope": "first_question", "policy": "max:40"}
    after = WorkflowAggregation.objects.get(workflow=workflow)
    assert after.engine_config == agg.engine_config and after.state_version == agg.state_version
    assert hot_state.results_version(workflow.pk) == version
    assert not AdminAction.objects.exists()


def test_the_form_shows_rejected_input_again(owner_client, owned_workflow) -> None:
    workflow = owned_workflow(n=1, retirement={"scope": "first_question", "policy": "max:40"})
    data = {"scope": "workflow", "required": ["T2"], "bar": "2", "bar.T2": "", "min": "4", "budget": "9", "estimator": ""}
    html = _post(owner_client, workflow, "retirement", data).content.decode()
    assert 'name="scope" value="workflow" checked' in html and 'name="scope" value="first_question">' in html
    assert 'name="required" value="T2" id="required-T2" checked' in html
    assert 'name="required" value="T0" id="required-T0">' in html
    assert 'id="bar" name="bar" value="2"' in html and 'value="4" placeholder' in html and 'value="9" placeholder' in html
    assert "bar: a number above 0 and at most 1" in html


def test_a_drawing_first_workflow_cannot_take_the_first_question_rule(owner_client, owned_workflow) -> None:
    from projects.models import Workflow
    from tests.dashboards.conftest import DRAWING_ONLY_TASKS

    workflow = owned_workflow(n=1)
    Workflow.objects.filter(pk=workflow.pk).update(tasks=DRAWING_ONLY_TASKS)
    workflow.refresh_from_db()
    page = owner_client.get(_admin_url(workflow)).content.decode()
    assert "only the whole-workflow rule applies" in page
    assert 'name="required" value="T0" id="required-T0" checked' in page and 'placeholder="0.02"' in page
    response = _post(owner_client, workflow, "retirement", {"scope": "first_question", "policy": "max:3", "estimator": ""})
    assert response.status_code == 400 and "scope: &#x27;first_question&#x27; needs a first task that is a question" in response.content.decode()
    assert _post(owner_client, workflow, "retirement", {"scope": "workflow", "required": ["T0"], "bar": "0.05", "estimator": ""}).status_code == 302
    stored = WorkflowAggregation.objects.get(workflow=workflow).engine_config["retirement"]
    assert stored == {"scope": "workflow", "required": ["T0"], "bars": {"T0": 0.05}, "min": 1, "budget": 40, "half_trust": 3.0}


def test_gold_rate(owner_client, owned_workflow, users) -> None:
    workflow = owned_workflow(n=1)
    assert _post(owner_client, workflow, "gold-rate", {"gold_feedback_rate": "0.25"}).status_code == 302
    workflow.refresh_from_db()
    assert workflow.gold_feedback_rate == 0.25
    action = AdminAction.objects.get(action="gold_rate_updated")
    assert action.details == {"before": 1.0, "after": 0.25} and action.user == users["owner"]
    for bad in ("1.5", "-0.1", "lots", ""):
        response = _post(owner_client, workflow, "gold-rate", {"gold_feedback_rate": bad})
        assert response.status_code == 400 and "gold_feedback_rate" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.gold_feedback_rate == 0.25 and AdminAction.objects.count() == 1


def test_active_learning_settings(owner_client, owned_workflow) -> None:
    workflow = owned_workflow(n=1, active_learning={"epochs": 4})
    data = {"acquisition": "entropy", "exploration_share": "0.2", "machine_threshold": "0.95", "retrain_every": "10",
            "enabled": "on"}
    assert _post(owner_client, workflow, "active-learning", data).status_code == 302
    workflow.refresh_from_db()
    assert workflow.active_learning == {
        "epochs": 4, "enabled": True, "acquisition": "entropy", "exploration_share": 0.2, "machine_retirement": False,
        "machine_threshold": 0.95, "retrain_every": 10,
    }
    assert AdminAction.objects.get(action="active_learning_updated").details["before"] == {"epochs": 4}
    for bad in ({**data, "acquisition": "magic"}, {**data, "exploration_share": "2"}, {**data, "retrain_every": "2.5"},
                {**data, "machine_threshold": "0.1"}):
        assert _post(owner_client, workflow, "active-learning", bad).status_code == 400
    workflow.refresh_from_db()
    assert workflow.active_learning["acquisition"] == "entropy" and AdminAction.objects.count() == 1


def test_pause_and_resume(owner_client, owned_workflow, users) -> None:
    workflow = owned_workflow(n=1)
    _post(owner_client, workflow, "pause")
    workflow.refresh_from_db()
    assert workflow.active is False
    assert "paused" in owner_client.get(_admin_url(workflow)).content.decode()
    _post(owner_client, workflow, "pause")  # already paused: not logged twice
    _post(owner_client, workflow, "resume")
    workflow.refresh_from_db()
    assert workflow.active is True
    assert list(AdminAction.objects.order_by("id").values_list("action", "user__username")) == [("paused", "owner"), ("resumed", "owner")]
    assert owner_client.get(f"/dashboards/workflows/{workflow.pk}/pause/").status_code == 405


def _version(workflow, number: int, state: str = "trained", accuracy: float = 0.9, **more_metrics):
    from machine.models import ModelVersion

    return ModelVersion.objects.create(
        workflow=workflow, version=number, state=state, model=b"weights", reason="manual",
        metrics={"accuracy": accuracy, "ece": 0.05, "confusion": [[5, 1], [0, 4]]} | more_metrics,
    )


def test_models_retrain_promote_and_roll_back(owner_client, owned_workflow, users) -> None:
    pytest.importorskip("machine.models")
    from machine.selectors import current_model

    workflow = owned_workflow(n=1)
    first = _version(workflow, 1, accuracy=0.91, trained=False, trained_reason="1 version(s) so far, 2 needed for stability")
    second = _version(workflow, 2, accuracy=0.934, trained=True, trained_reason="stable", n_retired_gold=87, retired_gold_accuracy=0.9885)
    page = owner_client.get(_admin_url(workflow)).content.decode()
    assert "0.934" in page and "0.910" in page and "Promote" in page
    # Whether each may retire, why (not), and how right its line's retirements were on gold.
    # (then, on a tree, one line per question: what the version answers, and why not the rest)
    assert '<td title="1 version(s) so far, 2 needed for stability">no<' in page and '<td title="stable">yes<' in page
    assert '<li data-task="T2">T2: humans only: a drawing task</li>' in page
    assert "0.989 (87)" in page
    # Trained per answer: which answers it may retire with.
    _version(workflow, 4, trained=True, trained_reason="per answer", retire_answers=[0])
    page = owner_client.get(_admin_url(workflow)).content.decode()
    label = workflow.tasks["tasks"][workflow.tasks["first_task"]]["answers"][0]["label"]
    assert f'<td title="per answer">yes: {label}<' in page

    assert _post(owner_client, workflow, f"models/{first.pk}/promote").status_code == 302
    assert _post(owner_client, workflow, f"models/{second.pk}/promote").status_code == 302
    assert current_model(workflow).pk == second.pk
    stats = owner_client.get(f"/dashboards/workflows/{workflow.pk}/statistics/").json()
    assert stats["model"]["version"] == 2 and stats["model"]["accuracy"] == 0.934
    # Which questions the machine answers, and why not the others (a version of before: the first question).
    said = {q["task"]: q for q in stats["model"]["questions"]}
    assert [q["task"] for q in stats["model"]["questions"]] == ["T0", "T1", "T2"]
    assert said["T0"]["answers"] and said["T0"]["text"].startswith("T0: answers: 93% on")
    assert said["T1"]["text"] == "T1: humans only: this version answers the first question"
    assert said["T2"]["text"] == "T2: humans only: a drawing task" and not said["T2"]["answers"]
    from dashboards.selectors import model_summary

    per_question = _version(workflow, 5, trained=True, questions={
        "T0": {"trained": True, "accuracy": 0.97, "n_gold_test": 120, "n_retired_gold": 60, "retired_gold_accuracy": 0.985},
        "T1": {"trained": False, "accuracy": 0.81, "n_gold_test": 40, "bars": {"min_gold_accuracy": 0.9, "min_gold_subjects": 20}}})
    said = {q["task"]: q["text"] for q in model_summary(per_question)["questions"]}
    assert said["T0"] == "T0: answers: 97% on 120 gold; 98.5% right on the 60 gold it would retire"
    assert said["T1"] == "T1: gate not passed: 81% on 40 gold, needs 90%"
    per_question.delete()

    assert _post(owner_client, workflow, "roll-back").status_code == 302
    assert current_model(workflow).pk == first.pk
    assert _post(owner_client, workflow, "roll-back").status_code == 409  # nothing earlier left

    assert _post(owner_client, workflow, "retrain").status_code == 302
    failed = _version(workflow, 3, state="failed")
    assert _post(owner_client, workflow, f"models/{failed.pk}/promote").status_code == 409
    assert _post(owner_client, workflow, "models/999999/promote").status_code == 400
    actions = list(AdminAction.objects.filter(workflow=workflow).order_by("id").values_list("action", "user__username"))
    assert actions == [("promote", "owner"), ("promote", "owner"), ("roll_back", "owner"), ("retrain", "owner")]
    page = owner_client.get(_admin_url(workflow)).content.decode()
    assert "roll_back" in page and "current" in page


def test_without_the_machine_app_the_model_actions_say_so(owner_client, owned_workflow, monkeypatch) -> None:
    from django.apps import apps

    workflow = owned_workflow(n=1)
    real = apps.is_installed
    monkeypatch.setattr(apps, "is_installed", lambda name: False if name == "machine" else real(name))
    page = owner_client.get(_admin_url(workflow)).content.decode()
    assert "is not installed" in page
    response = _post(owner_client, workflow, "retrain")
    assert response.status_code == 503 and "not installed" in response.content.decode()
    assert owner_client.get(f"/dashboards/workflows/{workflow.pk}/statistics/").json()["model"] is None
    assert not AdminAction.objects.exists()
    assert Classification.objects.count() == 0
