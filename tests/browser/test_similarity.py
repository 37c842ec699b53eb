""""More like this" in headless Chromium: from a subject's page a scientist opens the gallery of its
20 nearest galaxies (images, consensus, retirement state), searches by the mean of two, sends a
selection to volunteers first, and sees the map and the unusual subjects. Saves similarity.png
under tests/browser/screenshots/."""

from __future__ import annotations

import pytest

from tests.browser.test_dashboards import pages, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def embedded(demo_workflow, monkeypatch):
    """The demo's 48 galaxies, owned by the scientist, a few classified and one retired, embedded
    by a trunk (the machine's CNN at 32 px) through the platform's build."""
    from django.contrib.auth import get_user_model

    from classifications.models import Volunteer
    from classifications.services import submit_classification
    from live import hot_state, services
    from machine import agents
    from ml import GalaxyClassifier
    from projects.models import SubjectWorkflowState
    from similarity import embeddings, tasks

    monkeypatch.setattr(tasks.build_embeddings, "apply_async", lambda *args, **kwargs: None)  # built below, here
    hot_state.client().flushdb()
    services._LOCAL_ENGINES.clear()
    workflow = demo_workflow
    workflow.project.owners.add(get_user_model().objects.create_user("scientist", password="pw-scientist"))
    ids = list(workflow.subject_states.order_by("subject_id").values_list("subject_id", flat=True))
    for n in range(4):
        volunteer = Volunteer.objects.create()
        for subject_id in ids[:12]:
            submit_classification(volunteer, {"workflow": workflow.pk, "subject": subject_id, "idempotency_key": f"similar-{n}-{subject_id}",
                                              "annotations": [{"task": "T0", "value": 0}, {"task": "T2", "value": []}]})
    services.apply_pending(workflow.pk)
    SubjectWorkflowState.objects.filter(workflow=workflow, subject_id=ids[-1]).update(status="retired", retirement_reason="limit")
    agent = agents.machine_agent(workflow)
    agent.pretrained_model = GalaxyClassifier([("T0", 4)], image_size=32, seed=0).to_bytes()
    agent.save(update_fields=["pretrained_model"])
    embeddings.build_space(workflow.pk)
    return {"workflow": workflow, "ids": ids}


def test_more_like_this_from_a_subject_page_shows_the_gallery(new_page, live_server, embedded, screenshot) -> None:
    from similarity.models import SentFirst

    workflow, ids = embedded["workflow"], embedded["ids"]
    page = new_page(viewport={"width": 1200, "height": 950})
    sign_in(page, live_server, "scientist", f"{pages(workflow)['subject']}{ids[0]}/")
    page.click("[data-testid=more-like-this]")
    gallery = "[data-testid=similar-gallery] .sim-card"
    page.wait_for_selector(gallery)
    assert page.locator(gallery).count() == 20
    page.wait_for_function(f"[...document.querySelectorAll('{gallery} img')].every(i => i.complete && i.naturalWidth > 0)")
    shown = [int(x) for x in page.eval_on_selector_all(gallery, "els => els.map(e => e.dataset.subject)")]
    assert ids[0] not in shown and len(set(shown)) == 20
    assert page.locator("[data-testid=example]").count() == 1
    texts = page.locator(gallery).all_inner_texts()
    assert all(("active" in t or "retired" in t) and "distance" in t for t in texts)
    assert any("T0: Smooth" in t for t in texts) or any("no consensus yet" in t for t in texts)
    # The map (every subject) and the unusual subjects are there too.
    page.wait_for_selector("[data-testid=map] circle")
    assert page.locator("[data-testid=map] circle").count() == 48
    page.wait_for_selector("[data-testid=anomaly-gallery] .sim-card")
    assert page.locator("[data-testid=anomaly-gallery] .sim-card").count() == 20
    assert "pretrained trunk" in page.text_content("[data-testid=space]")
    # Search by the mean of two examples: the second one leaves the results.
    second = shown[0]
    page.locator(f"{gallery}[data-subject='{second}'] button").click()
    page.wait_for_function("document.querySelectorAll('[data-testid=example]').length === 2")
    page.wait_for_function(f"!document.querySelector(\"{gallery}[data-subject='{second}']\")")
    # Select two results and send them to volunteers first.
    cards = page.locator(gallery)
    chosen = [int(cards.nth(i).get_attribute("data-subject")) for i in range(2)]
    for i in range(2):
        cards.nth(i).locator("input[type=checkbox]").check()
    assert "2 selected" in page.text_content("[data-testid=selection-bar]")
    page.click("[data-testid=send-first]")
    page.wait_for_function("document.querySelector('[data-testid=action-message]').textContent.includes('sent to volunteers first')")
    assert sorted(SentFirst.objects.filter(workflow=workflow).values_list("subject_id", flat=True)) == sorted(chosen)
    assert "2 subject(s) are sent to volunteers first" in page.text_content("[data-testid=sent-first]")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "similarity")
