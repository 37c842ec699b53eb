"""One client cannot buy influence or the gold set (issue 25), through the Django test client with the
real PostgreSQL and Redis: new anonymous volunteers are created at a bounded rate per client address
(the address as the throttles compute it), and gold feedback stops after a daily cap per volunteer
and one per client address."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from classifications import services
from classifications.models import Classification, Volunteer
from classifications.services import NewAnonymousVolunteerThrottle

pytestmark = pytest.mark.django_db


@pytest.fixture
def budget(monkeypatch) -> int:
    """Three new anonymous volunteers per address per hour."""
    monkeypatch.setattr(NewAnonymousVolunteerThrottle, "THROTTLE_RATES", {"new_anonymous": "3/h"})
    return 3


def _cookieless(path: str = "/api/session/", **headers: str):
    """A request from a client that sends no cookie at all: a new client each time."""
    return APIClient().get(path, **headers)


def test_new_anonymous_volunteers_are_bounded_per_address(budget) -> None:
    keeper = APIClient()
    first = keeper.get("/api/session/", REMOTE_ADDR="203.0.113.5")
    assert first.status_code == 200
    for _ in range(budget - 1):
        assert _cookieless(REMOTE_ADDR="203.0.113.5").status_code == 200
    assert Volunteer.objects.count() == budget

    refused = _cookieless(REMOTE_ADDR="203.0.113.5")
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 3600
    assert "session cookie" in refused.json()["detail"]
    # Naming another address in X-Forwarded-For changes nothing: no proxy is trusted (CHORUS_NUM_PROXIES 0).
    for n in range(5):
        assert _cookieless(REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code == 429
    assert Volunteer.objects.count() == budget  # refused requests wrote nothing

    # The client that kept its cookie goes on as the same volunteer; another address has its own budget.
    again = keeper.get("/api/session/", REMOTE_ADDR="203.0.113.5")
    assert again.status_code == 200 and again.json()["volunteer"]["id"] == first.json()["volunteer"]["id"]
    assert _cookieless(REMOTE_ADDR="203.0.113.77").status_code == 200
    assert Volunteer.objects.count() == budget + 1


def test_every_volunteer_endpoint_refuses_past_the_budget_and_writes_nothing(budget, make_workflow, payload) -> None:
    workflow = make_workflow(n=2)
    subject_id = workflow.subject_states.order_by("subject_id").first().subject_id
    for _ in range(budget):
        assert _cookieless(REMOTE_ADDR="203.0.113.9").status_code == 200
    assert _cookieless(f"/api/workflows/{workflow.pk}/next-subjects/", REMOTE_ADDR="203.0.113.9").status_code == 429
    # A cookieless post with a CSRF cookie and header (the fault run's vote stuffing): refused, nothing stored.
    client = APIClient(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = "a" * 32
    response = client.post("/api/classifications/", payload(workflow, subject_id), format="json",
                           HTTP_X_CSRFTOKEN="a" * 32, REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 429
    assert Classification.objects.count() == 0 and Volunteer.objects.count() == budget


def test_behind_trusted_proxies_the_budget_is_per_forwarded_client(budget, settings) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    for _ in range(budget):
        assert _cookieless(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 200
    assert _cookieless(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 429
    # The proxy's own entry is what counts: a client-supplied first entry does not make it someone else.
    assert _cookieless(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="192.0.2.1, 198.51.100.1").status_code == 429
    assert _cookieless(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 200


def test_with_redis_unreachable_the_budget_falls_back_to_a_local_count(budget, settings, rf) -> None:
    # A real Redis that is not there: the cache points at a closed port.
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:9/1"}}
    request = rf.get("/api/session/", REMOTE_ADDR="203.0.113.200")
    for _ in range(budget):
        services.charge_new_anonymous_volunteer(request)  # counted in this process
    with pytest.raises(services.AnonymousVolunteerLimit):
        services.charge_new_anonymous_volunteer(request)
    services.charge_new_anonymous_volunteer(rf.get("/api/session/", REMOTE_ADDR="203.0.113.201"))


# -- gold stays gold ----------------------------------------------------------------------------------

def _gold_workflow(make_workflow, n: int = 8):
    workflow = make_workflow(n=n, gold_every=1, gold_feedback_rate=1.0)  # every subject gold, feedback on all
    return workflow, list(workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True))


def test_gold_feedback_stops_after_the_daily_cap(make_workflow, token_client, payload, settings) -> None:
    settings.CHORUS_GOLD_FEEDBACK_PER_DAY = 3
    workflow, subjects = _gold_workflow(make_workflow)
    client = token_client()
    sent = [payload(workflow, s, answers=[{"task": "T0", "value": 2}, {"task": "T2", "value": []}]) for s in subjects]
    bodies = [client.post("/api/classifications/", item, format="json").json() for item in sent]
    assert [body["gold"] is not None for body in bodies] == [True] * 3 + [False] * 5
    assert bodies[0]["gold"] == {"answers": {"T0": 0}, "feedback": "Experts said: Smooth"}
    # Re-sending a key answers as the first time, whichever side of the cap it was.
    assert client.post("/api/classifications/", sent[1], format="json").json()["gold"] is not None
    assert client.post("/api/classifications/", sent[6], format="json").json()["gold"] is None
    # A second look: at a subject already shown, shown again (nothing new); past the cap, still nothing.
    assert client.post("/api/classifications/", payload(workflow, subjects[0]), format="json").json()["gold"] is not None
    assert client.post("/api/classifications/", payload(workflow, subjects[7]), format="json").json()["gold"] is None

    # A batch of junk on every gold subject: the cap holds inside one request too.
    other = token_client("bob")
    batch = other.post("/api/classifications/batch/", {"classifications": [payload(workflow, s) for s in subjects]}, format="json")
    assert batch.status_code == 201
    assert sum(item["gold"] is not None for item in batch.json()) == 3

    # The next UTC day brings a new cap: yesterday's rows no longer count.
    Classification.objects.filter(volunteer__user=client.user).update(
        created_at=Classification.objects.filter(volunteer__user=client.user).first().created_at - timedelta(days=1))
    fresh = make_workflow(n=4, gold_every=1, gold_feedback_rate=1.0, slug="more-galaxies")
    more = [client.post("/api/classifications/", payload(fresh, s), format="json").json()["gold"]
            for s in fresh.subject_states.order_by("subject_id").values_list("subject_id", flat=True)]
    assert [g is not None for g in more] == [True, True, True, False]


def test_no_gold_feedback_with_a_cap_of_zero_nor_on_a_refused_answer(make_workflow, token_client, payload, settings) -> None:
    workflow, subjects = _gold_workflow(make_workflow, n=2)
    client = token_client()
    refused = client.post("/api/classifications/", payload(workflow, subjects[0], answers=[{"task": "T0", "value": 9}]), format="json")
    assert refused.status_code == 400 and "gold" not in refused.json() and "Experts" not in refused.content.decode()
    settings.CHORUS_GOLD_FEEDBACK_PER_DAY = 0
    assert client.post("/api/classifications/", payload(workflow, subjects[1]), format="json").json()["gold"] is None


def test_gold_feedback_stops_after_the_address_daily_cap_over_all_its_volunteers(make_workflow, token_client, payload,
                                                                                 settings, monkeypatch) -> None:
    """Many volunteers behind one address (each its own session or token) share one cap of distinct
    gold subjects a day; a subject already shown there costs nothing; another address has its own;
    with Redis unreachable no feedback is given, and the classification is stored as ever."""
    settings.CHORUS_GOLD_FEEDBACK_PER_DAY = 3
    settings.CHORUS_GOLD_FEEDBACK_PER_ADDRESS_PER_DAY = 4
    workflow, subjects = _gold_workflow(make_workflow)

    def shown(client, order, address="198.51.100.7") -> list[int]:
        bodies = [client.post("/api/classifications/", payload(workflow, s), format="json", REMOTE_ADDR=address).json() for s in order]
        return [s for s, body in zip(order, bodies, strict=True) if body["gold"] is not None]

    assert shown(token_client("v1"), subjects) == subjects[:3]
    assert shown(token_client("v2"), subjects) == subjects[:3]  # the same three: nothing new for the address
    assert shown(token_client("v3"), subjects[::-1]) == [subjects[7]]  # the fourth distinct subject, then the cap
    assert shown(token_client("v4"), subjects[::-1], address="203.0.113.9") == subjects[::-1][:3]

    from classifications import throttles

    monkeypatch.setattr(throttles, "throttle_redis", lambda: None)
    before = Classification.objects.count()
    assert shown(token_client("v5"), subjects, address="192.0.2.1") == []
    assert Classification.objects.count() == before + len(subjects)
