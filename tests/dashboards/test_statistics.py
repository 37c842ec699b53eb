"""The dashboard's live statistics: numbers that match what PostgreSQL holds after the live loop
aggregated real classifications, the retirement series by reason, classifications per hour, the
projection, the histograms, the events of the Redis stream, and the statistics cache."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from classifications.models import Classification
from dashboards import selectors
from live.services import apply_pending, snapshot_statistics
from projects.models import SubjectWorkflowState

pytestmark = pytest.mark.django_db


def test_statistics_match_the_database(client, owned_workflow, users, votes, django_capture_on_commit_callbacks) -> None:
    # New volunteers trusted from their first answer (half_trust 0) so that max:3 retires on their votes.
    workflow = owned_workflow(n=12, retirement={"scope": "first_question", "policy": "max:3", "half_trust": 0})
    with django_capture_on_commit_callbacks(execute=True):
        total = votes(workflow, n_volunteers=5, per_volunteer=8)
        apply_pending(workflow.pk)  # its retirement events are published on commit
    snapshot_statistics(workflow.pk)
    client.force_login(users["owner"])
    stats = client.get(f"/dashboards/workflows/{workflow.pk}/statistics/").json()

    retired = SubjectWorkflowState.objects.filter(workflow=workflow, status="retired")
    assert retired.count() > 0
    assert stats["subjects"] == 12 and stats["retired"] == retired.count()
    assert stats["retired_by_reason"] == {"limit": retired.count()}
    assert stats["classifications"]["total"] == total and stats["classifications"]["unapplied"] == 0
    assert sum(h["count"] for h in stats["classifications_per_hour"]) == total
    assert len(stats["classifications_per_hour"]) == 24
    last = stats["retired_over_time"]["points"][-1]
    assert last["by_reason"] == {"limit": retired.count()}
    assert stats["retired_over_time"]["points"][0]["by_reason"] == {"limit": 0}
    with_posterior = workflow.subject_states.exclude(posterior=None).count()
    assert sum(stats["posterior_histogram"]["counts"]) == with_posterior
    assert sum(stats["skill_bits_histogram"]["counts"]) == stats["volunteers_with_skill"] == 5
    projection = stats["projection"]
    assert projection["remaining"] == 12 - retired.count()
    assert projection["rate_per_hour"] > 0 and projection["projected_completion"] > stats["taken_at"]
    assert stats["model"] is None  # no machine app, no model
    events = stats["events"]
    assert sorted(e["subject"] for e in events["events"]) == sorted(retired.values_list("subject_id", flat=True))
    # The cursor returns only later events.
    later = client.get(f"/dashboards/workflows/{workflow.pk}/statistics/?after={events['cursor']}").json()
    assert later["events"] == {"cursor": events["cursor"], "events": []}


def test_statistics_are_cached_a_few_seconds(owned_workflow, votes) -> None:
    workflow = owned_workflow(n=4)
    first = selectors.dashboard_statistics(workflow)
    votes(workflow, n_volunteers=1, per_volunteer=4)
    assert selectors.dashboard_statistics(workflow)["classifications"]["total"] == first["classifications"]["total"] == 0
    cache.delete(f"chorus:dashboard:{workflow.pk}")
    assert selectors.dashboard_statistics(workflow)["classifications"]["total"] == 4


def test_projection_from_the_recent_rate(owned_workflow, votes) -> None:
    workflow = owned_workflow(n=10)
    now = timezone.now()
    assert selectors.projection(workflow, 10, 0, now)["projected_completion"] is None  # no rate yet
    votes(workflow, n_volunteers=1, per_volunteer=1)
    Classification.objects.update(created_at=now - timedelta(hours=48))  # collecting for two days
    states = list(workflow.subject_states.all()[:4])
    for state in states:
        SubjectWorkflowState.objects.filter(pk=state.pk).update(status="retired", retired_at=now - timedelta(hours=2), retirement_reason="consensus")
    result = selectors.projection(workflow, 10, 4, now)
    # 4 retired in the 24-hour window: 1/6 per hour, so the 6 left take 36 hours.
    assert result["rate_per_hour"] == pytest.approx(4 / 24, abs=1e-3)
    assert result["projected_completion"] == (now + timedelta(hours=36)).isoformat()
    SubjectWorkflowState.objects.filter(workflow=workflow).update(status="retired", retired_at=now - timedelta(hours=1))
    done = selectors.projection(workflow, 10, 10, now)
    assert done["complete"] is True and done["remaining"] == 0
    assert done["projected_completion"] == (now - timedelta(hours=1)).isoformat()


def test_retired_over_time_buckets_by_hour_over_days(owned_workflow) -> None:
    workflow = owned_workflow(n=4)
    now = timezone.now().replace(minute=30)
    states = list(workflow.subject_states.order_by("id"))
    for i, (state, reason) in enumerate(zip(states, ["consensus", "machine", "consensus"], strict=False)):
        SubjectWorkflowState.objects.filter(pk=state.pk).update(status="retired", retired_at=now - timedelta(hours=10 - i), retirement_reason=reason)
    series = selectors.retired_over_time(workflow, now)
    assert series["bucket"] == "hour"
    assert series["points"][0]["by_reason"] == {"consensus": 0, "machine": 0}
    assert [p["by_reason"] for p in series["points"][1:]] == [
        {"consensus": 1, "machine": 0}, {"consensus": 1, "machine": 1}, {"consensus": 2, "machine": 1},
    ]


def test_whole_workflow_reasons_are_grouped_by_kind_and_task(client, owned_workflow, users) -> None:
    workflow = owned_workflow(n=6)
    now = timezone.now()
    reasons = ["consensus:T0", "consensus:T0", "consensus:T2", "limit", "machine"]
    for i, (state, reason) in enumerate(zip(workflow.subject_states.order_by("id"), reasons, strict=False)):
        SubjectWorkflowState.objects.filter(pk=state.pk).update(status="retired", retired_at=now - timedelta(minutes=5 - i), retirement_reason=reason, classification_count=3)
    stats = selectors.dashboard_statistics(workflow)
    assert stats["retired_by_reason"] == {"consensus:T0": 2, "consensus:T2": 1, "limit": 1, "machine": 1}
    assert stats["retired_by_kind"] == {
        "consensus": {"count": 3, "by_task": {"T0": 2, "T2": 1}},
        "limit": {"count": 1, "by_task": {}},
        "machine": {"count": 1, "by_task": {}},
    }
    last = stats["retired_over_time"]["points"][-1]
    assert last["by_kind"] == {"consensus": 3, "limit": 1, "machine": 1}
    assert last["by_reason"]["consensus:T2"] == 1
    assert stats["retired_over_time"]["points"][0]["by_kind"] == {"consensus": 0, "limit": 0, "machine": 0}
    # The first-question rule's reasons name no task: a kind of their own, as before.
    assert selectors.by_kind({"consensus": 4, "limit": 2}) == {"consensus": {"count": 4, "by_task": {}}, "limit": {"count": 2, "by_task": {}}}
    assert selectors.reason_label("consensus:T2") == "consensus on T2" and selectors.reason_label("limit") == "limit"
    client.force_login(users["owner"])
    page = client.get(f"/projects/{workflow.project.slug}/workflows/{workflow.pk}/dashboard/").content.decode()
    assert "<td>consensus on T0</td>" in page and "<td>consensus on T2</td>" in page and "<td>limit</td>" in page
