"""The next-subjects queue: never a subject twice, retired ones only when nothing else remains,
priority order, prefetch exclusion, and no gold answer in what volunteers see."""

from __future__ import annotations

import json

import pytest

from classifications.services import volunteer_for_user
from projects.models import SubjectWorkflowState
from projects.services import retire_subject

pytestmark = pytest.mark.django_db


def _next(client, workflow, count=20, exclude=""):
    response = client.get(f"/api/workflows/{workflow.pk}/next-subjects/", {"count": count, "exclude": exclude})
    assert response.status_code == 200, response.content
    return response.json()


def test_a_volunteer_never_gets_a_subject_twice(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=5)
    client = token_client()
    served: list[int] = []
    for _ in range(5):
        body = _next(client, workflow, count=1)
        assert len(body["subjects"]) == 1 and not body["finished"]
        subject_id = body["subjects"][0]["id"]
        assert subject_id not in served
        served.append(subject_id)
        assert client.post("/api/classifications/", payload(workflow, subject_id), format="json").status_code == 201
    body = _next(client, workflow)
    assert body == {"subjects": [], "finished": True}
    assert sorted(served) == sorted(workflow.subject_states.values_list("subject_id", flat=True))


def test_retired_subjects_are_not_served_while_unretired_ones_remain(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=6)
    states = list(workflow.subject_states.order_by("subject_id"))
    for state in states[:4]:
        retire_subject(state, "consensus")
    client = token_client()
    body = _next(client, workflow)
    assert {s["id"] for s in body["subjects"]} == {states[4].subject_id, states[5].subject_id}
    assert not any(s["retired"] for s in body["subjects"])
    for state in states[4:]:
        client.post("/api/classifications/", payload(workflow, state.subject_id), format="json")
    # Nothing unretired is left for this volunteer: retired ones follow, flagged, and do not count.
    body = _next(client, workflow)
    assert {s["id"] for s in body["subjects"]} == {s.subject_id for s in states[:4]}
    assert all(s["retired"] for s in body["subjects"])
    response = client.post("/api/classifications/", payload(workflow, states[0].subject_id), format="json")
    assert response.status_code == 201
    assert response.json()["counts"] is False and response.json()["subject_retired"] is True
    states[0].refresh_from_db()
    assert states[0].classification_count == 0


def test_subjects_come_in_priority_order_and_prefetched_ones_are_excluded(make_workflow, token_client) -> None:
    workflow = make_workflow(n=6)
    for rank, state in enumerate(workflow.subject_states.order_by("subject_id")):
        SubjectWorkflowState.objects.filter(pk=state.pk).update(priority=rank)
    ids = list(workflow.subject_states.order_by("-priority").values_list("subject_id", flat=True))
    client = token_client()
    assert [s["id"] for s in _next(client, workflow, count=3)["subjects"]] == ids[:3]
    exclude = ",".join(map(str, ids[:3]))
    assert [s["id"] for s in _next(client, workflow, count=3, exclude=exclude)["subjects"]] == ids[3:6]


