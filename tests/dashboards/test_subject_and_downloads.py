"""A subject's history (classifications in applied order, the posterior's path vote by vote, the
aggregated boxes) and the streamed downloads of results and raw classifications."""

from __future__ import annotations

import csv
import io
import json

import pytest

from classifications.models import Classification
from live.services import apply_pending
from projects.models import SubjectWorkflowState

pytestmark = pytest.mark.django_db

# These tests' new volunteers trusted from their first answer (half_trust 0, the engine before issue 25),
# so that their votes move posteriors and reach limits. Sybil resistance: tests/aggregation/test_sybil.py.
TRUST = {"half_trust": 0}

BOXES = {"objects": [{"x": 10, "y": 12, "width": 20, "height": 16, "probability": 0.93}], "expected_risk": 0.07}


def _body(response) -> str:
    assert response.streaming
    return b"".join(response.streaming_content).decode()


def test_a_subjects_path_vote_by_vote_and_its_boxes(client, owned_workflow, users, votes) -> None:
    workflow = owned_workflow(n=3, retirement={"scope": "first_question", "policy": "max:4", **TRUST})
    subject_id = workflow.subject_states.order_by("id").first().subject_id
    votes(workflow, n_volunteers=5, per_volunteer=3)
    apply_pending(workflow.pk)
    state = SubjectWorkflowState.objects.get(workflow=workflow, subject_id=subject_id)
    state.posterior = {**state.posterior, "T2": BOXES}  # as the box aggregation stores them
    state.save()
    client.force_login(users["owner"])
    detail = client.get(f"/dashboards/workflows/{workflow.pk}/subjects/{subject_id}/").json()
    stored = list(Classification.objects.filter(subject_id=subject_id).order_by("applied_seq"))
    assert [c["id"] for c in detail["classifications"]] == [c.pk for c in stored]
    assert len(detail["path"]["T0"]) == 5
    assert detail["path"]["T0"][-1]["posterior"] == pytest.approx(state.posterior["T0"])
    assert detail["path"]["T0"][0]["posterior"] != detail["path"]["T0"][-1]["posterior"]
    assert detail["boxes"] == {"T2": BOXES}
    assert detail["state"]["status"] == "retired" and detail["state"]["retirement_reason"] == "limit"
    assert detail["map"]["T0"] in {"Smooth", "Features or disk"}
    assert detail["images"][0]["url"].endswith(".png") and detail["images"][0]["width"] == 100

    page = client.get(f"/projects/{workflow.project.slug}/workflows/{workflow.pk}/subjects/{subject_id}/").content.decode()
    assert 'id="subject-data"' in page and "0.93" in page and "app/subject.js" in page
    assert page.count("<tr><td>") == 5  # one row per classification


def test_a_subject_of_another_workflow_is_404(client, owned_workflow, make_workflow, users) -> None:
    workflow = owned_workflow(n=1)
    other = make_workflow(n=1, slug="elsewhere")
    client.force_login(users["owner"])
    foreign = other.subject_states.first().subject_id
    assert client.get(f"/dashboards/workflows/{workflow.pk}/subjects/{foreign}/").status_code == 404


def test_results_as_csv_and_json(client, owned_workflow, users, votes) -> None:
    workflow = owned_workflow(n=5, retirement={"scope": "first_question", "policy": "max:3", **TRUST})
    votes(workflow, n_volunteers=4, per_volunteer=5)
    apply_pending(workflow.pk)
    client.force_login(users["owner"])
    response = client.get(f"/dashboards/workflows/{workflow.pk}/download/results.csv")
    assert response["Content-Type"].startswith("text/csv")
    assert f"workflow{workflow.pk}-results.csv" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(_body(response))))
    assert len(rows) == 5
    by_subject = {int(r["subject_id"]): r for r in rows}
    for state in workflow.subject_states.select_related("subject"):
        row = by_subject[state.subject_id]
        assert row["external_id"] == state.subject.external_id
        assert row["status"] == state.status == "retired" and row["retirement_reason"] == "limit"
        assert int(row["classification_count"]) == state.classification_count == 4
        assert json.loads(row["T0.posterior"]) == pytest.approx(state.posterior["T0"])
        best = max(range(4), key=lambda i: state.posterior["T0"][i])
        assert row["T0.answer"] == workflow.tasks["tasks"]["T0"]["answers"][best]["label"]
        assert float(row["T0.probability"]) == pytest.approx(max(state.posterior["T0"]))
    assert "T2.objects" in rows[0] and "T2.expected_risk" in rows[0]

    data = json.loads(_body(client.get(f"/dashboards/workflows/{workflow.pk}/download/results.json")))
    assert len(data) == 5 and {d["subject_id"] for d in data} == set(by_subject)
    assert all(isinstance(d["T0.posterior"], list) for d in data)


