"""Who gets in: the dashboard, subject and admin pages, the statistics, the downloads and the admin
actions are for the project's owners and staff; volunteers get 403 and anonymous visitors the
login page. The login page itself, and the home page's links for owners."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def _urls(workflow) -> dict[str, str]:
    slug, wid = workflow.project.slug, workflow.pk
    subject_id = workflow.subject_states.first().subject_id
    return {
        "dashboard": f"/projects/{slug}/workflows/{wid}/dashboard/",
        "subject": f"/projects/{slug}/workflows/{wid}/subjects/{subject_id}/",
        "admin": f"/projects/{slug}/workflows/{wid}/admin/",
        "statistics": f"/dashboards/workflows/{wid}/statistics/",
        "subject_json": f"/dashboards/workflows/{wid}/subjects/{subject_id}/",
        "results_csv": f"/dashboards/workflows/{wid}/download/results.csv",
        "classifications_json": f"/dashboards/workflows/{wid}/download/classifications.json",
    }


POSTS = {
    "pause": {},
    "resume": {},
    "gold-rate": {"gold_feedback_rate": "0.5"},
    "retirement": {"scope": "first_question", "policy": "max:2", "estimator": ""},
    "active-learning": {"acquisition": "random", "exploration_share": "0.5", "machine_threshold": "0.9", "retrain_every": "5"},
    "retrain": {},
    "roll-back": {},
}


def test_anonymous_visitors_are_sent_to_the_login_page(client, owned_workflow) -> None:
    workflow = owned_workflow(n=2)
    for name, url in _urls(workflow).items():
        response = client.get(url)
        assert response.status_code == 302, name
        assert response["Location"].startswith("/accounts/login/?next="), name
    response = client.post(f"/dashboards/workflows/{workflow.pk}/pause/")
    assert response.status_code == 302
    workflow.refresh_from_db()
    assert workflow.active is True


def test_a_volunteer_gets_403_everywhere_and_changes_nothing(client, owned_workflow, users) -> None:
    from projects.models import AdminAction

    workflow = owned_workflow(n=2)
    client.force_login(users["volunteer"])
    for name, url in _urls(workflow).items():
        assert client.get(url).status_code == 403, name
    for action, data in POSTS.items():
        assert client.post(f"/dashboards/workflows/{workflow.pk}/{action}/", data).status_code == 403, action
    workflow.refresh_from_db()
    assert workflow.active is True and workflow.gold_feedback_rate == 1.0 and workflow.retirement == {}
    assert not AdminAction.objects.exists()


def test_owners_of_another_project_get_403(client, owned_workflow, make_workflow, users) -> None:
    owned_workflow(n=1)
    other = make_workflow(n=1, slug="other-project")
    client.force_login(users["owner"])
    assert client.get(_urls(other)["dashboard"]).status_code == 403
    assert client.get(_urls(other)["admin"]).status_code == 403


def test_owners_and_staff_get_in(client, owned_workflow, users) -> None:
    workflow = owned_workflow(n=2)
    for role in ("owner", "staff"):
        client.force_login(users[role])
        for name, url in _urls(workflow).items():
            assert client.get(url).status_code == 200, (role, name)


def test_a_page_of_another_projects_slug_is_404(client, owned_workflow, users) -> None:
    workflow = owned_workflow(n=1)
    client.force_login(users["owner"])
    assert client.get(f"/projects/wrong-slug/workflows/{workflow.pk}/dashboard/").status_code == 404
    assert client.get(f"/dashboards/workflows/{workflow.pk + 999}/statistics/").status_code == 404


def test_a_scientist_signs_in_on_the_login_page_and_lands_on_the_dashboard(client, owned_workflow) -> None:
    workflow = owned_workflow(n=1)
    dashboard = _urls(workflow)["dashboard"]
    page = client.get(f"/accounts/login/?next={dashboard}")
    assert page.status_code == 200 and b'name="password"' in page.content
    wrong = client.post("/accounts/login/", {"username": "owner", "password": "nope", "next": dashboard})
    assert wrong.status_code == 200 and b"didn't match" in wrong.content
    response = client.post("/accounts/login/", {"username": "owner", "password": "pw-owner", "next": dashboard})
    assert response.status_code == 302 and response["Location"] == dashboard
    assert client.get(dashboard).status_code == 200
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get(dashboard).status_code == 302


def test_the_home_page_links_dashboards_only_for_their_owners(client, owned_workflow, users) -> None:
    workflow = owned_workflow(n=1)
    dashboard = _urls(workflow)["dashboard"]
    assert dashboard not in client.get("/").content.decode()
    client.force_login(users["volunteer"])
    assert dashboard not in client.get("/").content.decode()
    client.force_login(users["owner"])
    html = client.get("/").content.decode()
    assert dashboard in html and _urls(workflow)["admin"] in html