def test_served_subjects_carry_loadable_image_urls_and_public_metadata_only(make_workflow, token_client, client) -> None:
    workflow = make_workflow(n=2, gold_every=1)
    body = _next(token_client(), workflow)
    text = json.dumps(body)
    assert "gold" not in text and "#secret" not in text and "hidden" not in text
    image = body["subjects"][0]["images"][0]
    assert (image["width"], image["height"]) == (100, 80)
    response = client.get(image["url"].replace("http://testserver", ""))
    assert response.status_code == 200
    assert b"".join(response.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"


def test_gold_answers_are_shown_only_after_the_volunteer_answered(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=2, gold_every=1, gold_feedback_rate=1.0)
    client = token_client()
    detail = client.get(f"/api/workflows/{workflow.pk}/").json()
    assert "gold" not in json.dumps(detail).replace("gold_feedback_rate", "")
    subject_id = _next(client, workflow)["subjects"][0]["id"]
    # Volunteers cannot read subjects with gold through the owners' endpoints either.
    assert client.get(f"/api/workflows/{workflow.pk}/subjects/").status_code == 403
    body = client.post("/api/classifications/", payload(workflow, subject_id), format="json").json()
    assert body["gold"] == {"answers": {"T0": 0}, "feedback": "Experts said: Smooth"}


def test_no_gold_feedback_when_the_workflow_rate_is_zero(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=1, gold_every=1, gold_feedback_rate=0.0)
    client = token_client()
    subject_id = _next(client, workflow)["subjects"][0]["id"]
    assert client.post("/api/classifications/", payload(workflow, subject_id), format="json").json()["gold"] is None


def test_paused_workflow_serves_nothing(make_workflow, token_client) -> None:
    workflow = make_workflow(n=2, active=False)
    response = token_client().get(f"/api/workflows/{workflow.pk}/next-subjects/")
    assert response.status_code == 400 and "workflow" in response.json()


@pytest.mark.parametrize("count", ["0", "21", "x"])
def test_bad_count_is_a_field_error(make_workflow, token_client, count) -> None:
    workflow = make_workflow(n=1)
    response = token_client().get(f"/api/workflows/{workflow.pk}/next-subjects/", {"count": count})
    assert response.status_code == 400 and "count" in response.json()


def test_history_and_counts_are_the_volunteers_own(make_workflow, token_client, payload) -> None:
    workflow = make_workflow(n=3)
    alice, bob = token_client("alice"), token_client("bob")
    subject_ids = list(workflow.subject_states.values_list("subject_id", flat=True))
    alice.post("/api/classifications/", payload(workflow, subject_ids[0]), format="json")
    alice.post("/api/classifications/", payload(workflow, subject_ids[0]), format="json")  # seen: stored, not counted
    bob.post("/api/classifications/", payload(workflow, subject_ids[1]), format="json")
    history = alice.get("/api/me/classifications/").json()["results"]
    alice_volunteer = volunteer_for_user(alice.user)
    assert len(history) == 2 and {c["volunteer"] for c in history} == {alice_volunteer.pk}
    me = alice.get("/api/me/").json()
    assert me["workflows"][0]["classifications"] == 2 and me["workflows"][0]["counted"] == 1
    # Volunteers read nothing of others; the project's owner reads everything of the project.
    assert alice.get(f"/api/projects/{workflow.project_id}/classifications/").status_code == 403
    workflow.project.owners.add(bob.user)
    everything = bob.get(f"/api/projects/{workflow.project_id}/classifications/").json()["results"]
    assert len(everything) == 3
    subjects = bob.get(f"/api/workflows/{workflow.pk}/subjects/").json()["results"]
    assert {s["id"] for s in subjects} == set(subject_ids)


def test_projects_list_shows_active_workflows_with_counts(make_workflow, client) -> None:
    workflow = make_workflow(n=3)
    retire_subject(workflow.subject_states.first(), "limit")
    make_workflow(n=1, slug="paused-project", active=False)
    projects = {p["slug"]: p for p in client.get("/api/projects/").json()}
    assert projects["test-galaxies"]["workflows"] == [
        {"id": workflow.pk, "name": "Shapes", "active": True, "subject_count": 3, "retired_count": 1}
    ]
    assert projects["paused-project"]["workflows"] == []


def test_openapi_schema_and_docs_are_served(client) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/workflows/{id}/next-subjects/" in paths and "/api/classifications/" in paths
    assert client.get("/api/docs/").status_code == 200


def _set_priorities(workflow, priorities) -> list[int]:
    """Give the workflow's subjects these priorities (in subject id order); their ids, best first."""
    states = list(workflow.subject_states.order_by("subject_id"))
    for state, priority in zip(states, priorities, strict=True):
        SubjectWorkflowState.objects.filter(pk=state.pk).update(priority=priority)
    return [s.subject_id for s in sorted(states, key=lambda s: -priorities[states.index(s)])]


def test_volunteers_asking_at_once_get_different_subjects_of_a_nearly_tied_queue(make_workflow, token_client, clean_redis) -> None:
    workflow = make_workflow(n=8)
    ids = _set_priorities(workflow, [0.5 + 0.001 * i for i in range(8)])
    served = [[s["id"] for s in _next(token_client(f"v{i}"), workflow, count=2)["subjects"]] for i in range(4)]
    # Plain priority order would have handed all four the same two subjects.
    assert served[0] == ids[:2]
    assert sorted(sum(served, [])) == sorted(ids)
    # Once every subject is held by one browser, the order is the priorities' again.
    assert [s["id"] for s in _next(token_client("v4"), workflow, count=2)["subjects"]] == ids[:2]


def test_a_far_more_valuable_subject_is_still_served_to_everyone(make_workflow, token_client, clean_redis) -> None:
    workflow = make_workflow(n=6)
    ids = _set_priorities(workflow, [0.9, 0.1, 0.11, 0.12, 0.13, 0.14])
    for i in range(3):  # 0.9 / (1 + 2) is still above 0.14
        assert _next(token_client(f"v{i}"), workflow, count=1)["subjects"][0]["id"] == ids[0]


def test_without_redis_the_queue_is_plain_priority_order(make_workflow, token_client, clean_redis, monkeypatch) -> None:
    from classifications import throttles

    workflow = make_workflow(n=6)
    ids = _set_priorities(workflow, [0.5 + 0.001 * i for i in range(6)])
    # As after a failed call: the circuit is open, the queue does not wait on Redis.
    monkeypatch.setitem(throttles._redis_state, "down_until", float("inf"))
    for i in range(2):
        assert [s["id"] for s in _next(token_client(f"v{i}"), workflow, count=2)["subjects"]] == ids[:2]
