"""No input makes the submission API fail with a 500: each payload of a fault/attack run, sent exactly
as the raw JSON text it used, is a 400 naming the field and stores nothing; and a property test sends
random JSON-ish values in every field of a submission."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifications.models import Classification
from classifications.throttles import AddressRateThrottle, VolunteerRateThrottle
from projects.models import SubjectWorkflowState

pytestmark = pytest.mark.django_db

SMOOTH = {"task": "T0", "value": 0}
BOX = {"tool": 0, "x": 10, "y": 10, "width": 20, "height": 15}
ENDPOINTS = ["/api/classifications/", "/api/classifications/batch/"]


def _first_subject(workflow) -> int:
    return workflow.subject_states.order_by("subject_id").first().subject_id


def _raw(body: dict, **replace: str) -> str:
    """The body as JSON text with some fields' values replaced by raw JSON text (written as is)."""
    text = json.dumps({**body, **{name: f"@@{name}@@" for name in replace}})
    for name, raw in replace.items():
        text = text.replace(json.dumps(f"@@{name}@@"), raw)
    return text


def _send(client, endpoint: str, text: str):
    if endpoint.endswith("/batch/"):
        text = '{"classifications": [' + text + "]}"
    return client.post(endpoint, text, content_type="application/json")


def _field(endpoint: str, response) -> str:
    """The field the errors name, a batch's item fields without their "classifications[0]." prefix."""
    return ",".join(sorted(name.removeprefix("classifications[0].") for name in response.json()))


def _assert_nothing_stored(workflow, subject_id: int) -> None:
    assert Classification.objects.count() == 0
    assert SubjectWorkflowState.objects.get(workflow=workflow, subject_id=subject_id).classification_count == 0


@pytest.fixture
def submission(make_workflow, token_client, payload):
    workflow = make_workflow(n=1)
    subject_id = _first_subject(workflow)
    return workflow, subject_id, token_client(), payload(workflow, subject_id)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_json_nested_50000_deep_is_a_400(submission, endpoint) -> None:
    workflow, subject_id, client, body = submission
    response = _send(client, endpoint, _raw(body, metadata="[" * 50_000 + "]" * 50_000))
    assert response.status_code == 400, response.content[:300]
    assert _field(endpoint, response) == ("classifications" if endpoint.endswith("/batch/") else "metadata")
    assert "nested deeper than 64" in response.content.decode()
    # The whole body nested: no field to name.
    response = client.post(endpoint, "[" * 50_000 + "]" * 50_000, content_type="application/json")
    assert response.status_code == 400 and list(response.json()) == ["non_field_errors"]
    _assert_nothing_stored(workflow, subject_id)


def test_json_nested_50000_deep_on_the_token_endpoint_is_a_400(db) -> None:
    from rest_framework.test import APIClient

    text = '{"username": "alice", "password": ' + "[" * 50_000 + "]" * 50_000 + "}"
    response = APIClient().post("/api/auth/token/", text, content_type="application/json")
    assert response.status_code == 400 and "password" in response.json()


def test_nesting_up_to_the_limit_is_accepted(submission) -> None:
    workflow, subject_id, client, body = submission
    response = _send(client, ENDPOINTS[0], _raw(body, metadata='{"deep": ' + "[" * 62 + "]" * 62 + "}"))
    assert response.status_code == 201, response.content
    response = _send(client, ENDPOINTS[0], _raw(body, metadata='{"deep": ' + "[" * 64 + "]" * 64 + "}"))
    assert response.status_code == 400 and "metadata" in response.json()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_nul_character_in_metadata_is_a_400(submission, endpoint) -> None:
    workflow, subject_id, client, body = submission
    response = _send(client, endpoint, _raw(body, metadata='{"user_agent": "pytest\\u0000"}'))
    assert response.status_code == 400, response.content
    assert _field(endpoint, response) == "metadata" and "NUL" in str(response.json())
    response = _send(client, endpoint, _raw(body, metadata='{"a\\u0000b": 1}'))  # in a key too
    assert response.status_code == 400 and _field(endpoint, response) == "metadata"
    _assert_nothing_stored(workflow, subject_id)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_lone_surrogate_in_metadata_is_a_400(submission, endpoint) -> None:
    workflow, subject_id, client, body = submission
    response = _send(client, endpoint, _raw(body, metadata='{"user_agent": "\\ud800"}'))
    assert response.status_code == 400, response.content
    assert _field(endpoint, response) == "metadata" and "surrogate" in str(response.json())
    _assert_nothing_stored(workflow, subject_id)
    # A surrogate pair is one ordinary character (an emoji) and is stored.
    response = _send(client, endpoint, _raw(body, metadata='{"user_agent": "\\ud83d\\ude00"}'))
    assert response.status_code == 201 and Classification.objects.get().metadata == {"user_agent": "\U0001f600"}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("task", ['["T0"]', '{"T0": 1}'])
def test_a_task_key_given_as_a_list_or_object_is_a_400(submission, endpoint, task) -> None:
    workflow, subject_id, client, body = submission
    response = _send(client, endpoint, _raw(body, annotations='[{"task": ' + task + ', "value": 0}]'))
    assert response.status_code == 400, response.content
    assert _field(endpoint, response) == "annotations"
    _assert_nothing_stored(workflow, subject_id)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_401_digit_box_coordinate_is_a_400(submission, endpoint) -> None:
    workflow, subject_id, client, body = submission
    marks = '[{"tool": 0, "x": 1' + "0" * 400 + ', "y": 10, "width": 20, "height": 15}]'
    response = _send(client, endpoint, _raw(body, annotations='[{"task": "T0", "value": 0}, {"task": "T2", "value": ' + marks + "}]"))
    assert response.status_code == 400, response.content
    assert _field(endpoint, response) == "annotations"
    _assert_nothing_stored(workflow, subject_id)


