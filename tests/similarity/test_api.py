"""The similarity API and page over HTTP: only owners and staff (session or token), 400 with field
errors for bad input, 409 before any embedding, every action reachable; the subject page links to
"more like this"."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from projects.models import SubjectWorkflowState
from similarity.models import SentFirst

pytestmark = pytest.mark.django_db


def _api(workflow, path: str) -> str:
    return f"/api/workflows/{workflow.pk}/similarity/{path}"


@pytest.fixture
def owner(scientist) -> APIClient:
    client = APIClient()
    client.force_login(scientist)
    return client


def _subjects(workflow) -> list[int]:
    return list(SubjectWorkflowState.objects.filter(workflow=workflow).order_by("subject_id").values_list("subject_id", flat=True))


def test_only_the_projects_owners_and_staff_may_search(embedded_workflow, scientist, django_user_model) -> None:
    workflow = embedded_workflow()
    url = _api(workflow, f"similar/?subjects={_subjects(workflow)[0]}")
    assert APIClient().get(url).status_code in (401, 403)
    stranger = APIClient()
    stranger.force_login(django_user_model.objects.create_user("stranger", password="pw"))
    assert stranger.get(url).status_code == 403
    staff = APIClient()
    staff.force_login(django_user_model.objects.create_user("staffer", password="pw", is_staff=True))
    assert staff.get(url).status_code == 200
    scripted = APIClient()
    scripted.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=scientist).key}")
    response = scripted.get(url + "&count=20")
    assert response.status_code == 200 and len(response.json()["results"]) == 20
    assert APIClient().get("/api/workflows/999999/similarity/similar/?subjects=1").status_code == 404


def test_searches_anomalies_and_map_over_http(embedded_workflow, owner) -> None:
    workflow = embedded_workflow(odd=True)
    ids = _subjects(workflow)
    body = owner.get(_api(workflow, f"similar/?subjects={ids[0]},{ids[1]}&count=5")).json()
    assert [q["id"] for q in body["query"]] == ids[:2] and len(body["results"]) == 5
    assert {"image", "consensus", "status", "retirement", "distance", "external_id"} <= set(body["results"][0])
    odd = owner.get(_api(workflow, "anomalies/?count=3")).json()
    assert odd["results"][0]["external_id"] == "green-square"
    points = owner.get(_api(workflow, f"map/?selected={ids[3]}")).json()["points"]
    assert len(points) == 41 and [p["id"] for p in points if p["selected"]] == [ids[3]]
    spaces = owner.get(_api(workflow, "spaces/")).json()["spaces"]
    assert len(spaces) == 1 and spaces[0]["current"] and spaces[0]["state"] == "ready"


@pytest.mark.parametrize(("query", "field"), [
    ("similar/", "subjects"), ("similar/?subjects=a,b", "subjects"), ("similar/?subjects=1&count=0", "count"),
    ("similar/?subjects=1&count=x", "count"), ("anomalies/?offset=-1", "non_field_errors"), ("anomalies/?status=gone", "non_field_errors"),
    ("map/?question=T9", "non_field_errors"), ("map/?selected=x", "selected"),
])
def test_bad_input_is_a_400_naming_the_field(embedded_workflow, owner, query, field) -> None:
    workflow = embedded_workflow()
    response = owner.get(_api(workflow, query))
    assert response.status_code == 400 and field in response.json()


def test_before_any_embedding_the_api_says_so(galaxy_workflow, owner) -> None:
    workflow = galaxy_workflow()
    response = owner.get(_api(workflow, f"similar/?subjects={_subjects(workflow)[0]}"))
    assert response.status_code == 409 and "no embeddings yet" in response.json()["detail"]
    assert owner.post(_api(workflow, "spaces/")).status_code == 409


def test_send_first_and_a_new_question_over_http(embedded_workflow, owner) -> None:
    workflow = embedded_workflow()
    ids = _subjects(workflow)
    sent = owner.post(_api(workflow, "send-first/"), {"subjects": ids[:3]}, format="json")
    assert sent.status_code == 200 and sent.json()["queued"] == 3
    assert owner.get(_api(workflow, "send-first/")).json()["subjects"] == ids[:3]
    assert owner.post(_api(workflow, "send-first/"), {"subjects": ["x"]}, format="json").status_code == 400
    assert owner.delete(_api(workflow, "send-first/"), {"subjects": [ids[0]]}, format="json").json() == {"withdrawn": 1}
    assert SentFirst.objects.filter(workflow=workflow).count() == 2
    created = owner.post(_api(workflow, "questions/"), {"name": "bright", "answers": ["no", "yes"]}, format="json")
    assert created.status_code == 201
    qid = created.json()["id"]
    assert owner.post(_api(workflow, "questions/"), {"name": "bright", "answers": ["no"]}, format="json").status_code == 400
    labels = [{"subject": i, "answer": n % 2} for n, i in enumerate(ids[:12])]
    assert owner.post(_api(workflow, f"questions/{qid}/labels/"), {"labels": labels}, format="json").json()["n_labels"] == 12
    bad = owner.post(_api(workflow, f"questions/{qid}/labels/"), {"labels": [{"subject": ids[0], "answer": 7}]}, format="json")
    assert bad.status_code == 400 and "item 1" in bad.json()["labels"][0]
    assert owner.post(_api(workflow, f"questions/{qid}/labels/"), {"csv": "name\nx\n"}, format="json").status_code == 400
    fitted = owner.post(_api(workflow, f"questions/{qid}/fit/"))
    assert fitted.status_code == 200 and fitted.json()["metrics"]["n_labels"] == 12
    ranking = owner.get(_api(workflow, f"questions/{qid}/ranking.csv"))
    assert ranking.status_code == 200 and ranking["Content-Type"].startswith("text/csv")
    lines = b"".join(ranking.streaming_content).decode().splitlines()
    assert lines[0].startswith("rank,subject_id,external_id") and len(lines) == 41
    assert owner.get(_api(workflow, f"questions/{qid}/ranking.csv?answer=5")).status_code == 400
    listed = owner.get(_api(workflow, "questions/")).json()["questions"]
    assert [q["name"] for q in listed] == ["bright"] and listed[0]["stale"] is False


def test_the_subject_page_links_to_more_like_this_and_the_page_is_for_owners(embedded_workflow, owner, client) -> None:
    workflow = embedded_workflow()
    subject_id = _subjects(workflow)[0]
    base = f"/projects/{workflow.project.slug}/workflows/{workflow.pk}"
    page = owner.get(f"{base}/subjects/{subject_id}/").content.decode()
    assert f'{base}/similarity/?subjects={subject_id}' in page and "More like this" in page
    similarity = owner.get(f"{base}/similarity/?subjects={subject_id}")
    assert similarity.status_code == 200 and b"similarity.js" in similarity.content and b"similarity-config" in similarity.content
    assert client.get(f"{base}/similarity/").status_code == 302  # to the login page
