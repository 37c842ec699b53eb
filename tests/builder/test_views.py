"""The builder's pages and JSON endpoints: only scientists who own the project get in (volunteers 403,
anonymous visitors the login page, JSON endpoints 403); bad input is a 400 with the field errors as
JSON — for the settings, the admin page's own messages — and changes nothing; uploads are refused
from their declared size before they are read (a 5 GB one over a real socket), and file by file as
they stream in; launch needs subjects."""

from __future__ import annotations

import copy
import json
import socket
from urllib.parse import urlparse

import pytest

from tests.builder.conftest import TWO_QUESTIONS_AND_DRAWING, images, manifest_file

pytestmark = pytest.mark.django_db


def _pages(workflow) -> dict[str, str]:
    return {
        "index": "/builder/",
        "project": f"/builder/projects/{workflow.project.slug}/",
        "workflow": f"/builder/projects/{workflow.project.slug}/workflows/{workflow.pk}/",
    }


def _posts(workflow) -> dict[str, dict]:
    wid, slug = workflow.pk, workflow.project.slug
    return {
        "/builder/projects/": {"title": "Mine now"},
        f"/builder/projects/{slug}/workflows/": {"name": "Another"},
        f"/builder/workflows/{wid}/tree/check/": {},
        f"/builder/workflows/{wid}/tree/": {},
        f"/builder/workflows/{wid}/subjects/": {},
        f"/builder/workflows/{wid}/retirement/": {"scope": "workflow", "min": "2"},
        f"/builder/workflows/{wid}/gold-rate/": {"gold_feedback_rate": "0.1"},
        f"/builder/workflows/{wid}/machine/": {"acquisition": "random", "exploration_share": "0.5", "machine_threshold": "0.9", "retrain_every": "5"},
        f"/builder/workflows/{wid}/launch/": {},
        f"/builder/workflows/{wid}/pause/": {},
    }


def _unchanged(workflow) -> None:
    from projects.models import AdminAction, Project, Workflow

    workflow.refresh_from_db()
    assert (workflow.active, workflow.gold_feedback_rate, workflow.retirement, workflow.version_text) == (False, 1.0, {}, "1.0")
    assert Project.objects.count() == 1 and Workflow.objects.count() == 1 and not AdminAction.objects.exists()


def test_anonymous_visitors_are_sent_to_sign_in_and_the_endpoints_refuse(client, draft) -> None:
    workflow = draft()
    for name, url in _pages(workflow).items():
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next="), name
    for url, data in _posts(workflow).items():
        response = client.post(url, data)
        assert response.status_code == 403 and response.json() == {"detail": ["Sign in first."]}, url
    _unchanged(workflow)


@pytest.mark.parametrize("role", ["volunteer", "owner", "staff"])
def test_without_the_scientist_role_nobody_gets_in_even_an_owner_or_staff(client, draft, people, role) -> None:
    workflow = draft()
    workflow.project.owners.add(people["owner"])
    client.force_login(people[role])
    for name, url in _pages(workflow).items():
        assert client.get(url).status_code == 403, name
    for url, data in _posts(workflow).items():
        response = client.post(url, data)
        assert response.status_code == 403 and "scientists" in response.json()["detail"][0], url
    home = client.get("/").content.decode()
    assert "/builder/" not in home
    _unchanged(workflow)


def test_a_scientist_builds_only_their_own_projects(client, draft, people) -> None:
    from django.contrib.auth import get_user_model

    from projects.authoring import grant_scientist

    workflow = draft()
    other = get_user_model().objects.create_user("other-scientist", password="pw")
    grant_scientist(other)
    client.force_login(other)
    assert client.get("/builder/").status_code == 200
    assert workflow.project.title not in client.get("/builder/").content.decode()
    for name in ("project", "workflow"):
        assert client.get(_pages(workflow)[name]).status_code == 403, name
    response = client.post(f"/builder/workflows/{workflow.pk}/gold-rate/", {"gold_feedback_rate": "0.1"})
    assert response.status_code == 403 and response.json() == {"detail": ["Only the project's owners may build it."]}
    _unchanged(workflow)


def test_a_scientist_makes_a_project_and_a_draft_workflow(client, people) -> None:
    from projects.models import Project

    client.force_login(people["scientist"])
    home = client.get("/").content.decode()
    assert 'href="/builder/"' in home
    response = client.post("/builder/projects/", {"title": "Galaxy Builder", "description": "Shapes"})
    assert response.status_code == 201 and response.json()["url"] == "/builder/projects/galaxy-builder/"
    project = Project.objects.get(slug="galaxy-builder")
    assert list(project.owners.all()) == [people["scientist"]]
    assert client.post("/builder/projects/", {"title": "Again", "slug": "galaxy-builder"}).json() == {
        "slug": ["a project with the slug 'galaxy-builder' exists already"]}
    assert client.post("/builder/projects/", {"title": "", "slug": "Bad Slug"}).json() == {
        "title": ["a project needs a title"], "slug": ["lower-case letters, digits, '-' or '_', at most 50"]}
    response = client.post("/builder/projects/galaxy-builder/workflows/", {"name": "Shapes"})
    assert response.status_code == 201
    workflow = project.workflows.get()
    assert response.json()["url"] == f"/builder/projects/galaxy-builder/workflows/{workflow.pk}/"
    assert not workflow.active and workflow.launched_at is None and workflow.versions.count() == 1
    page = client.get(response.json()["url"])
    assert page.status_code == 200 and b'id="builder-tree"' in page.content and b'sandbox="allow-scripts allow-forms"' in page.content
    assert client.post("/builder/projects/galaxy-builder/workflows/", {"name": " "}).json() == {"name": ["a workflow needs a name"]}