def test_infinite_and_out_of_range_numbers_are_400s(submission) -> None:
    workflow, subject_id, client, body = submission
    cases = {
        "metadata": ['{"t": 1e999}', '{"t": -1e999}', '{"t": 1' + "0" * 400 + "}"],
        "annotations": ['[{"task": "T0", "value": 1e999}]', '[{"task": "T0", "value": 0}, {"task": "T2", "value": [{"tool": 0, "x": 1e999, "y": 1, "width": 1, "height": 1}]}]'],
        "workflow": ["1" + "0" * 30],
        "subject": ["1" + "0" * 30],
    }
    for field, raws in cases.items():
        for raw in raws:
            response = _send(client, ENDPOINTS[0], _raw(body, **{field: raw}))
            assert response.status_code == 400 and field in response.json(), (field, raw, response.content)
    _assert_nothing_stored(workflow, subject_id)


def test_huge_coordinates_are_refused_by_the_task_tree_itself() -> None:
    from projects.services import DEMO_TASKS
    from projects.task_tree import validate_annotations

    for x in (10**400, 2e9, float("inf"), float("nan")):
        _, errors = validate_annotations(DEMO_TASKS, [SMOOTH, {"task": "T2", "value": [{**BOX, "x": x}]}], None)
        assert errors and "finite numbers" in errors[0], x
    for task in (["T0"], {"T0": 1}, None, 3):
        _, errors = validate_annotations(DEMO_TASKS, [{"task": task, "value": 0}], None)
        assert errors == ["annotation 0: task must be a task key (a string)"], task


# -- the property: whatever a field holds, never a 5xx, and a 4xx stores nothing -------------------

_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=12),  # surrogates and NUL included
    st.sampled_from(["\x00", "\ud800", "a\udfffb", "T0", "T2", "2026-11-21T10:00:00Z", "9999-12-31T23:59:59-23:59", ""]),
)
_NUMBERS = st.one_of(
    st.integers(), st.integers(min_value=-(10**500), max_value=10**500), st.floats(), st.sampled_from([0, 1, -1, 2**63, 10**400]),
)
_SCALARS = st.one_of(st.none(), st.booleans(), _NUMBERS, _TEXT)
_JSON = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_TEXT, inner, max_size=4)), max_leaves=12)
_MARK = st.fixed_dictionaries({"tool": _JSON | st.just(0), "x": _NUMBERS, "y": _NUMBERS, "width": _NUMBERS, "height": _NUMBERS})
_ANNOTATIONS = st.one_of(
    _JSON,
    st.lists(st.fixed_dictionaries({"task": _JSON | st.sampled_from(["T0", "T1", "T2"]), "value": _JSON}), max_size=4),
    st.tuples(st.fixed_dictionaries({"task": st.just("T0"), "value": _JSON | st.just(0)}),
              st.fixed_dictionaries({"task": st.just("T2"), "value": st.lists(_MARK, max_size=3)})).map(list),
)
_MISSING = object()
_FIELDS = {
    "annotations": _ANNOTATIONS,
    "metadata": _JSON,
    "idempotency_key": _JSON,
    "subject": _JSON,
    "workflow": _JSON,
    "started_at": _JSON,
    "finished_at": _JSON,
}


@st.composite
def _changes(draw: st.DrawFn) -> dict:
    """Some fields replaced by random values or left out; the rest stay valid."""
    fields = st.sampled_from(sorted(_FIELDS))
    # Mostly one or two fields at a time, so that the others' errors do not hide the deeper checks.
    names = draw(st.one_of(st.lists(fields, min_size=1, max_size=2, unique=True), st.lists(fields, min_size=1, unique=True)))
    return {name: draw(st.one_of(st.just(_MISSING), _FIELDS[name])) for name in names}


def test_no_submission_payload_gives_a_5xx_and_a_4xx_stores_nothing(make_workflow, token_client, payload, monkeypatch) -> None:
    monkeypatch.setattr(VolunteerRateThrottle, "THROTTLE_RATES", {"volunteer": "100000/min", "address": "100000/min"})
    monkeypatch.setattr(AddressRateThrottle, "THROTTLE_RATES", {"volunteer": "100000/min", "address": "100000/min"})
    workflow = make_workflow(n=2)
    subject_id = _first_subject(workflow)
    client = token_client()

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(changes=_changes(), batch=st.booleans())
    def check(changes: dict, batch: bool) -> None:
        body = payload(workflow, subject_id)
        for name, value in changes.items():
            if value is _MISSING:
                body.pop(name, None)
            else:
                body[name] = value
        text = json.dumps(body)  # ASCII: a lone surrogate goes as "\ud800", infinity as Infinity, NaN as NaN
        before = Classification.objects.count()
        response = _send(client, ENDPOINTS[1] if batch else ENDPOINTS[0], text)
        assert response.status_code < 500, (text[:500], response.content[:500])
        if response.status_code >= 400:
            assert Classification.objects.count() == before, text[:500]
            assert isinstance(response.json(), dict), response.content[:300]

    check()
