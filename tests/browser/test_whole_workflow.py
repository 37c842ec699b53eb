"""Whole-workflow retirement end to end, in headless Chromium with a real Celery worker: a workflow
of one drawing task and nothing else (its first task a drawing, retired on its boxes alone: min 1,
bar 0.02 expected errors), and a workflow of one question and nothing else. Volunteers classify in
the classifier; the live loop applies each classification; the subject retires once its required
task is settled, and not before; the scientist's subject page, admin page and downloads show it.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.browser.test_classifier import classify_url, drag, image_to_screen, skip_tutorial, wait_for, wait_ready

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT_SELECTOR = "#chorus-classifier"
DRAWING_ONLY = {
    "first_task": "T0",
    "tasks": {
        "T0": {"type": "drawing", "instruction": "Draw a box around each galaxy.",
               "tools": [{"type": "rectangle", "label": "Galaxy", "min": 0, "max": 5}], "next": None},
    },
}
QUESTION_ONLY = {
    "first_task": "T0",
    "tasks": {
        "T0": {"type": "single", "question": "Is the galaxy smooth?",
               "answers": [{"label": "Smooth", "next": None}, {"label": "Featured", "next": None}]},
    },
}
# The galaxies each volunteer boxes, in image pixels of the 240×180 subject (the bright patches).
GALAXIES = [(40, 30, 60, 50), (150, 100, 50, 40)]


def _image() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (240, 180), (10, 12, 20))
    draw = ImageDraw.Draw(image)
    for x, y, w, h in GALAXIES:
        draw.ellipse((x, y, x + w, y + h), fill=(230, 220, 180))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _one_subject_workflow(tasks: dict, scientist) -> object:
    """A workflow of ``tasks`` with one subject (so every volunteer is served the same), owned by
    ``scientist``, on the engine's default whole-workflow retirement, with its new volunteers trusted
    from their first answer (half_trust 0: Sybil resistance is tested in tests/aggregation)."""
    from django.core.files.base import ContentFile

    from projects.models import Project, Subject, SubjectSet
    from projects.services import add_subject_image, create_workflow, link_subject_set

    project = Project.objects.create(slug=f"only-{tasks['tasks']['T0']['type']}", title="One task")
    project.owners.add(scientist)
    workflow = create_workflow(project, "One task", tasks, retirement={"half_trust": 0})
    subject_set = SubjectSet.objects.create(project=project, name="set")
    subject = Subject.objects.create(subject_set=subject_set, external_id="galaxy-1")
    add_subject_image(subject, 0, "galaxy-1.png", ContentFile(_image()))
    link_subject_set(workflow, subject_set)
    return workflow


@pytest.fixture
def scientist(transactional_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("scientist", password="pw-scientist")


def _classify(new_page, live_server, workflow, do_task) -> int:
    """One new volunteer (a fresh browser context) classifies the subject; returns its id."""
    page = new_page()
    skip_tutorial(page, workflow)
    page.goto(classify_url(live_server, workflow))
    subject = int(wait_ready(page))
    do_task(page)
    page.keyboard.press("Enter")
    # One subject, now seen: nothing else to serve this volunteer.
    page.wait_for_selector(f"{ROOT_SELECTOR}[data-state=finished]")
    page.wait_for_selector(f"{ROOT_SELECTOR}[data-outbox-pending='0']")
    page.context.close()
    return subject


def _draw_galaxies(page) -> None:
    assert page.locator(".task-question").inner_text().startswith("Draw a box around each galaxy")
    for x, y, w, h in GALAXIES:
        drag(page, image_to_screen(page, x, y), image_to_screen(page, x + w, y + h))
    assert page.locator("[data-testid=mark-list] li").count() == len(GALAXIES)


def _answer_smooth(page) -> None:
    assert page.locator(".task-question").inner_text().startswith("Is the galaxy smooth")
    page.keyboard.press("1")


def _classify_until_retired(new_page, live_server, workflow, do_task, at_most: int) -> tuple[int, list[dict]]:
    """Volunteers classify one after another, each applied by the live loop before the next starts;
    returns the subject and the stored risk of its task after each, up to its retirement."""
    from classifications.models import Classification
    from projects.models import SubjectWorkflowState

    risks = []
    for n in range(1, at_most + 1):
        subject = _classify(new_page, live_server, workflow, do_task)
        wait_for(lambda n=n, subject=subject: Classification.objects.filter(subject_id=subject, applied_seq__isnull=False).count() == n,
                 timeout=60, what=f"classification {n} applied by the worker")
        state = SubjectWorkflowState.objects.get(workflow=workflow, subject_id=subject)
        risk = state.posterior["@risk"]["T0"]
        risks.append(risk)
        assert risk["answers"] == n and risk["bar"] is not None
        # Retired exactly when the task is settled (min is 1 for drawing-only, 3 with a question).
        minimum = 1 if risk["kind"] == "drawing" else 3
        should_retire = risk["weighted_risk"] < risk["bar"] and n >= minimum
        assert (state.status == "retired") == should_retire, (n, risk, state.status)
        if state.status == "retired":
            assert state.retirement_reason == "consensus:T0"
            return subject, risks
    raise AssertionError(f"not retired after {at_most} consistent classifications: {risks}")


def _sign_in(page, live_server, next_url: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/?next={next_url}")
    page.fill("#id_username", "scientist")
    page.fill("#id_password", "pw-scientist")
    page.click("button[type=submit]")


def test_a_drawing_only_workflow_retires_on_its_boxes(live_server, scientist, start_worker, new_page, screenshot) -> None:
    from classifications.models import Classification

    workflow = _one_subject_workflow(DRAWING_ONLY, scientist)
    start_worker("drawings")

    subject, risks = _classify_until_retired(new_page, live_server, workflow, _draw_galaxies, at_most=6)
    assert len(risks) >= 2 and risks[0]["weighted_risk"] > risks[0]["bar"] == 0.02  # one drawing is not enough
    assert all(later["weighted_risk"] <= earlier["weighted_risk"] for earlier, later in zip(risks, risks[1:], strict=False))
    classifications = list(Classification.objects.filter(subject_id=subject).order_by("applied_seq"))
    assert len(classifications) == len(risks) and all(c.counts for c in classifications)
    for c in classifications:
        assert [a["task"] for a in c.annotations] == ["T0"]
        boxes = sorted(c.annotations[0]["value"], key=lambda b: b["x"])
        for box, (x, y, w, h) in zip(boxes, GALAXIES, strict=True):
            assert box["tool"] == 0 and abs(box["x"] - x) <= 1.5 and abs(box["width"] - w) <= 1.5, box
            assert abs(box["y"] - y) <= 1.5 and abs(box["height"] - h) <= 1.5, box

    # With nothing active left, the next volunteer still gets it, told that it is already retired.
    page = new_page()
    skip_tutorial(page, workflow)
    page.goto(classify_url(live_server, workflow))
    assert int(wait_ready(page)) == subject
    assert "already retired" in page.inner_text("[data-testid=banner-retired]")
    page.context.close()

    # The scientist's subject page: the aggregated boxes, the risk table, the reason naming T0.
    page = new_page(viewport={"width": 1280, "height": 1100})
    base = f"/projects/{workflow.project.slug}/workflows/{workflow.pk}"
    _sign_in(page, live_server, f"{base}/subjects/{subject}/")
    page.wait_for_selector(".agg-box rect")
    assert page.locator(".agg-box").count() == len(GALAXIES)
    assert page.text_content("[data-testid=subject-status]") == "retired"
    assert "consensus on T0" in page.text_content("[data-testid=retirement-reason]")
    cells = page.locator("[data-testid=task-risk] tr[data-task=T0] td").all_inner_texts()
    assert cells[1] == "drawing" and cells[5] == "0.02" and cells[6] == "✓" and cells[7] == str(len(risks)), cells
    assert page.locator("[data-testid=posterior-path] figure[data-task='@risk'] path.series").count() == 2
    screenshot(page, "subject-drawing-only")
    # Its admin page offers the whole-workflow rule only, with the drawing's own defaults.
    page.goto(f"{live_server.url}{base}/admin/")
    assert "only the whole-workflow rule applies" in page.text_content("[data-testid=retirement-form]")
    assert page.get_attribute("#bar-T0", "placeholder") == "0.02" and page.is_checked("#required-T0")

    # The downloads hold the subject, its boxes and its risk, and every classification.
    downloads = f"{live_server.url}/dashboards/workflows/{workflow.pk}/download"
    response = page.context.request.get(f"{downloads}/results.csv")
    assert response.status == 200
    (row,) = list(csv.DictReader(io.StringIO(response.text())))
    assert int(row["subject_id"]) == subject and row["status"] == "retired" and row["retirement_reason"] == "consensus:T0"
    assert int(row["classification_count"]) == len(risks)
    objects = sorted(json.loads(row["T0.objects"]), key=lambda o: o["x"])
    assert len(objects) == len(GALAXIES) and all(o["probability"] > 0.5 for o in objects)
    for obj, (x, y, w, h) in zip(objects, GALAXIES, strict=True):
        assert abs(obj["x"] - x) <= 2 and abs(obj["y"] - y) <= 2 and abs(obj["width"] - w) <= 2 and abs(obj["height"] - h) <= 2
    assert float(row["T0.weighted_risk"]) == pytest.approx(risks[-1]["weighted_risk"]) and risks[-1]["weighted_risk"] < 0.02
    assert row["T0.settled"] == "True"
    assert not [column for column in row if "@" in column]
    response = page.context.request.get(f"{downloads}/classifications.json")
    exported = json.loads(response.text())
    assert sorted(c["id"] for c in exported) == sorted(c.pk for c in classifications)
    assert all(c["annotations"][0]["task"] == "T0" and len(c["annotations"][0]["value"]) == 2 for c in exported)


def test_a_question_only_workflow_retires_on_its_answers(live_server, scientist, start_worker, new_page) -> None:
    workflow = _one_subject_workflow(QUESTION_ONLY, scientist)
    start_worker("questions")
    subject, risks = _classify_until_retired(new_page, live_server, workflow, _answer_smooth, at_most=10)
    assert len(risks) >= 3 and risks[-1]["bar"] == 0.01 and risks[-1]["kind"] == "question"
    from projects.models import SubjectWorkflowState

    state = SubjectWorkflowState.objects.get(workflow=workflow, subject_id=subject)
    assert max(state.posterior["T0"]) == state.posterior["T0"][0] > 0.99
    page = new_page()
    base = f"/projects/{workflow.project.slug}/workflows/{workflow.pk}"
    _sign_in(page, live_server, f"{base}/subjects/{subject}/")
    page.wait_for_selector("[data-testid=posterior-path] figure[data-task=T0] path.series")  # drawn by subject.js
    assert page.text_content("[data-testid=map-T0]") == "Smooth"
    assert page.locator("[data-testid=posterior-path] figure[data-task=T0] path.series").count() == 2
    response = page.context.request.get(f"{live_server.url}/dashboards/workflows/{workflow.pk}/download/results.csv")
    (row,) = list(csv.DictReader(io.StringIO(response.text())))
    assert row["T0.answer"] == "Smooth" and row["retirement_reason"] == "consensus:T0" and row["T0.settled"] == "True"
