"""Submitting classifications: idempotency, what counts, validation with field errors and nothing
half-written, batches all-or-nothing, CSRF for browsers, tokens for scripts, and throttling."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from classifications.models import Classification
from classifications.throttles import VolunteerRateThrottle
from projects.models import SubjectWorkflowState

pytestmark = pytest.mark.django_db

BOX = {"tool": 0, "x": 10, "y": 10, "width": 20, "height": 15}


def _first_subject(workflow) -> int:
    return workflow.subject_states.order_by("subject_id").first().subject_id


def _count(workflow, subject_id) -> int:
    return SubjectWorkflowState.objects.get(workflow=workflow, subject_id=subject_id).classification_count


def test_resending_the_same_idempotency_key_counts_nothing_twice(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=2)
    client, subject_id = token_client(), _first_subject(workflow)
    body = payload(workflow, subject_id, key="retry-key-0001")
    first = client.post("/api/classifications/", body, format="json")
    second = client.post("/api/classifications/", body, format="json")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"] and first.json()["counts"] is True
    assert Classification.objects.count() == 1 and _count(workflow, subject_id) == 1


def test_a_key_is_per_volunteer(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=1)
    subject_id = _first_subject(workflow)
    for name in ("alice", "bob"):
        response = token_client(name).post("/api/classifications/", payload(workflow, subject_id, key="same-key-123"), format="json")
        assert response.status_code == 201
    assert _count(workflow, subject_id) == 2


def test_reusing_a_key_for_another_subject_is_rejected(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=2)
    client = token_client()
    a, b = workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True)
    client.post("/api/classifications/", payload(workflow, a, key="reused-key-1"), format="json")
    response = client.post("/api/classifications/", payload(workflow, b, key="reused-key-1"), format="json")
    assert response.status_code == 400 and "idempotency_key" in response.json()
    assert _count(workflow, b) == 0


def test_concurrent_resends_of_one_key_store_one_classification(make_workflow, token_client, payload, transactional_db) -> None:
    workflow = make_workflow(n=1)
    subject_id = _first_subject(workflow)
    body = payload(workflow, subject_id, key="concurrent-key-1")
    statuses: list[int] = []

    from rest_framework.test import APIClient

    client = token_client("racer")
    auth = client._credentials  # noqa: SLF001 - reuse the token in each thread's own client
    barrier = threading.Barrier(4)

    def send() -> None:
        thread_client = APIClient()
        thread_client.credentials(**auth)
        barrier.wait()
        statuses.append(thread_client.post("/api/classifications/", body, format="json").status_code)
        connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses).count(201) == 1 and all(s in (200, 201) for s in statuses)
    assert Classification.objects.filter(idempotency_key="concurrent-key-1").count() == 1
    assert _count(workflow, subject_id) == 1


def test_second_look_at_a_subject_is_stored_but_does_not_count(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=1)
    client, subject_id = token_client(), _first_subject(workflow)
    client.post("/api/classifications/", payload(workflow, subject_id), format="json")
    response = client.post("/api/classifications/", payload(workflow, subject_id), format="json")
    assert response.status_code == 201
    assert response.json()["counts"] is False and response.json()["already_seen"] is True
    assert Classification.objects.count() == 2 and _count(workflow, subject_id) == 1


def _malformed_cases(workflow, subject_id: int, other_workflow_subject: int) -> dict[str, tuple[dict, str]]:
    def with_annotations(annotations: list) -> dict:
        return {"annotations": annotations}

    smooth = {"task": "T0", "value": 0}
    return {
        "unknown workflow": ({"workflow": 999999}, "workflow"),
        "workflow not a number": ({"workflow": "one"}, "workflow"),
        "subject of another workflow": ({"subject": other_workflow_subject}, "subject"),
        "unknown task": (with_annotations([{"task": "T9", "value": 0}]), "annotations"),
        "unknown answer": (with_annotations([{"task": "T0", "value": 7}, {"task": "T2", "value": []}]), "annotations"),
        "answer not an index": (with_annotations([{"task": "T0", "value": "smooth"}, {"task": "T2", "value": []}]), "annotations"),
        # Smooth (answer 0) leads to T2; answering the disk question T1 is a branch the tree does not allow.
        "branch not allowed": (with_annotations([smooth, {"task": "T1", "value": 0}, {"task": "T2", "value": []}]), "annotations"),
        "stops early": (with_annotations([{"task": "T0", "value": 1}]), "annotations"),
        "empty annotations": (with_annotations([]), "annotations"),
        "box outside image": (with_annotations([smooth, {"task": "T2", "value": [{**BOX, "x": 90}]}]), "annotations"),
        "box negative x": (with_annotations([smooth, {"task": "T2", "value": [{**BOX, "x": -1}]}]), "annotations"),
        "box zero width": (with_annotations([smooth, {"task": "T2", "value": [{**BOX, "width": 0}]}]), "annotations"),
        "box negative height": (with_annotations([smooth, {"task": "T2", "value": [{**BOX, "height": -5}]}]), "annotations"),
        "box unknown tool": (with_annotations([smooth, {"task": "T2", "value": [{**BOX, "tool": 3}]}]), "annotations"),
        "box missing field": (with_annotations([smooth, {"task": "T2", "value": [{"tool": 0, "x": 1, "y": 1}]}]), "annotations"),
        "too many marks": (with_annotations([smooth, {"task": "T2", "value": [BOX] * 11}]), "annotations"),
        "bad key characters": ({"idempotency_key": "not a valid key!"}, "idempotency_key"),
        "key too short": ({"idempotency_key": "short"}, "idempotency_key"),
        "key too long": ({"idempotency_key": "k" * 65}, "idempotency_key"),
        "missing key": ({"idempotency_key": None}, "idempotency_key"),
        "metadata not an object": ({"metadata": [1, 2]}, "metadata"),
        "finished before started": ({"finished_at": "2026-11-21T09:00:00Z"}, "finished_at"),
    }


def test_every_malformed_payload_is_a_400_with_field_errors_and_writes_nothing(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=1)
    other = make_workflow(n=1, slug="other-project")
    subject_id, other_subject = _first_subject(workflow), _first_subject(other)
    client = token_client()
    for name, (change, field) in _malformed_cases(workflow, subject_id, other_subject).items():
        body = payload(workflow, subject_id) | change
        if change.get("idempotency_key", "") is None:
            del body["idempotency_key"]
        response = client.post("/api/classifications/", body, format="json")
        assert response.status_code == 400, (name, response.status_code, response.content)
        assert field in response.json(), (name, response.json())
    assert Classification.objects.count() == 0
    assert _count(workflow, subject_id) == 0


def test_oversized_and_unparseable_bodies_are_400(make_workflow, token_client, payload, settings) -> None:
    workflow = make_workflow(n=1)
    client = token_client()
    body = payload(workflow, _first_subject(workflow))
    body["metadata"] = {"padding": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)}
    response = client.post("/api/classifications/", body, format="json")
    assert response.status_code == 400 and "non_field_errors" in response.json()
    body["metadata"] = {"padding": "x" * 5000}  # under the body limit, over the metadata limit
    response = client.post("/api/classifications/", body, format="json")
    assert response.status_code == 400 and "metadata" in response.json()
    response = client.post("/api/classifications/", "{not json", content_type="application/json")
    assert response.status_code == 400 and "non_field_errors" in response.json()
    assert Classification.objects.count() == 0


def test_boxes_and_branches_are_stored_as_sent(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=1)
    annotations = [{"task": "T0", "value": 1}, {"task": "T1", "value": 2}, {"task": "T2", "value": [BOX, {**BOX, "x": 50.5}]}]
    response = token_client().post("/api/classifications/", payload(workflow, _first_subject(workflow), annotations), format="json")
    assert response.status_code == 201
    assert Classification.objects.get().annotations == annotations


def test_a_batch_is_all_or_nothing(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=3)
    client = token_client()
    ids = list(workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True))
    good = [payload(workflow, ids[0]), payload(workflow, ids[1])]
    bad = payload(workflow, ids[2], answers=[{"task": "T0", "value": 9}])
    response = client.post("/api/classifications/batch/", {"classifications": [*good, bad]}, format="json")
    assert response.status_code == 400 and "classifications[2].annotations" in response.json()
    assert Classification.objects.count() == 0
    response = client.post("/api/classifications/batch/", {"classifications": good}, format="json")
    assert response.status_code == 201 and [r["counts"] for r in response.json()] == [True, True]
    # The whole batch re-sent (a retry after a lost response) stores nothing new.
    response = client.post("/api/classifications/batch/", {"classifications": good}, format="json")
    assert response.status_code == 200 and Classification.objects.count() == 2
    too_many = {"classifications": [payload(workflow, ids[0]) for _ in range(51)]}
    assert client.post("/api/classifications/batch/", too_many, format="json").status_code == 400


def test_a_batch_with_one_subject_twice_counts_the_first_look_only(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=2)
    client = token_client()
    ids = list(workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True))
    batch = [payload(workflow, ids[0]), payload(workflow, ids[1]), payload(workflow, ids[0])]
    response = client.post("/api/classifications/batch/", {"classifications": batch}, format="json")
    assert response.status_code == 201
    assert [(r["counts"], r["already_seen"]) for r in response.json()] == [(True, False), (True, False), (False, True)]
    counts = dict(workflow.subject_states.values_list("subject_id", "classification_count"))
    assert counts == {ids[0]: 1, ids[1]: 1}
    stored = Classification.objects.order_by("id")
    assert [c.idempotency_key for c in stored] == [item["idempotency_key"] for item in batch]
    assert [r["id"] for r in response.json()] == [c.pk for c in stored]


def test_a_batch_mixing_resent_and_new_items_answers_in_order(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=3)
    client = token_client()
    ids = list(workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True))
    first = payload(workflow, ids[0])
    stored = client.post("/api/classifications/", first, format="json").json()
    batch = [payload(workflow, ids[1]), first, payload(workflow, ids[2])]
    response = client.post("/api/classifications/batch/", {"classifications": batch}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert [r["idempotency_key"] for r in body] == [item["idempotency_key"] for item in batch]
    assert body[1]["id"] == stored["id"] and Classification.objects.count() == 3


def test_a_deleted_token_is_refused_at_once(make_workflow, token_client, payload) -> None:
    from rest_framework.authtoken.models import Token

    workflow = make_workflow(n=2)
    client = token_client()
    ids = list(workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True))
    assert client.post("/api/classifications/", payload(workflow, ids[0]), format="json").status_code == 201
    Token.objects.filter(user=client.user).delete()  # cached by the first request; forgotten now
    assert client.post("/api/classifications/", payload(workflow, ids[1]), format="json").status_code == 401
    assert Classification.objects.count() == 1


def test_browser_sessions_need_the_csrf_token(make_workflow, browser_client, payload) -> None:
    workflow = make_workflow(n=1)
    body = payload(workflow, _first_subject(workflow))
    assert browser_client.post("/api/classifications/", body, format="json").status_code == 403
    response = browser_client.post("/api/classifications/", body, format="json", HTTP_X_CSRFTOKEN=browser_client.csrf)
    assert response.status_code == 201
    assert Classification.objects.get().volunteer.is_anonymous


def test_an_anonymous_volunteer_keeps_its_history_on_sign_up(make_workflow, browser_client, payload) -> None:
    from django.contrib.auth import get_user_model
    from django.http import HttpRequest

    from classifications.services import claim_anonymous_volunteer

    workflow = make_workflow(n=1)
    browser_client.post(
        "/api/classifications/", payload(workflow, _first_subject(workflow)), format="json", HTTP_X_CSRFTOKEN=browser_client.csrf
    )
    request = HttpRequest()
    request.session = browser_client.session
    user = get_user_model().objects.create_user("carol", password="x")
    volunteer = claim_anonymous_volunteer(request, user)
    assert volunteer.user == user and volunteer.classifications.count() == 1


def test_a_batch_counts_its_classifications_against_the_throttle(make_workflow, token_client, payload, monkeypatch) -> None:
    workflow = make_workflow(n=6)
    monkeypatch.setattr(VolunteerRateThrottle, "THROTTLE_RATES", {"volunteer": "5/min", "address": "1000/min"})
    client = token_client()
    ids = list(workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True))
    four = {"classifications": [payload(workflow, i) for i in ids[:4]]}
    assert client.post("/api/classifications/batch/", four, format="json").status_code == 201
    two = {"classifications": [payload(workflow, i) for i in ids[4:6]]}
    assert client.post("/api/classifications/batch/", two, format="json").status_code == 429  # 4 + 2 > 5
    assert Classification.objects.count() == 4


def test_one_volunteer_is_throttled(make_workflow, token_client, payload, monkeypatch) -> None:
    workflow = make_workflow(n=1)
    monkeypatch.setattr(VolunteerRateThrottle, "THROTTLE_RATES", {"volunteer": "5/min", "address": "1000/min"})
    client = token_client()
    statuses = [
        client.post("/api/classifications/", payload(workflow, _first_subject(workflow)), format="json").status_code
        for _ in range(7)
    ]
    assert statuses[:5] == [201] * 5 and statuses[5:] == [429, 429]
    # Another volunteer from elsewhere is not affected.
    other = token_client("bob")
    assert other.post("/api/classifications/", payload(workflow, _first_subject(workflow)), format="json").status_code == 201