def test_raw_classifications_as_csv_and_json(client, owned_workflow, users, votes) -> None:
    workflow = owned_workflow(n=4)
    total = votes(workflow, n_volunteers=3, per_volunteer=4)
    client.force_login(users["owner"])
    rows = list(csv.DictReader(io.StringIO(_body(client.get(f"/dashboards/workflows/{workflow.pk}/download/classifications.csv")))))
    assert len(rows) == total == Classification.objects.filter(workflow=workflow).count()
    first = Classification.objects.order_by("id").first()
    assert int(rows[0]["id"]) == first.pk and json.loads(rows[0]["annotations"]) == first.annotations
    assert rows[0]["applied_seq"] == ""  # not applied yet
    data = json.loads(_body(client.get(f"/dashboards/workflows/{workflow.pk}/download/classifications.json")))
    assert [d["id"] for d in data] == [int(r["id"]) for r in rows]
    assert client.get(f"/dashboards/workflows/{workflow.pk}/download/classifications.xlsx").status_code == 404
    assert client.get(f"/dashboards/workflows/{workflow.pk}/download/everything.csv").status_code == 404


def test_an_empty_workflow_downloads_a_header_and_an_empty_list(client, owned_workflow, users) -> None:
    workflow = owned_workflow(n=0)
    client.force_login(users["owner"])
    body = _body(client.get(f"/dashboards/workflows/{workflow.pk}/download/classifications.csv"))
    assert body.strip().split(",")[0] == "id" and body.count("\n") == 1
    assert json.loads(_body(client.get(f"/dashboards/workflows/{workflow.pk}/download/results.json"))) == []


def test_a_subjects_risk_by_task_and_the_task_it_retired_on(client, owned_workflow, users, votes) -> None:
    # Only T0 required, a loose bar: the subjects retire on the consensus on T0.
    workflow = owned_workflow(n=4, retirement={"required": ["T0"], "bar": 0.2, "min": 1, "budget": 10, **TRUST})
    votes(workflow, n_volunteers=5, per_volunteer=4)
    apply_pending(workflow.pk)
    state = SubjectWorkflowState.objects.filter(workflow=workflow, retirement_reason="consensus:T0").first()
    assert state is not None, list(workflow.subject_states.values_list("retirement_reason", flat=True))
    client.force_login(users["owner"])
    detail = client.get(f"/dashboards/workflows/{workflow.pk}/subjects/{state.subject_id}/").json()
    assert detail["retirement"] == {"reason": "consensus:T0", "kind": "consensus", "task": "T0", "label": "consensus on T0"}
    assert [r["task"] for r in detail["risk"]] == ["T0", "T1", "T2"]  # the tree's order
    t0, t1, t2 = detail["risk"]
    stored = state.posterior["@risk"]
    assert t0 == {"task": "T0", "required": True, **stored["T0"]}
    assert t0["kind"] == "question" and t0["bar"] == 0.2 and t0["settled"] is True and t0["weighted_risk"] < 0.2
    assert t0["reach"] == 1.0 and t0["answers"] >= 1
    assert t2["kind"] == "drawing" and t2["required"] is False and t2["bar"] is None
    assert 0.0 <= t1["reach"] <= 1.0
    # The '@' keys are not tasks: nothing that goes through the tasks shows them.
    assert set(detail["map"]) == set(detail["path"]) == {"T0", "T1"} and set(detail["boxes"]) <= {"T2"}

    page = client.get(f"/projects/{workflow.project.slug}/workflows/{workflow.pk}/subjects/{state.subject_id}/").content.decode()
    assert 'data-testid="task-risk"' in page and "consensus on T0 ·" in page and "T0 settled last" in page
    row = page.split('<tr data-task="T0">', 1)[1].split("</tr>", 1)[0]
    assert "<td>question</td>" in row and 'data-settled="true">✓' in row and ">0.2<" in row
    row = page.split('<tr data-task="T2">', 1)[1].split("</tr>", 1)[0]
    assert '<td title="not required">–</td>' in row

    rows = list(csv.DictReader(io.StringIO(_body(client.get(f"/dashboards/workflows/{workflow.pk}/download/results.csv")))))
    assert not [column for column in rows[0] if "@" in column]
    by_subject = {int(r["subject_id"]): r for r in rows}
    row = by_subject[state.subject_id]
    assert row["retirement_reason"] == "consensus:T0"
    assert float(row["T0.weighted_risk"]) == pytest.approx(stored["T0"]["weighted_risk"]) and row["T0.settled"] == "True"
    assert row["T2.weighted_risk"] != "" and row["T2.settled"] == ""  # not required: neither settled nor not
    data = json.loads(_body(client.get(f"/dashboards/workflows/{workflow.pk}/download/results.json")))
    assert not [key for d in data for key in d if "@" in key]
    assert {d["subject_id"]: d["T0.settled"] for d in data}[state.subject_id] is True
