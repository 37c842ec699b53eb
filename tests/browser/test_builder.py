"""The project builder in headless Chromium, end to end: a scientist signs in, makes a project and a
workflow of two questions (the second only after "Featured") and a drawing task in the tree editor,
tries it in the live preview (the volunteers' classifier in a sandboxed frame: branching, a box,
nothing stored), saves it, is told launch needs subjects and a bad setting why, uploads 10 images
with a manifest (a bad upload first: its errors shown, nothing stored; then the progress bar to
100%), launches it; then a volunteer classifies one of those subjects through the ordinary
classifier, and a change of an answer makes version 3.0 as a new workflow. Saves builder.png and
builder_preview.png."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.browser.test_classifier import drag, wait_for, wait_ready
from tests.browser.test_dashboards import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def scientist(transactional_db):
    from django.contrib.auth import get_user_model

    from projects.authoring import grant_scientist

    user = get_user_model().objects.create_user("scientist", password="pw-scientist")
    grant_scientist(user)
    return user


def _galaxies(folder: Path, n: int = 10) -> tuple[list[Path], Path]:
    """n small galaxy-like PNGs and their manifest (two with gold answers, a hidden column)."""
    from PIL import Image, ImageDraw

    folder.mkdir()
    paths = []
    for i in range(n):
        image = Image.new("RGB", (240, 200), (8, 10, 20))
        draw = ImageDraw.Draw(image)
        draw.ellipse((70 + 3 * i, 55, 170 - 2 * i, 145), fill=(200 - 8 * i, 170, 120 + 9 * i))
        path = folder / f"galaxy-{i:02d}.png"
        image.save(path)
        paths.append(path)
    manifest = folder / "manifest.csv"
    lines = ["external_id,image,gold.T0,magnitude,#truth"]
    lines += [f"G{i:02d},galaxy-{i:02d}.png,{'' if i > 1 else i},{15 + i / 10:.1f},{i % 2}" for i in range(n)]
    manifest.write_text("\n".join(lines) + "\n")
    return paths, manifest


def _fill(page, testid: str, text: str) -> None:
    page.fill(f"[data-testid={testid}]", text)


def _preview(page):
    """The preview's classifier once it shows the tree as it is now (a new tree reloads the frame)."""
    page.wait_for_function("!document.querySelector('[data-testid=preview]').dataset.loading")
    frame = page.frame_locator("[data-testid=preview]")
    frame.locator("#chorus-classifier[data-state=ready][data-image-loaded=true]").wait_for()
    return frame


