"""``import_zooniverse``: Panoptes workflow and classification exports into Chorus, aggregated by the
live loop; idempotent; every bad row reported by file and line with nothing written."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from classifications.models import Classification
from projects.models import Project, Subject, SubjectWorkflowState, Workflow
from projects.zooniverse import ZooniverseError, import_zooniverse, plan_import

pytestmark = pytest.mark.django_db

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "zooniverse"
WORKFLOW_HEADER = ["workflow_id", "display_name", "version", "active", "first_task", "tasks", "retirement", "strings",
                   "minor_version"]
CLASSIFICATION_HEADER = ["classification_id", "user_name", "user_id", "user_ip", "workflow_id", "workflow_name",
                         "workflow_version", "created_at", "gold_standard", "expert", "metadata", "annotations",
                         "subject_data", "subject_ids"]

TASKS = {
    "T0": {"type": "single", "question": "T0.question", "help": "T0.help",
           "answers": [{"label": "T0.answers.0.label", "next": "T1"}, {"label": "T0.answers.1.label", "next": "T2"}],
           "unlinkedTask": "T3"},
    "T1": {"type": "multiple", "question": "T1.question", "answers": [{"label": "T1.answers.0.label"},
                                                                      {"label": "T1.answers.1.label"}], "next": "T2"},
    "T2": {"type": "drawing", "instruction": "T2.instruction",
           "tools": [{"type": "rectangle", "label": "T2.tools.0.label", "min": 0, "max": "5", "details": []}]},
    "T3": {"type": "shortcut", "answers": [{"label": "T3.answers.0.label"}]},
}
STRINGS = {"T0.question": "Smooth or featured?", "T0.help": "Look closely.", "T0.answers.0.label": "Featured",
           "T0.answers.1.label": "Smooth", "T1.question": "Which features?", "T1.answers.0.label": "Bar",
           "T1.answers.1.label": "Spiral", "T2.instruction": "Box each star.", "T2.tools.0.label": "Star",
           "T3.answers.0.label": "Nothing here"}
META = {"session": "s1", "started_at": "2024-02-23T16:16:35.085Z", "finished_at": "2024-02-23T16:17:42.334Z",
        "subject_dimensions": [{"naturalWidth": 200, "naturalHeight": 100}]}


def _write(path: Path, header: list[str], rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()})
    return path


def _workflow_row(version: int = 3, minor: int = 1, tasks: dict | None = None) -> dict:
    return {"workflow_id": 7, "display_name": "Galaxies", "version": version, "active": "true", "first_task": "T0",
            "tasks": tasks or TASKS, "retirement": {"criteria": "classification_count", "options": {"count": 5}},
            "strings": STRINGS, "minor_version": minor}


def _classification(cid: int, subject: int, annotations: list, user: str = "", ip: str = "ip1", version: str = "3.1",
                    **extra: object) -> dict:
    return {"classification_id": cid, "user_name": f"user{user}" if user else f"not-logged-in-{ip}", "user_id": user,
            "user_ip": ip, "workflow_id": 7, "workflow_name": "Galaxies", "workflow_version": version,
            "created_at": f"2024-02-23 16:{cid % 60:02d}:00 UTC", "metadata": META, "annotations": annotations,
            "subject_data": {str(subject): {"retired": None, "Filename": f"img{subject}.png", "ra": 1.5}},
            "subject_ids": str(subject), **extra}


FEATURED = [{"task": "T0", "value": 0}, {"task": "T1", "value": [1]},
            {"task": "T2", "value": [{"tool": 0, "x": 10, "y": 5, "width": 20, "height": 10, "frame": 0, "details": []}]}]
SMOOTH = [{"task": "T0", "value": "Smooth"}, {"task": "T3", "value": [0]}, {"task": "T2", "value": []}]


@pytest.fixture(autouse=True)
def _fresh_hot_state(monkeypatch) -> None:
    from django.apps import apps

    from live import hot_state, services

    hot_state.client().flushdb()
    services._LOCAL_ENGINES.clear()
    if not apps.is_installed("machine") and hasattr(services, "_machine_ids"):
        monkeypatch.setattr(services, "_machine_ids", lambda workflow_id: frozenset())


@pytest.fixture
def exports(tmp_path: Path):
    def build(classifications: list[dict], workflows: list[dict] | None = None) -> tuple[Path, Path]:
        wf = _write(tmp_path / "wf.csv", WORKFLOW_HEADER, workflows or [_workflow_row(3, 0), _workflow_row(3, 1)])
        cls = _write(tmp_path / "cls.csv", CLASSIFICATION_HEADER, classifications)
        return wf, cls

    return build


def _standard(exports) -> tuple[Path, Path]:
    rows = [_classification(100 + i, 1 + i % 3, FEATURED if i % 2 else SMOOTH, user=str(i % 4) if i % 3 else "",
                            ip=f"ip{i % 2}") for i in range(12)]
    rows.append(_classification(200, 1, [{"task": "T0", "value": 1}], version="2.9"))  # another version: skipped
    return exports(rows, [_workflow_row(2, 9, {"T0": TASKS["T0"] | {"answers": [{"label": "A"}, {"label": "B"}]}}),
                          _workflow_row(3, 1)])


def test_hand_made_exports_import_translate_and_aggregate(exports) -> None:
    wf, cls = _standard(exports)
    report = import_zooniverse("zoo", wf, cls)
    workflow = Workflow.objects.get(pk=report.workflow_id)
    assert report.versions == ["3.1"] and report.skipped_versions == {"2.9": 1}
    assert report.subjects_created == 3 and report.classifications_imported == 12 and report.applied == 12
    assert any("shortcut" in w for w in report.warnings)
    tree = workflow.tasks
    assert tree["first_task"] == "T0" and set(tree["tasks"]) == {"T0", "T1", "T2"}
    assert tree["tasks"]["T0"]["question"] == "Smooth or featured?" and tree["tasks"]["T0"]["help"] == "Look closely."
    assert [a["label"] for a in tree["tasks"]["T0"]["answers"]] == ["Featured", "Smooth"]
    assert tree["tasks"]["T0"]["answers"][0]["next"] == "T1" and tree["tasks"]["T1"]["next"] == "T2"
    assert tree["tasks"]["T2"]["tools"] == [{"type": "rectangle", "label": "Star", "min": 0, "max": 5}]
    assert workflow.retirement == {"budget": 5, "min": 3}
    featured = Classification.objects.get(idempotency_key="zooniverse-101")
    assert featured.annotations == [{"task": "T0", "value": 0}, {"task": "T1", "value": [1]},
                                    {"task": "T2", "value": [{"tool": 0, "x": 10, "y": 5, "width": 20, "height": 10}]}]
    smooth = Classification.objects.get(idempotency_key="zooniverse-100")
    assert smooth.annotations == [{"task": "T0", "value": 1}, {"task": "T2", "value": []}]  # label -> index, shortcut dropped
    assert smooth.created_at.isoformat() == "2024-02-23T16:40:00+00:00"  # Panoptes' time is kept
    assert featured.volunteer.user.username == "zooniverse-1" and smooth.volunteer.user is None
    # One Chorus volunteer per Panoptes user id (4) and per anonymous IP hash (2).
    assert Classification.objects.filter(workflow=workflow).order_by().values("volunteer").distinct().count() == 6
    subject = Subject.objects.get(external_id="1")
    assert subject.metadata == {"Filename": "img1.png", "ra": 1.5}
    image = subject.images.get()
    assert (image.width, image.height) == (200, 100)  # placeholder of the classifier's natural size
    states = SubjectWorkflowState.objects.filter(workflow=workflow)
    assert all(s.posterior and "T0" in s.posterior for s in states)

    again = import_zooniverse("zoo", wf, cls)
    assert again.workflow_id == workflow.pk and again.classifications_imported == 0
    assert again.classifications_existing == 12 and again.subjects_existing == 3 and again.subjects_created == 0
    assert Classification.objects.count() == 12 and Workflow.objects.count() == 1


def test_the_command_reports_and_picks_a_version(exports) -> None:
    wf, cls = _standard(exports)
    out = io.StringIO()
    call_command("import_zooniverse", "--project", "zoo", "--workflows", str(wf), "--classifications", str(cls),
                 "--version", "2.9", stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    assert "version(s) 2.9" in text and "1 imported" in text and "12 of version 3.1" in text


def test_images_named_by_subject_id_or_metadata_file_name(exports, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (300, 150)).save(folder / "1.png")
    Image.new("RGB", (250, 120)).save(folder / "img2.png")
    wf, cls = exports([_classification(1, 1, SMOOTH), _classification(2, 2, FEATURED), _classification(3, 3, SMOOTH)])
    import_zooniverse("zoo", wf, cls, images=folder)
    sizes = {s.external_id: (s.images.get().width, s.images.get().height) for s in Subject.objects.all()}
    assert sizes == {"1": (300, 150), "2": (250, 120), "3": (200, 100)}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"annotations": "[{not json"}, "cls.csv: line 3: column annotations is not valid JSON"),
        ({"subject_data": "{"}, "cls.csv: line 3: column subject_data is not valid JSON"),
        ({"annotations": [{"task": "T0", "value": 5}]}, "cls.csv: line 3: classification 2: the annotations do not fit"),
        ({"annotations": [{"task": "T0", "value": 0}]}, "the classification stops before task 'T1'"),
        ({"annotations": [{"task": "T9", "value": 0}]}, "task 'T9' is not in the workflow"),
        ({"annotations": [{"task": "T0", "value": 1}, {"task": "T2", "value": [
            {"tool": 0, "x": 190, "y": 5, "width": 20, "height": 10}]}]}, "outside the 200x100 image"),
        ({"subject_ids": "1;2"}, "cls.csv: line 3: subject_ids must name exactly one subject"),
        ({"classification_id": 1}, "cls.csv: line 3: classification 1 appears twice"),
        ({"workflow_version": "3.7"}, "cls.csv: line 3: classifications of workflow 7 version 3.7, but wf.csv has no such version"),
        ({"workflow_version": "x"}, "cls.csv: line 3: workflow_version 'x' is not major.minor"),
        ({"created_at": "yesterday"}, "cls.csv: line 3: created_at 'yesterday'"),
    ],
)
def test_a_bad_row_is_reported_by_file_and_line_and_nothing_is_written(exports, row, message) -> None:
    wf, cls = exports([_classification(1, 1, SMOOTH), _classification(2, 2, SMOOTH) | row])
    with pytest.raises(ZooniverseError) as error:
        import_zooniverse("zoo", wf, cls, version="3" if row.get("workflow_version") == "3.7" else None)
    assert message in str(error.value)
    assert not Project.objects.exists() and not Classification.objects.exists() and not Subject.objects.exists()


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"type": "survey", "choices": {}}, "task T0 is a 'survey' task"),
        ({"type": "text", "instruction": "x"}, "task T0 is a 'text' task"),
        ({"type": "drawing", "tools": [{"type": "point", "label": "x"}]}, "task T0: tool 0 is a 'point' tool"),
        ({"type": "single", "question": "q", "answers": [{"label": "a", "next": "P9"}, {"label": "b"}]},
         "next task 'P9' does not exist"),
    ],
)
def test_tasks_chorus_cannot_run_are_a_clear_error(exports, task, message) -> None:
    wf, cls = exports([_classification(1, 1, [{"task": "T0", "value": 0}])], [_workflow_row(3, 1, {"T0": task})])
    with pytest.raises(ZooniverseError) as error:
        import_zooniverse("zoo", wf, cls)
    assert message in str(error.value) and "line 2" in str(error.value)
    assert not Project.objects.exists()


def test_the_command_fails_cleanly(exports) -> None:
    wf, cls = exports([_classification(1, 1, SMOOTH) | {"annotations": "["}])
    with pytest.raises(CommandError, match="nothing was imported:\ncls.csv: line 2"):
        call_command("import_zooniverse", "--project", "zoo", "--workflows", str(wf), "--classifications", str(cls))


def test_a_version_missing_from_the_classifications_is_an_error(exports) -> None:
    wf, cls = exports([_classification(1, 1, SMOOTH)])
    with pytest.raises(ZooniverseError, match="no classification of workflow 7 version 9"):
        plan_import(wf, cls, version="9")


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="the shared real data is not here")
def test_the_real_panoptes_sample() -> None:
    wf, cls = SAMPLE / "wf_export.csv", SAMPLE / "cls_export.csv"
    report = import_zooniverse("supernovae", wf, cls)
    assert report.panoptes_workflow_id == 10 and report.versions == ["16.55"]
    assert report.subjects_created == 7 and report.classifications_imported == 7 and report.applied == 7
    workflow = Workflow.objects.get(pk=report.workflow_id)
    assert workflow.tasks["tasks"]["T0"]["question"].startswith("**Has the lightcurve been rising")
    assert workflow.tasks["tasks"]["T0"]["answers"][0] == {"label": "Yes", "next": "T1"}
    assert workflow.retirement == {"budget": 10, "min": 3}
    first = Classification.objects.get(idempotency_key="zooniverse-543695319")
    assert first.annotations == [{"task": "T0", "value": 0}, {"task": "T1", "value": 0}]
    state = SubjectWorkflowState.objects.get(workflow=workflow, subject__external_id="96588114")
    # Applied, but one answer of a volunteer whose skill the engine has no evidence of yet says
    # nothing (issue 25, aggregation.defaults.HALF_TRUST): the posterior stays the prior.
    assert first.applied_seq is not None and state.classification_count == 1
    assert state.posterior["T0"] == pytest.approx([0.5, 0.5])
    again = import_zooniverse("supernovae", wf, cls)
    assert again.classifications_imported == 0 and again.classifications_existing == 7
