"""Safe by default: DEBUG is off unless asked for, an unexpected error shows no traceback, static files
are served without DEBUG, and no volunteer-facing response tells which subjects are gold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from classifications.models import Classification

ROOT = Path(__file__).resolve().parents[2]


def _debug_setting(tmp_path: Path, **env: str) -> bool:
    """DEBUG as chorus.settings computes it in a fresh process with only ``env`` set (external
    database and Redis URLs so that importing the settings starts nothing)."""
    clean = {k: v for k, v in os.environ.items() if k not in {"CHORUS_DEBUG", "DJANGO_DEBUG", "CHORUS_ENV", "DJANGO_SETTINGS_MODULE"}}
    clean |= {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none", "REDIS_URL": "redis://127.0.0.1:9/0",
        "CHORUS_DATA_DIR": str(tmp_path), "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT}", **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", "from chorus import settings; print(settings.DEBUG)"],
        env=clean, capture_output=True, text=True, timeout=60, check=True,
    )
    return result.stdout.strip() == "True"


def test_debug_is_off_unless_asked_for(tmp_path: Path) -> None:
    assert _debug_setting(tmp_path) is False
    assert _debug_setting(tmp_path, CHORUS_DEBUG="1") is True
    assert _debug_setting(tmp_path, DJANGO_DEBUG="true") is True
    assert _debug_setting(tmp_path, CHORUS_DEBUG="0", DJANGO_DEBUG="1") is False
    # Never in production, whatever the environment says.
    assert _debug_setting(tmp_path, CHORUS_ENV="production", DJANGO_SECRET_KEY="k", CHORUS_DEBUG="1") is False


@pytest.mark.django_db
def test_an_unexpected_error_is_a_plain_500_without_a_traceback(make_workflow, token_client, payload, monkeypatch, settings) -> None:
    from django.test import Client
    from rest_framework.test import APIClient

    from classifications import services
    from web import views

    settings.DEBUG = False
    workflow = make_workflow(n=1)

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(services, "submit_classification", explode)
    client = APIClient(raise_request_exception=False)
    client.credentials(**token_client()._credentials)  # noqa: SLF001 - the fixture's token
    response = client.post("/api/classifications/", payload(workflow, workflow.subject_states.first().subject_id), format="json")
    assert response.status_code == 500 and response.json() == {"detail": "server error"}
    assert b"secret internals" not in response.content and b"Traceback" not in response.content

    monkeypatch.setattr(views, "volunteer_projects", explode)
    response = Client(raise_request_exception=False).get("/")
    assert response.status_code == 500
    assert b"secret internals" not in response.content and b"Traceback" not in response.content


def test_static_files_are_served_without_debug(client, settings) -> None:
    settings.DEBUG = False
    response = client.get("/static/rest_framework/css/bootstrap.min.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content if response.streaming else [response.content])


# -- gold stays gold ---------------------------------------------------------------------------------

def _keys(value: object) -> set[str]:
    """Every object key anywhere in a JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


@pytest.mark.django_db
def test_no_volunteer_facing_response_says_which_subjects_are_gold(make_workflow, token_client, payload) -> None:
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    workflow = make_workflow(n=3, gold_every=1, gold_feedback_rate=0.0)  # every subject is gold
    client = token_client()
    subject_id = workflow.subject_states.order_by("subject_id").first().subject_id
    submitted = client.post("/api/classifications/", payload(workflow, subject_id), format="json")
    assert submitted.status_code == 201 and Classification.objects.get().is_gold
    responses = {"submission": submitted}
    for path in ["/api/session/", "/api/projects/", f"/api/workflows/{workflow.pk}/",
                 f"/api/workflows/{workflow.pk}/next-subjects/?count=5", "/api/me/", "/api/me/classifications/"]:
        responses[path] = client.get(path)
    batch = [payload(workflow, s) for s in workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True)[1:]]
    responses["batch"] = client.post("/api/classifications/batch/", {"classifications": batch}, format="json")
    for name, response in responses.items():
        assert response.status_code in (200, 201), (name, response.content)
        keys = _keys(response.json())
        assert "is_gold" not in keys and "gold_answers" not in keys, (name, response.json())
    history = responses["/api/me/classifications/"].json()["results"]
    assert len(history) == 1 and history[0]["subject"] == subject_id and set(history[0]) >= {"annotations", "counts"}

    # The project's owners still see it.
    owner = get_user_model().objects.create_user("owner", password="pw-owner")
    workflow.project.owners.add(owner)
    owner_client = APIClient()
    owner_client.force_authenticate(owner)
    rows = owner_client.get(f"/api/projects/{workflow.project_id}/classifications/").json()["results"]
    assert [row["is_gold"] for row in rows] == [True, True, True]