def test_a_scientist_builds_uploads_and_launches_and_a_volunteer_classifies(live_server, new_page, scientist, screenshot, tmp_path) -> None:
    from classifications.models import Classification
    from projects.models import Project, Subject, Workflow

    page = new_page(viewport={"width": 1280, "height": 900})
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, live_server, "scientist", "/builder/")
    page.wait_for_selector("h1:has-text('Project builder')")

    # A project, then a draft workflow.
    page.fill("#title", "Galaxy Builder")
    page.click("[data-testid=new-project] button[type=submit]")
    page.wait_for_url(re.compile(r".*/builder/projects/galaxy-builder/$"))
    page.fill("#name", "Shapes and stars")
    page.click("[data-testid=new-workflow] button[type=submit]")
    page.wait_for_url(re.compile(r".*/builder/projects/galaxy-builder/workflows/\d+/$"))
    workflow = Workflow.objects.get(project__slug="galaxy-builder")
    assert not workflow.active and list(Project.objects.get(slug="galaxy-builder").owners.all()) == [scientist]
    page.wait_for_selector("[data-testid=state]:has-text('draft')")

    # The tree: T0 (Smooth → T2, Featured → T1), T1 (→ T2), T2 drawing with a rectangle tool.
    page.wait_for_selector("[data-testid=T0-text]")
    _fill(page, "T0-text", "Is the galaxy smooth or featured?")
    _fill(page, "T0-help", "Smooth galaxies are round blobs with **no structure**.")
    _fill(page, "T0-answer-0", "Smooth")
    _fill(page, "T0-answer-1", "Featured")
    page.click("[data-testid=add-single]")
    _fill(page, "T1-text", "Is there a bar through the centre?")
    _fill(page, "T1-answer-0", "Bar")
    _fill(page, "T1-answer-1", "No bar")
    page.click("[data-testid=add-drawing]")
    _fill(page, "T2-text", "Mark each foreground star.")
    _fill(page, "T2-tool-0", "Star")
    _fill(page, "T2-tool-0-max", "5")
    page.select_option("[data-testid=T0-answer-0-next]", "T2")
    page.select_option("[data-testid=T0-answer-1-next]", "T1")
    page.select_option("[data-testid=T1-answer-0-next]", "T2")
    page.select_option("[data-testid=T1-answer-1-next]", "T2")

    # A mistake first: max below min is the server's error, shown, and the preview keeps the last good tree.
    _fill(page, "T2-tool-0-min", "9")
    page.wait_for_selector("[data-testid=tree-errors]:has-text('0 <= min <= max')")
    assert page.is_disabled("[data-testid=save-tree]")
    _fill(page, "T2-tool-0-min", "0")
    page.wait_for_selector("[data-testid=tree-plan]:has-text('Saving makes version 2.0')")
    assert page.is_hidden("[data-testid=tree-errors]")

    # The preview is the volunteers' classifier on this tree: the answer "Featured" leads to T1.
    preview = _preview(page)
    assert preview.locator(".task-question").inner_text() == "Is the galaxy smooth or featured?"
    assert "Your subject image" in preview.locator(".subject-image").get_attribute("src").replace("%20", " ")
    preview.locator("[data-testid=answer-1]").click()
    preview.locator("[data-testid=next]").click()
    preview.locator(".task-question:has-text('Is there a bar')").wait_for()
    preview.locator("[data-testid=answer-0]").click()
    preview.locator("[data-testid=next]").click()
    preview.locator(".task-question:has-text('Mark each foreground star')").wait_for()

    page.click("[data-testid=save-tree]")
    page.wait_for_selector("[data-testid=action-status]:has-text('Saved as version 2.0')")
    workflow.refresh_from_db()
    assert workflow.version_text == "2.0" and workflow.tasks["first_task"] == "T0"
    tasks = workflow.tasks["tasks"]
    assert [tasks[k]["type"] for k in ("T0", "T1", "T2")] == ["single", "single", "drawing"]
    assert [a["next"] for a in tasks["T0"]["answers"]] == ["T2", "T1"] and tasks["T0"]["help"].startswith("Smooth galaxies")
    assert tasks["T2"]["tools"] == [{"type": "rectangle", "label": "Star", "min": 0, "max": 5}]

    # Launch needs subjects; a bad setting is refused with the admin page's message, next to its field.
    page.click("[data-testid=launch]")
    page.wait_for_selector("[data-testid=launch-errors]:has-text('it has no subjects yet: upload some first')")
    page.fill("[data-testid=retirement-form] #min", "0")
    page.click("[data-testid=retirement-form] button[type=submit]")
    page.wait_for_selector("[data-testid=retirement-form] [data-error-for=min]:has-text('at least 1')")
    page.fill("[data-testid=retirement-form] #min", "2")
    page.click("[data-testid=retirement-form] button[type=submit]")
    page.wait_for_selector("[data-testid=retirement-form] [data-form-status]:has-text('Saved')")
    assert page.is_hidden("[data-testid=retirement-form] [data-error-for=min]")
    workflow.refresh_from_db()
    assert workflow.retirement["min"] == 2 and not workflow.active

    # A bad upload: an image the manifest does not name and a file that is not an image; nothing stored.
    paths, manifest = _galaxies(tmp_path / "galaxies")
    not_an_image = tmp_path / "galaxies" / "notes.png"
    not_an_image.write_text("these are my notes, not a picture")
    bad_manifest = tmp_path / "bad.csv"
    bad_manifest.write_text("external_id,image,gold.T0\nG00,galaxy-00.png,4\nG99,notes.png,\n")
    page.fill("#subject_set", "Batch 1")
    page.set_input_files("#images", [str(paths[0]), str(paths[1]), str(not_an_image)])
    page.set_input_files("#manifest", str(bad_manifest))
    page.click("[data-testid=upload-form] button[type=submit]")
    errors = page.locator("[data-testid=upload-errors]")
    errors.wait_for()
    text = errors.inner_text()
    assert "line 2: gold.T0: 4 is not an answer of T0" in text and "notes.png is not an image Pillow can read" in text
    assert "galaxy-01.png is not named in the manifest" in text
    assert page.inner_text("[data-testid=upload-status]") == "Nothing was stored."
    assert not Subject.objects.exists()

    # The 10 images and their manifest, with the progress bar (XHR upload progress) to 100%.
    progress: list[float] = []
    page.expose_function("recordProgress", lambda value: progress.append(value))
    page.evaluate("""() => { const bar = document.querySelector('[data-testid=upload-progress]');
        new MutationObserver(() => window.recordProgress(bar.value)).observe(bar, {attributes: true}); }""")
    page.set_input_files("#images", [str(p) for p in paths])
    page.set_input_files("#manifest", str(manifest))
    page.click("[data-testid=upload-form] button[type=submit]")
    page.wait_for_selector("[data-testid=action-status]:has-text('10 subject(s) added to “Batch 1” (2 with gold answers)')")
    assert progress and max(progress) == 100, progress  # set by the XHR's upload progress events only
    assert Subject.objects.filter(subject_set__name="Batch 1").count() == 10
    assert workflow.subject_states.count() == 10 and workflow.subject_states.filter(is_gold=True).count() == 2
    page.wait_for_selector("[data-testid=subject-sets] td:has-text('Batch 1')")

    # The preview now shows the workflow's own subjects; a box drawn there is reported, never stored.
    preview = _preview(page)
    assert "/media/subjects/" in preview.locator(".subject-image").get_attribute("src")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "builder")
    preview.locator("[data-testid=answer-0]").click()
    preview.locator("[data-testid=next]").click()
    preview.locator(".task-question:has-text('Mark each foreground star')").wait_for()
    preview.locator("[data-testid=viewer]").scroll_into_view_if_needed()
    box = preview.locator(".subject-image").bounding_box()
    drag(page, (box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4), (box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6))
    assert preview.locator("[data-testid=mark-list] li").count() == 1
    screenshot(page.locator("[data-testid=preview]"), "builder_preview")
    preview.locator("[data-testid=next]").click()
    page.wait_for_selector("[data-testid=preview][data-submitted='1']", state="attached")
    submitted = json.loads(page.text_content("[data-testid=preview-output]"))
    assert [a["task"] for a in submitted] == ["T0", "T2"] and submitted[0]["value"] == 0 and len(submitted[1]["value"]) == 1
    assert not Classification.objects.exists()

    # Launch: volunteers are served it.
    page.click("[data-testid=launch]")
    page.wait_for_selector("[data-testid=state]:has-text('running')")
    workflow.refresh_from_db()
    assert workflow.active and workflow.launched_at is not None

    # A volunteer (another browser, no account) finds it and classifies one of those subjects.
    volunteer = new_page()
    volunteer.context.add_init_script(f"localStorage.setItem('chorus:tutorial-seen:{workflow.pk}', '1')")
    volunteer.goto(live_server.url + "/")
    assert volunteer.locator("[data-testid=builder-link]").count() == 0
    volunteer.click("[data-testid=workflow-link]:has-text('Shapes and stars')")
    subject_id = int(wait_ready(volunteer))
    assert volunteer.locator(".task-question").inner_text() == "Is the galaxy smooth or featured?"
    volunteer.click("[data-testid=answer-1]")
    volunteer.click("[data-testid=next]")
    volunteer.wait_for_selector(".task-question:has-text('Is there a bar')")
    volunteer.click("[data-testid=answer-1]")
    volunteer.click("[data-testid=next]")
    volunteer.wait_for_selector(".task-question:has-text('Mark each foreground star')")
    volunteer.click("[data-testid=next]")
    stored = wait_for(lambda: list(Classification.objects.filter(workflow=workflow, subject_id=subject_id)), what="the volunteer's classification")
    assert Subject.objects.get(pk=subject_id).subject_set.name == "Batch 1"
    assert stored[0].annotations == [{"task": "T0", "value": 1}, {"task": "T1", "value": 1}, {"task": "T2", "value": []}]
    assert volunteer.goto(live_server.url + "/builder/").url.startswith(live_server.url + "/accounts/login/")

    # After launch, a change of what an answer means is saved as a new version, a new workflow; the
    # classification above stays with the version it was made under.
    page.wait_for_selector("[data-testid=versioning-note]:has-text('has been launched')")
    _fill(page, "T1-answer-1", "No bar, or cannot tell")
    page.wait_for_selector("[data-testid=tree-plan]:has-text('Saving makes version 3.0 as a new workflow')")
    page.click("[data-testid=save-tree]")
    page.wait_for_selector("[data-testid=action-status]:has-text('Saved as version 3.0, a new workflow')")
    new = Workflow.objects.get(previous_version=workflow)
    assert page.url.endswith(f"/workflows/{new.pk}/") and page.inner_text("[data-testid=version]") == "version 3.0"
    page.wait_for_selector("[data-testid=state]:has-text('running')")
    workflow.refresh_from_db()
    assert not workflow.active and workflow.tasks["tasks"]["T1"]["answers"][1]["label"] == "No bar"
    assert new.tasks["tasks"]["T1"]["answers"][1]["label"] == "No bar, or cannot tell" and new.subject_states.count() == 10
    assert list(Classification.objects.values_list("workflow_id", flat=True)) == [workflow.pk]
