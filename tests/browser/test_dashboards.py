"""The scientists' dashboard, subject page and admin page in headless Chromium, on the demo's
galaxies after real classifications went through the live loop: the charts show the numbers
PostgreSQL holds, a scientist signs in and changes a setting (logged), and a volunteer cannot open
the admin pages. Saves dashboard.png, subject.png and admin.png under tests/browser/screenshots/."""

from __future__ import annotations

import random
import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BOXES = {"objects": [{"x": 150, "y": 160, "width": 90, "height": 70, "probability": 0.93},
                     {"x": 300, "y": 60, "width": 50, "height": 60, "probability": 0.41}], "expected_risk": 0.12}


@pytest.fixture
def people(transactional_db) -> dict[str, object]:
    from django.contrib.auth import get_user_model

    User = get_user_model()
    return {
        "scientist": User.objects.create_user("scientist", password="pw-scientist"),
        "volunteer": User.objects.create_user("volunteer", password="pw-volunteer"),
    }


@pytest.fixture
def classified(demo_workflow, people) -> dict[str, object]:
    """The demo workflow owned by the scientist, classified by 8 volunteers and aggregated."""
    from classifications.models import Volunteer
    from classifications.services import submit_classification
    from live import hot_state, services
    from projects.models import SubjectWorkflowState

    hot_state.client().flushdb()
    services._LOCAL_ENGINES.clear()
    workflow = demo_workflow
    workflow.project.owners.add(people["scientist"])
    # The whole workflow retires (every task required), on a loose bar and a small budget; the new
    # volunteers are trusted from their first answer (half_trust 0: this test is about the dashboard).
    workflow.retirement = {"bar": 0.05, "min": 3, "budget": 5, "half_trust": 0}
    workflow.save()
    rng = random.Random(7)
    subject_ids = list(workflow.subject_states.order_by("id").values_list("subject_id", flat=True))
    total = 0
    for _ in range(8):
        volunteer = Volunteer.objects.create()
        for subject_id in rng.sample(subject_ids[:30], 20):
            truth = subject_id % 2
            answer = truth if rng.random() < 0.85 else 1 - truth
            path = [{"task": "T0", "value": answer}] + ([{"task": "T1", "value": 1}] if answer == 1 else [])
            boxes = [{"tool": 0, "x": 150 + rng.randint(-5, 5), "y": 160, "width": 90, "height": 70}] if subject_id == subject_ids[0] else []
            submit_classification(volunteer, {"workflow": workflow.pk, "subject": subject_id, "idempotency_key": f"browser-{volunteer.pk}-{subject_id}",
                                              "annotations": [*path, {"task": "T2", "value": boxes}]})
            total += 1
    services.apply_pending(workflow.pk)
    # The machine retires one more (as platform/machine does), so the chart shows that reason too.
    SubjectWorkflowState.objects.filter(workflow=workflow, subject_id=subject_ids[-1]).update(
        status="retired", retirement_reason="machine", retired_at=services.timezone.now()
    )
    services.snapshot_statistics(workflow.pk)
    first = SubjectWorkflowState.objects.get(workflow=workflow, subject_id=subject_ids[0])
    first.posterior = {**first.posterior, "T2": BOXES}
    first.save()
    from django.core.cache import cache

    cache.clear()
    return {"workflow": workflow, "total": total, "subject_id": subject_ids[0]}


def sign_in(page, live_server, username: str, next_url: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/?next={next_url}")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}")
    page.click("button[type=submit]")


def pages(workflow) -> dict[str, str]:
    base = f"/projects/{workflow.project.slug}/workflows/{workflow.pk}"
    return {"dashboard": f"{base}/dashboard/", "admin": f"{base}/admin/", "subject": f"{base}/subjects/"}


def bar_values(page, chart: str) -> list[float]:
    return page.eval_on_selector_all(f"#{chart} rect.bar", "els => els.map(e => Number(e.dataset.value))")


