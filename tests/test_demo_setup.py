"""The demo's setup options and data: ``--galaxies N`` imports the sample's first N galaxies (a later
run adds the rest, nothing twice), ``--machine-settings`` overrides the demo's machine settings and is
validated before anything starts, and every demo galaxy carries its hidden GZ1 answers
(``#truth.T0``, ``#truth.T1``) for the dashboard's tally, added to databases made before them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parents[1]
T0_OF_CLASS = {0: 0, 1: 1, 2: 1, 3: 1, 5: 2}  # class 4 ("don't know") has no answer
T1_OF_CLASS = {3: 0, 1: 1, 2: 2}


@pytest.fixture
def no_migrate(monkeypatch):
    """The demo command without its migrate and collectstatic (the test database is migrated)."""
    import projects.management.commands.demo as demo

    monkeypatch.setattr(demo, "call_command", lambda *args, **kwargs: None)


def test_galaxies_imports_the_first_n_and_a_later_run_adds_the_rest(db, no_migrate, settings, tmp_path) -> None:
    from projects.models import Subject
    from projects.services import DEMO_ACTIVE_LEARNING

    settings.DATA_DIR = tmp_path
    call_command("demo", "--setup-only", "--sample", "gz1_2000", "--galaxies", "30",
                 "--machine-settings", '{"image_size": 32, "retrain_every": 10}')
    with open(ROOT / "platform" / "demo_data" / "gz1_2000" / "manifest.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(Subject.objects.order_by("id").values_list("external_id", flat=True)) == [r["external_id"] for r in rows[:30]]
    from projects.models import Workflow

    workflow = Workflow.objects.get()
    assert workflow.active_learning == {**DEMO_ACTIVE_LEARNING, "image_size": 32, "retrain_every": 10}
    assert workflow.subject_states.count() == 30
    from projects.models import AdminAction

    logged = AdminAction.objects.get(workflow=workflow, action="active_learning_updated")
    assert logged.user.username == "scientist" and logged.details["after"]["image_size"] == 32
    call_command("demo", "--setup-only", "--sample", "gz1_2000", "--galaxies", "45")
    assert Subject.objects.count() == 45 == workflow.subject_states.count()
    assert Subject.objects.values("external_id").distinct().count() == 45
    # The settings given before stay (a restart without the option keeps them).
    workflow.refresh_from_db()
    assert workflow.active_learning["image_size"] == 32


@pytest.mark.parametrize(("value", "message"), [
    ('{"image_size": 0}', "image_size must be an integer >= 1"),
    ('{"no_such_setting": 1}', "unknown key 'no_such_setting'"),
])
def test_bad_machine_settings_are_refused_before_anything_starts(value: str, message: str, monkeypatch) -> None:
    import projects.management.commands.demo as demo

    def must_not_run(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the demo started something")

    monkeypatch.setattr(demo, "call_command", must_not_run)
    monkeypatch.setattr(demo, "create_demo_project", must_not_run)
    with pytest.raises(CommandError, match=message):
        call_command("demo", "--machine-settings", value)
    with pytest.raises(CommandError, match="JSON"):
        call_command("demo", "--machine-settings", "[1, 2]")


def test_every_demo_galaxy_knows_its_gz1_answers_and_old_databases_get_them(db) -> None:
    from projects.models import Subject
    from projects.services import create_demo_project

    create_demo_project(sample="small")
    subjects = list(Subject.objects.all())
    assert len(subjects) == 48
    for subject in subjects:
        cls = int(subject.metadata["#gz1_class"])
        assert subject.metadata["#truth.T0"] == ("" if cls == 4 else str(T0_OF_CLASS[cls]))
        assert subject.metadata["#truth.T1"] == (str(T1_OF_CLASS[cls]) if cls in T1_OF_CLASS else "")
        if subject.gold:  # the gold answers are the same answers
            assert str(subject.gold["T0"]) == subject.metadata["#truth.T0"]
    # A database made before the manifests had them: the next start adds them.
    for subject in subjects[:5]:
        subject.metadata = {k: v for k, v in subject.metadata.items() if not k.startswith("#truth.")}
        subject.save()
    create_demo_project(sample="small")
    assert Subject.objects.filter(metadata__has_key="#truth.T0").count() == 48
    assert Subject.objects.count() == 48


def test_the_shell_check_refuses_bad_values_with_the_standard_library_alone() -> None:
    import subprocess
    import sys

    script = ROOT / "platform" / "projects" / "demo_options.py"
    for args, message in [(["--crowd", "0"], "--crowd: '0': give at least 1"), (["--crowd", "2", "--crowd-rate", "fast"], "'fast' is not a number"),
                          (["--crowd-rate", "5"], "--crowd-rate needs --crowd N"), (["--galaxies", "-4"], "--galaxies: '-4'")]:
        # -I: isolated, no site-packages, as a fresh clone's system Python before installation
        result = subprocess.run([sys.executable, "-I", str(script), *args], capture_output=True, text=True)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    ok = subprocess.run([sys.executable, "-I", str(script), "--crowd", "20", "--crowd-rate", "20", "--port", "8001"], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stderr == ""
