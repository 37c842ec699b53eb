"""The OpenAPI schema is the API (issue 25): schemathesis reads ``/api/schema/`` from a live server
and sends requests generated from it to every operation, valid and invalid ones, as a signed-in
volunteer with a token (a script's way in), and runs its checks on every answer: never a 5xx, every
status code documented, every body of the documented shape and content type, invalid requests
refused and valid ones accepted.

Run as its CLI (``schemathesis run``), the way a CI job or a contributor would run it by hand, so a
failure prints schemathesis's own report with a curl command that reproduces it. Bounded
(``CHORUS_SCHEMA_EXAMPLES`` cases per operation, default 20, one seed) to keep the suite quick; a
longer run is the same test with the variable set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MAX_EXAMPLES = int(os.environ.get("CHORUS_SCHEMA_EXAMPLES", "20"))
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = Path(__file__).with_name("schemathesis.toml")  # what it says and why
# Checks left out, and why:
# - ignored_auth: most operations are open to anonymous volunteers on purpose (the classifier works
#   without an account), so a request without the token is answered, as it should be.
CHECKS_EXCLUDED = ["ignored_auth"]

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def volunteer_token(db) -> str:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_user(username="schema-fuzzer", password="pw-schema-fuzzer")
    return Token.objects.create(user=user).key


def test_every_operation_answers_as_its_schema_says(live_server, make_workflow, clean_redis, volunteer_token: str,
                                                    tmp_path: Path, settings) -> None:
    # Throttles off: schemathesis sends hundreds of requests a minute from one address and token.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}
    workflow = make_workflow(n=4, gold_every=2)
    # The fuzzer's volunteer owns the project, so the scientists' operations (similarity) answer past
    # their 403; workflow paths name the real workflow (its subjects, its queue, "no embeddings yet"),
    # other ids stay random (the 404s).
    from django.contrib.auth import get_user_model

    workflow.project.owners.add(get_user_model().objects.get(username="schema-fuzzer"))
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.read_text() + f"""
[[operations]]
include-path-regex = "^/api/workflows/{{id}}/"
parameters = {{ id = {workflow.pk} }}
""")
    command = [
        str(SCHEMATHESIS), "--config-file", str(config), "run", f"{live_server.url}/api/schema/", "--url", live_server.url,
        "--checks", "all", "--exclude-checks", ",".join(CHECKS_EXCLUDED),
        "--max-examples", str(MAX_EXAMPLES), "--seed", "25", "--workers", "1", "--phases", "examples,coverage,fuzzing",
        "--header", f"Authorization: Token {volunteer_token}", "--no-color", "--generation-database", "none",
        "--request-timeout", "30", "--suppress-health-check", "all",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    report = run.stdout + run.stderr
    print(report[-2500:])  # the summary: operations, test cases generated, failures (pytest -s shows it)
    assert run.returncode == 0, report[-20000:]
    assert "No issues found" in report or "passed" in report, report[-5000:]


# What the first schemathesis run found, each as the request it sent (before: an HTML 404 page, a
# bad page number answered with the first page, half-read numbers, null in a documented timestamp).

def test_a_path_that_matches_no_route_under_api_is_a_json_404(client) -> None:
    response = client.get("/api/workflows/not-a-number/next-subjects/")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}
    assert "text/html" in client.get("/no-such-page/")["Content-Type"]  # pages keep Django's page


@pytest.mark.parametrize("query, field", [("offset=null", "offset"), ("offset=-1", "offset"), ("limit=0", "limit"),
                                          ("limit=1001", "limit"), ("limit=%D9%A3", "limit")])
def test_a_bad_page_is_a_400_not_the_first_page(token_client, query: str, field: str) -> None:
    response = token_client("paging").get(f"/api/me/classifications/?{query}")
    assert response.status_code == 400 and field in response.json()


@pytest.mark.parametrize("query, field", [("count=%D9%A3", "count"), ("count=+3", "count"), ("exclude=1,,2", "exclude"),
                                          ("exclude=-1", "exclude"), ("exclude=1_000", "exclude")])
def test_next_subjects_refuses_what_its_schema_refuses(make_workflow, token_client, query: str, field: str) -> None:
    workflow = make_workflow(n=2)
    response = token_client("queue").get(f"/api/workflows/{workflow.pk}/next-subjects/?{query}")
    assert response.status_code == 400 and field in response.json()
    assert token_client("queue2").get(f"/api/workflows/{workflow.pk}/next-subjects/?count=2&exclude=").status_code == 200
