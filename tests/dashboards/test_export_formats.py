"""Downloads a Zooniverse user can open: the classifications in Panoptes' CSV export format, and every
download kind as Parquet with the same rows as its CSV."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest

from classifications.models import Classification
from dashboards.downloads import _cell
from live.services import apply_pending

pytestmark = pytest.mark.django_db

MARK_KEYS = ("tool", "x", "y", "width", "height")


def _body(response) -> bytes:
    assert response.status_code == 200 and response.streaming
    return b"".join(response.streaming_content)


def _csv(client, workflow, kind: str) -> list[dict[str, str]]:
    body = _body(client.get(f"/dashboards/workflows/{workflow.pk}/download/{kind}.csv")).decode()
    return list(csv.DictReader(io.StringIO(body)))


def _chorus_annotations(panoptes: list[dict]) -> list[dict]:
    """Panoptes annotations back to Chorus's form (what an importer of the export does)."""
    out = []
    for annotation in panoptes:
        value = annotation["value"]
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = [{k: mark[k] for k in MARK_KEYS} for mark in value]
        out.append({"task": annotation["task"], "value": value})
    return out


def test_the_panoptes_csv_parses_back_into_the_same_annotations(client, owned_workflow, users, votes) -> None:
    workflow = owned_workflow(n=4)
    total = votes(workflow, n_volunteers=3, per_volunteer=4)
    client.force_login(users["owner"])
    response = client.get(f"/dashboards/workflows/{workflow.pk}/download/panoptes-classifications.csv")
    assert response["Content-Disposition"].endswith('-panoptes-classifications.csv"')
    rows = list(csv.DictReader(io.StringIO(_body(response).decode())))
    assert list(rows[0]) == ["classification_id", "user_name", "user_id", "workflow_id", "workflow_name",
                             "workflow_version", "created_at", "metadata", "annotations", "subject_data", "subject_ids"]
    stored = {c.pk: c for c in Classification.objects.filter(workflow=workflow).select_related("subject")}
    assert len(rows) == total == len(stored)
    drawings = 0
    for row in rows:
        classification = stored[int(row["classification_id"])]
        annotations = json.loads(row["annotations"])
        assert _chorus_annotations(annotations) == classification.annotations
        assert annotations[0]["task"] == "T0" and isinstance(annotations[0]["value"], int)
        assert annotations[0]["task_label"] == workflow.tasks["tasks"]["T0"]["question"]
        drawing = next(a for a in annotations if a["task"] == "T2")
        drawings += len(drawing["value"])
        assert all(m["tool_label"] == "Companion or clump" for m in drawing["value"])
        assert row["subject_ids"] == str(classification.subject_id)
        subject_data = json.loads(row["subject_data"])
        assert subject_data[row["subject_ids"]]["#external_id"] == classification.subject.external_id
        assert row["user_name"] == f"not-logged-in-{classification.volunteer_id}" and row["user_id"] == ""
        assert row["workflow_id"] == str(workflow.pk) and row["workflow_version"] == "1.0"
        assert row["created_at"].endswith(" UTC") and len(row["created_at"]) == 23
        assert json.loads(row["metadata"])["source"] == "chorus"
    assert drawings > 0  # the sample has boxes: marks {tool, x, y, width, height} came back


def test_an_imported_zooniverse_classification_keeps_its_panoptes_identity(client, owned_workflow, users) -> None:
    from classifications.models import Volunteer
    from classifications.services import submit_classification

    workflow = owned_workflow(n=1)
    subject_id = workflow.subject_states.get().subject_id
    submit_classification(Volunteer.objects.create(), {
        "workflow": workflow.pk, "subject": subject_id, "idempotency_key": "zooniverse-12345",
        "annotations": [{"task": "T0", "value": 0}, {"task": "T2", "value": []}],
        "metadata": {"zooniverse": {"user_name": "ada", "user_id": "42", "workflow_version": "16.55"},
                     "panoptes": {"session": "abc"}},
    })
    client.force_login(users["owner"])
    row = _csv(client, workflow, "panoptes-classifications")[0]
    assert (row["user_name"], row["user_id"], row["workflow_version"]) == ("ada", "42", "16.55")
    assert json.loads(row["metadata"])["session"] == "abc"


@pytest.mark.parametrize("kind", ["results", "classifications", "panoptes-classifications"])
def test_parquet_has_the_same_rows_as_the_csv(client, owned_workflow, users, votes, kind) -> None:
    workflow = owned_workflow(n=5, retirement={"scope": "first_question", "policy": "max:3"})
    votes(workflow, n_volunteers=4, per_volunteer=5)
    apply_pending(workflow.pk)
    client.force_login(users["owner"])
    rows = _csv(client, workflow, kind)
    response = client.get(f"/dashboards/workflows/{workflow.pk}/download/{kind}.parquet")
    assert response["Content-Type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(_body(response)))
    assert table.column_names == list(rows[0])
    as_text = [{k: str(_cell(v)) for k, v in row.items()} for row in table.to_pylist()]
    assert as_text == rows and len(rows) > 0
    if kind == "results":
        assert str(table.schema.field("classification_count").type) == "int64"
        assert str(table.schema.field("T0.probability").type) == "double"
    elif kind == "classifications":
        assert str(table.schema.field("counts").type) == "bool"


def test_parquet_streams_in_row_groups() -> None:
    from dashboards.downloads import parquet_chunks

    rows = ({"n": i, "x": i / 2, "j": {"i": i}} for i in range(25))
    chunks = list(parquet_chunks(["n", "x", "j"], {"n": "int", "x": "float", "j": "json"}, rows, row_group=10))
    assert len(chunks) == 3  # two full row groups as they fill, then the last with the footer
    table = pq.read_table(io.BytesIO(b"".join(chunks)))
    assert table.num_rows == 25 and table.to_pylist()[3] == {"n": 3, "x": 1.5, "j": '{"i":3}'}
    empty = pq.read_table(io.BytesIO(b"".join(parquet_chunks(["n"], {"n": "int"}, []))))
    assert empty.num_rows == 0 and empty.column_names == ["n"]