def test_the_dashboard_shows_its_charts_with_real_numbers(new_page, live_server, classified, screenshot) -> None:
    from projects.models import SubjectWorkflowState

    workflow = classified["workflow"]
    states = SubjectWorkflowState.objects.filter(workflow=workflow)
    retired = states.filter(status="retired")
    by_reason = {r: retired.filter(retirement_reason=r).count() for r in set(retired.values_list("retirement_reason", flat=True))}
    assert by_reason.get("machine") == 1 and sum(by_reason.values()) > 3
    # Whole-workflow retirement names the task that settled last; the dashboard groups them.
    by_kind = {kind: sum(n for r, n in by_reason.items() if r.split(":")[0] == kind) for kind in {r.split(":")[0] for r in by_reason}}
    on_task = {r.split(":")[1]: n for r, n in by_reason.items() if r.startswith("consensus:")}
    assert on_task and set(on_task) <= {"T0", "T1", "T2"}

    page = new_page(viewport={"width": 1280, "height": 1300})
    sign_in(page, live_server, "scientist", pages(workflow)["dashboard"])
    page.wait_for_url(re.compile(r".*/dashboard/$"))
    page.wait_for_selector("#chorus-dashboard[data-updated-at]")

    def stat(name: str) -> str:
        return page.text_content(f"[data-stat={name}]").strip()

    assert stat("subjects") == str(states.count()) == "48"
    assert stat("retired") == str(retired.count())
    assert stat("remaining") == str(states.count() - retired.count())
    assert stat("classifications") == str(classified["total"])
    tasks_text = ", ".join(f"{task} {n}" for task, n in sorted(on_task.items()))
    assert f"consensus {by_kind['consensus']} ({tasks_text})" in stat("retired_by_reason")
    for kind, n in by_kind.items():
        assert f"{kind} {n}" in stat("retired_by_reason")
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", stat("projected_completion"))
    assert stat("model") == "none yet"

    # Classifications per hour: the bars add up to every classification.
    assert sum(bar_values(page, "chart-hourly")) == classified["total"]
    # Retired over time: one line per kind of reason, ending at its count (in its legend).
    series = page.eval_on_selector_all("#chart-retired path.series", "els => els.map(e => e.dataset.series)")
    assert sorted(series) == sorted(by_kind)
    legend = page.text_content("#chart-retired svg")
    for kind, n in by_kind.items():
        assert f"{kind} ({n})" in legend
    # Posterior histogram: one count per subject with a posterior; skill: one per volunteer.
    assert sum(bar_values(page, "chart-posterior")) == states.exclude(posterior=None).count() == 30
    assert sum(bar_values(page, "chart-skill")) == 8
    assert page.eval_on_selector_all("#chart-posterior rect.bar", "els => els.filter(e => Number(e.getAttribute('height')) > 0).length") > 0
    # Retirement events from the Redis stream, linking to subject pages, the reason naming its task.
    assert page.locator("[data-testid=events] li").count() == retired.count() - 1  # the machine's was not via the loop
    assert page.locator("[data-testid=events] li", has_text="retired (consensus on T").count() == sum(on_task.values())
    assert page.locator("[data-testid=subjects] tbody tr").count() == 30
    screenshot(page, "dashboard")

    # Live: new classifications show up at the next poll (every 5 s) without a reload.
    from classifications.models import Volunteer
    from classifications.services import submit_classification
    from live import services

    subject_id = states.filter(status="active", classification_count=0).first().subject_id
    submit_classification(Volunteer.objects.create(), {"workflow": workflow.pk, "subject": subject_id, "idempotency_key": "live-one-more",
                                                       "annotations": [{"task": "T0", "value": 0}, {"task": "T2", "value": []}]})
    services.apply_pending(workflow.pk)
    page.wait_for_function(f"document.querySelector('[data-stat=classifications]').textContent.trim() === '{classified['total'] + 1}'", timeout=15_000)


def test_a_subject_page_shows_its_path_and_boxes(new_page, live_server, classified, screenshot) -> None:
    from classifications.models import Classification

    workflow, subject_id = classified["workflow"], classified["subject_id"]
    page = new_page(viewport={"width": 1280, "height": 1100})
    sign_in(page, live_server, "scientist", f"{pages(workflow)['subject']}{subject_id}/")
    page.wait_for_selector(".agg-box rect")
    assert page.locator(".agg-box").count() == 2
    assert page.text_content(".agg-box text") == "93%"
    page.wait_for_function("document.querySelector('.overlay-wrap img').complete && document.querySelector('.overlay-wrap img').naturalWidth > 0")
    n = Classification.objects.filter(subject_id=subject_id).count()
    assert page.locator("[data-testid=classifications] tbody tr").count() == n
    assert page.locator("[data-testid=posterior-path] figure[data-task=T0] path.series").count() == 4  # one per answer
    assert page.locator("[data-testid=posterior-path] figure[data-task=T0] svg").get_attribute("aria-label") == "Posterior path of T0"
    first_cell = page.text_content("[data-testid=classifications] tbody tr td.num")
    assert first_cell and first_cell.count("/") == 3
    assert not page.is_visible(".raw-boxes rect")
    page.check("#show-raw-boxes")
    assert page.locator(".raw-boxes rect").count() == n
    # Each task's risk against its bar, as the engine stored it, and its path vote by vote.
    from projects.models import SubjectWorkflowState

    state = SubjectWorkflowState.objects.get(workflow=workflow, subject_id=subject_id)
    risks = state.posterior["@risk"]
    assert page.locator("[data-testid=task-risk] tbody tr").count() == len(risks) == 3
    for task, risk in risks.items():
        cells = page.locator(f"[data-testid=task-risk] tr[data-task={task}] td").all_inner_texts()
        assert cells[1] == risk["kind"] and cells[5] == f"{risk['bar']:g}" and cells[6] == ("✓" if risk["settled"] else "✗"), cells
        assert float(cells[4]) == pytest.approx(risk["weighted_risk"], abs=5e-5)
    # Every task is required here: its weighted risk and its bar, a line each.
    assert page.locator("[data-testid=posterior-path] figure[data-task='@risk'] path.series").count() == 2 * len(risks)
    if state.retirement_reason.startswith("consensus:"):
        assert f"consensus on {state.retirement_reason.split(':')[1]}" in page.text_content("[data-testid=retirement-reason]")
    screenshot(page, "subject")


