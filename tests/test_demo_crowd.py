"""The demo's simulated crowd (``projects.demo_crowd``, the math in ``aggregation.simulate``): its votes
follow the confusion matrices drawn from the real crowd, bad ``--crowd`` values are refused before
anything starts, and against a live server it classifies through the real API, marked as simulated,
only in the demo project, and stops by itself when nothing is left (resuming without re-counting)."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from aggregation.simulate import answer_probabilities, confusions_from_counts, draw_answers, logit, sigmoid


@pytest.fixture(scope="module")
def crowd_data():
    from projects.demo_crowd import load_crowd_data

    return load_crowd_data()


def test_votes_follow_the_drawn_confusion_matrices(crowd_data) -> None:
    rng = np.random.default_rng(0)
    n = 40_000
    for worker in (0, 7, 33):
        confusion = crowd_data.t0_confusions[worker]
        for truth in range(4):
            answers = draw_answers(rng, confusion, np.full(n, truth))
            frequencies = np.bincount(answers, minlength=4) / n
            # 4 standard errors of a frequency near 0.5 over 40,000 draws: 0.01.
            np.testing.assert_allclose(frequencies, confusion[truth], atol=0.01)


def test_difficulty_moves_the_right_answer_on_the_logit_scale() -> None:
    confusion = confusions_from_counts(np.array([[[30, 6, 2, 1], [5, 30, 1, 0], [1, 1, 20, 9], [0, 2, 8, 25]]]))[0]
    for shift in (-2.0, -0.5, 0.0, 1.0):
        probs = answer_probabilities(confusion, np.array([1]), np.array([shift]))[0]
        assert probs.sum() == pytest.approx(1.0)
        assert probs[1] == pytest.approx(float(sigmoid(logit(confusion[1, 1]) + shift)))
        wrong = np.delete(probs, 1) / (1 - probs[1])  # errors keep the row's own proportions
        np.testing.assert_allclose(wrong, np.delete(confusion[1], 1) / (1 - confusion[1, 1]))
    rng = np.random.default_rng(1)
    hard = draw_answers(rng, confusion, np.full(40_000, 1), np.full(40_000, -2.0))
    assert (hard == 1).mean() == pytest.approx(float(sigmoid(logit(confusion[1, 1]) - 2.0)), abs=0.01)


def test_the_committed_crowd_data_is_real_and_complete(crowd_data) -> None:
    assert crowd_data.t0_confusions.shape[1:] == (4, 4) and len(crowd_data.t0_confusions) >= 50
    assert crowd_data.t1_confusions.shape[1:] == (3, 3)
    assert len(crowd_data.shares["smooth"]) > 100 and len(crowd_data.shares["featured"]) > 100
    assert len(crowd_data.truth) >= 2048  # both samples' galaxies
    manifest = Path(__file__).resolve().parents[1] / "platform" / "demo_data" / "gz1_2000" / "manifest.csv"
    assert len(manifest.read_text(encoding="utf-8").splitlines()) == 2001


def test_a_volunteer_answers_the_whole_tree(crowd_data) -> None:
    from projects.demo_crowd import SimulatedVolunteer
    from projects.services import DEMO_TASKS

    objid = next(iter(crowd_data.truth))
    seen_t1 = seen_box = False
    for index in range(40):
        volunteer = SimulatedVolunteer(crowd_data, index)
        annotations = volunteer.annotations(DEMO_TASKS, objid, 1, 96, 96)
        assert annotations == volunteer.annotations(DEMO_TASKS, objid, 1, 96, 96)  # the same on a restart
        assert annotations[0]["task"] == "T0" and annotations[-1]["task"] == "T2"
        seen_t1 |= any(a["task"] == "T1" for a in annotations)
        for box in annotations[-1]["value"]:
            seen_box = True
            assert box["x"] >= 0 and box["y"] >= 0
            assert box["x"] + box["width"] <= 96 and box["y"] + box["height"] <= 96
    assert seen_t1 and seen_box


@pytest.mark.parametrize("text", ["0", "-3", "many", "2.5", ""])
def test_bad_crowd_sizes_are_refused(text: str) -> None:
    from projects.demo_crowd import positive_int

    with pytest.raises(argparse.ArgumentTypeError):
        positive_int(text)


@pytest.mark.parametrize("text", ["0", "-1", "fast", "nan", "inf"])
def test_bad_crowd_rates_are_refused(text: str) -> None:
    from projects.demo_crowd import positive_rate

    with pytest.raises(argparse.ArgumentTypeError):
        positive_rate(text)


@pytest.mark.parametrize("args", [["--crowd", "0"], ["--crowd", "-2"], ["--crowd", "ten"], ["--crowd", "3", "--crowd-rate", "0"],
                                  ["--crowd", "3", "--crowd-rate", "-5"], ["--crowd", "3", "--crowd-rate", "quick"],
                                  ["--crowd-rate", "5"]])
def test_the_demo_refuses_bad_crowd_values_before_anything_starts(args: list[str], monkeypatch) -> None:
    import projects.management.commands.demo as demo

    def must_not_run(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the demo started something")

    monkeypatch.setattr(demo, "call_command", must_not_run)
    monkeypatch.setattr(demo, "create_demo_project", must_not_run)
    with pytest.raises(CommandError):
        call_command("demo", *args)


@pytest.fixture
def small_demo(transactional_db):
    """The demo workflow on the 48-galaxy sample, all but three galaxies retired."""
    from projects.models import SubjectWorkflowState
    from projects.services import create_demo_project, retire_subject

    workflow = create_demo_project(sample="small")
    states = list(SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=False).order_by("id"))
    for state in states[3:]:
        retire_subject(state, "test")
    for state in SubjectWorkflowState.objects.filter(workflow=workflow, is_gold=True):
        retire_subject(state, "test")
    return workflow


def test_the_crowd_classifies_through_the_api_and_stops_when_nothing_is_left(live_server, small_demo, tmp_path: Path) -> None:
    from classifications.models import Classification
    from projects.demo_crowd import run_crowd

    report = run_crowd(live_server.url, small_demo.pk, 2, 50.0, state_dir=tmp_path)
    assert report.errors == []
    assert report.submitted == 6 and report.volunteers_done == 2  # 2 volunteers × the 3 unretired galaxies
    stored = list(Classification.objects.filter(workflow=small_demo))
    assert len(stored) == 6
    assert len({c.volunteer_id for c in stored}) == 2
    for classification in stored:
        assert classification.metadata["simulated"] is True
        tasks = [a["task"] for a in classification.annotations]
        assert tasks[0] == "T0" and tasks[-1] == "T2" and ("T1" in tasks) == (classification.annotations[0]["value"] == 1)
    # Started again: the same volunteers (sessions kept), nothing new for them, nothing counted twice.
    again = run_crowd(live_server.url, small_demo.pk, 2, 50.0, state_dir=tmp_path)
    assert again.errors == [] and again.submitted == 0
    assert Classification.objects.filter(workflow=small_demo).count() == 6


def test_the_crowd_refuses_any_other_project(live_server, small_demo) -> None:
    from projects.demo_crowd import CrowdRefused, run_crowd
    from projects.models import Project
    from projects.services import DEMO_TASKS, create_workflow

    other = create_workflow(Project.objects.create(slug="someone-elses", title="Not the demo"), "Shapes", DEMO_TASKS)
    with pytest.raises(CrowdRefused):
        run_crowd(live_server.url, other.pk, 1, 10.0, stop=threading.Event())