def _post_json(client, url: str, body: object):
    return client.post(url, json.dumps(body), content_type="application/json")


def test_the_tree_endpoints_check_save_and_answer_field_errors(client, draft, people) -> None:
    workflow = draft()
    client.force_login(people["scientist"])
    base = f"/builder/workflows/{workflow.pk}/tree"
    assert _post_json(client, f"{base}/check/", {"tasks": TWO_QUESTIONS_AND_DRAWING}).json() == {
        "change": "major", "new_workflow": False, "version": "2.0"}
    broken = copy.deepcopy(TWO_QUESTIONS_AND_DRAWING)
    broken["tasks"]["T1"]["answers"] = [{"label": "only one"}]
    for url in (f"{base}/check/", f"{base}/"):
        response = _post_json(client, url, {"tasks": broken})
        assert response.status_code == 400 and response.json() == {"tasks": ["task T1: needs between 2 and 30 answers"]}
    assert client.post(f"{base}/", "{nope", content_type="application/json").json()["tasks"][0].startswith("not valid JSON")
    assert _post_json(client, f"{base}/", {"tree": {}}).json() == {"tasks": ['send {"tasks": <the task tree>}']}
    assert _post_json(client, f"{base}/", {"tasks": "[" * 100 + "]" * 100}).status_code == 400
    deep = json.dumps({"tasks": json.loads("[" * 70 + "]" * 70)})
    assert client.post(f"{base}/", deep, content_type="application/json").json()["tasks"][0].startswith("not valid JSON (JSON nested deeper")
    workflow.refresh_from_db()
    assert workflow.version_text == "1.0"
    response = _post_json(client, f"{base}/", {"tasks": TWO_QUESTIONS_AND_DRAWING})
    assert response.json() == {"workflow": workflow.pk, "version": "2.0", "change": "major", "new_workflow": False,
                               "url": _pages(workflow)["workflow"]}
    workflow.refresh_from_db()
    assert workflow.tasks == TWO_QUESTIONS_AND_DRAWING


@pytest.mark.parametrize(
    ("endpoint", "data", "service"),
    [
        ("gold-rate", {"gold_feedback_rate": "2"}, "gold"),
        ("gold-rate", {"gold_feedback_rate": "lots"}, "gold"),
        ("retirement", {"scope": "workflow", "required": ["T0"], "min": "0", "budget": "2"}, "retirement"),
        ("retirement", {"scope": "workflow", "required": ["T9"]}, "retirement"),
        ("retirement", {"scope": "sometimes"}, "retirement"),
        ("retirement", {"scope": "workflow", "estimator": "{bad"}, "retirement"),
        ("machine", {"acquisition": "psychic", "exploration_share": "2", "machine_threshold": "0.1", "retrain_every": "1.5"}, "machine"),
    ],
)
def test_bad_settings_are_400_with_the_admin_services_own_field_errors(client, draft, people, endpoint, data, service) -> None:
    from django.http import QueryDict

    from dashboards import services

    workflow = draft()
    client.force_login(people["scientist"])
    response = client.post(f"/builder/workflows/{workflow.pk}/{endpoint}/", data)
    assert response.status_code == 400
    form = QueryDict(mutable=True)
    for key, value in data.items():
        form.setlist(key, value if isinstance(value, list) else [value])
    with pytest.raises(services.SettingsError) as expected:
        if service == "gold":
            services.update_gold_rate(workflow, form.get("gold_feedback_rate"), None)
        elif service == "retirement":
            services.update_retirement_settings(workflow, services.parse_retirement_form(form), None)
        else:
            services.update_active_learning(workflow, services.parse_active_learning_form(form), None)
    assert response.json() == expected.value.errors
    _unchanged(workflow)