def test_the_admin_page_changes_settings_with_an_audit_log(new_page, live_server, classified, screenshot) -> None:
    from projects.models import AdminAction

    workflow = classified["workflow"]
    page = new_page(viewport={"width": 1280, "height": 1400})
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, live_server, "scientist", pages(workflow)["admin"])
    page.wait_for_selector("text=Active-learning loop")
    page.fill("#gold_feedback_rate", "0.4")
    page.click("text=Save gold rate")
    page.wait_for_selector("[data-testid=messages] >> text=Gold feedback rate set to 0.4")
    # Invalid estimator JSON is caught in the browser before it is sent.
    page.fill("#estimator", "{oops")
    page.click("text=Save rules")
    assert page.is_visible(".field-error[data-for=estimator]")
    page.fill("#estimator", "")
    # The whole workflow (the default scope): the first question's policy is hidden; a task not
    # required has no bar to give.
    assert page.is_checked("input[name=scope][value=workflow]") and not page.is_visible("#policy")
    page.uncheck("#required-T1")
    assert page.is_disabled("#bar-T1") and page.is_enabled("#bar-T2")
    assert page.input_value("#bar") == "0.05"  # the fixture's one bar for every task
    page.fill("#bar", "")  # T0 back to a question's default
    page.fill("#bar-T2", "0.05")
    page.fill("#min", "5")
    page.fill("#budget", "4")  # under min: the server says so, and nothing changes
    page.click("text=Save rules")
    page.wait_for_selector("[data-testid=error-budget]")
    assert "at least min (5)" in page.text_content("[data-testid=error-budget]")
    assert page.input_value("#budget") == "4" and not page.is_checked("#required-T1")  # the rejected input is kept
    workflow.refresh_from_db()
    assert workflow.retirement == {"bar": 0.05, "min": 3, "budget": 5, "half_trust": 0}
    page.fill("#budget", "8")
    page.click("text=Save rules")
    page.wait_for_selector("[data-testid=messages] >> text=Retirement rules saved")
    workflow.refresh_from_db()
    assert workflow.retirement == {"scope": "workflow", "required": ["T0", "T2"], "bar": {"T2": 0.05}, "min": 5, "budget": 8, "estimator": {}, "half_trust": 0}
    assert '"bars": {"T0": 0.01, "T2": 0.05}' in page.text_content("[data-testid=engine-config]")
    screenshot(page, "admin-retirement")
    # Back to the first question's rule: its policy shows, the whole-workflow fields are ignored.
    page.check("input[name=scope][value=first_question]")
    assert page.is_visible("#policy") and not page.is_visible("#min")
    page.fill("#policy", "min:3,posterior:0.9,max:4")
    page.click("text=Save rules")
    page.wait_for_selector("[data-testid=messages] >> text=Retirement rules saved")
    page.click("text=Pause")
    page.wait_for_selector("[data-testid=workflow-state] >> text=paused")
    log = page.text_content("[data-testid=audit-log]")
    assert "gold_rate_updated" in log and "retirement_updated" in log and "paused" in log and "scientist" in log
    workflow.refresh_from_db()
    assert workflow.gold_feedback_rate == 0.4 and workflow.active is False
    assert workflow.retirement == {"scope": "first_question", "policy": "min:3,posterior:0.9,max:4", "estimator": {}, "half_trust": 0}
    assert AdminAction.objects.filter(workflow=workflow, user__username="scientist").count() == 4
    page.click("text=Resume")
    page.wait_for_selector("[data-testid=workflow-state] >> text=running")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "admin")


def test_a_volunteer_cannot_open_the_admin_pages(new_page, live_server, classified) -> None:
    workflow = classified["workflow"]
    page = new_page()
    sign_in(page, live_server, "volunteer", "/")
    page.wait_for_url(f"{live_server.url}/")
    for name in ("admin", "dashboard"):
        response = page.goto(f"{live_server.url}{pages(workflow)[name]}")
        assert response.status == 403, name
        assert "Active-learning loop" not in page.content()
    response = page.goto(f"{live_server.url}/dashboards/workflows/{workflow.pk}/download/classifications.csv")
    assert response.status == 403
    # Without signing in: the login page.
    anonymous = new_page()
    anonymous.goto(f"{live_server.url}{pages(workflow)['admin']}")
    assert "/accounts/login/" in anonymous.url and anonymous.is_visible("#id_password")
    # The volunteer's home page has no dashboard or admin links.
    page.goto(f"{live_server.url}/")
    assert page.locator("[data-testid=admin-link]").count() == 0