def test_good_settings_are_saved_through_the_admin_services(client, draft, people) -> None:
    from projects.models import AdminAction

    workflow = draft()
    client.force_login(people["scientist"])
    assert client.post(f"/builder/workflows/{workflow.pk}/gold-rate/", {"gold_feedback_rate": "0.4"}).json() == {"gold_feedback_rate": 0.4}
    response = client.post(f"/builder/workflows/{workflow.pk}/retirement/", {"scope": "workflow", "required": ["T0"], "min": "2", "budget": "9"})
    assert response.status_code == 200 and response.json()["retired_now"] == 0
    response = client.post(f"/builder/workflows/{workflow.pk}/machine/",
                           {"acquisition": "random", "exploration_share": "0.2", "machine_threshold": "0.95", "retrain_every": "7", "enabled": "on"})
    assert response.status_code == 200 and response.json()["active_learning"]["retrain_every"] == 7
    workflow.refresh_from_db()
    assert workflow.gold_feedback_rate == 0.4 and workflow.retirement["min"] == 2 and workflow.active_learning["enabled"] is True
    assert set(AdminAction.objects.values_list("action", flat=True)) == {"gold_rate_updated", "retirement_updated", "active_learning_updated"}


def _upload(client, workflow, files, lines, **extra):
    return client.post(f"/builder/workflows/{workflow.pk}/subjects/",
                       {"subject_set": "Batch", "images": files, "manifest": manifest_file(lines)}, **extra)


def test_upload_launch_and_pause(client, draft, people) -> None:
    from projects.models import SubjectWorkflowState

    workflow = draft()
    client.force_login(people["scientist"])
    response = client.post(f"/builder/workflows/{workflow.pk}/launch/")
    assert response.status_code == 400 and response.json() == {"launch": ["it has no subjects yet: upload some first"]}
    response = _upload(client, workflow, images(3), ["external_id,image", "a,g0.png", "b,g1.png", "c,g9.png"])
    assert response.status_code == 400 and response.json() == {
        "manifest": ["line 4: image 'g9.png' was not uploaded"], "images": ["g2.png is not named in the manifest"]}
    assert not SubjectWorkflowState.objects.exists()
    response = _upload(client, workflow, images(3), ["external_id,image", "a,g0.png", "b,g1.png", "c,g2.png"])
    assert response.status_code == 201 and response.json()["created"] == 3
    assert SubjectWorkflowState.objects.filter(workflow=workflow).count() == 3
    assert client.post(f"/builder/workflows/{workflow.pk}/launch/").json() == {"active": True}
    workflow.refresh_from_db()
    assert workflow.active and workflow.launched_at is not None
    assert client.get(f"/api/workflows/{workflow.pk}/next-subjects/?count=3").status_code == 200
    assert client.post(f"/builder/workflows/{workflow.pk}/pause/").json() == {"active": False}
    workflow.refresh_from_db()
    assert not workflow.active


def test_an_upload_is_refused_from_its_declared_size_before_its_body_is_read(client, draft, people) -> None:
    workflow = draft()
    client.force_login(people["scientist"])
    response = _upload(client, workflow, images(1), ["image", "g0.png"], CONTENT_LENGTH=str(5 * 1024**3))
    assert response.status_code == 413
    assert response.json() == {"files": ["the upload is 5.0 GB; at most 1.0 GB at once (and 50.0 MB per file): send it in parts"]}
    response = client.generic("POST", f"/builder/workflows/{workflow.pk}/subjects/", b"", CONTENT_LENGTH="")
    assert response.status_code == 411


def test_a_file_over_the_limit_is_stopped_as_it_streams_in(client, draft, people, settings, _media_root) -> None:
    from projects.models import Subject

    settings.UPLOAD_MAX_FILE_BYTES = 60  # the PNG is larger, the manifest smaller
    workflow = draft()
    client.force_login(people["scientist"])
    response = _upload(client, workflow, images(1), ["image", "g0.png"])
    assert response.status_code == 413 and response.json() == {"images": ["g0.png is over 60 bytes, the limit per file"]}
    assert not Subject.objects.exists() and not any(p.is_file() for p in _media_root.rglob("*"))


def test_the_upload_checks_the_csrf_token_after_its_limits(draft, people) -> None:
    from django.test import Client

    workflow = draft()
    client = Client(enforce_csrf_checks=True)
    client.force_login(people["scientist"])
    assert _upload(client, workflow, images(1), ["image", "g0.png"]).status_code == 403
    token = client.get(_pages(workflow)["workflow"]).cookies["csrftoken"].value
    assert _upload(client, workflow, images(1), ["image", "g0.png"], HTTP_X_CSRFTOKEN=token).status_code == 201


@pytest.mark.django_db(transaction=True)
def test_a_5_gb_upload_over_a_real_socket_is_answered_before_it_is_sent(live_server, people, draft) -> None:
    """The server answers 413 from the headers alone: the client has sent a few bytes of its 5 GB."""
    from django.test import Client

    workflow = draft()
    client = Client()
    client.force_login(people["scientist"])
    session = client.cookies["sessionid"].value
    address = urlparse(live_server.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(
            (f"POST /builder/workflows/{workflow.pk}/subjects/ HTTP/1.1\r\nHost: {address.hostname}\r\n"
             f"Cookie: sessionid={session}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
             f"Content-Length: {5 * 1024**3}\r\nConnection: close\r\n\r\n--x\r\n").encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer or b"}" not in answer:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["files"][0].startswith("the upload is 5.0 GB")
