"""End to end with a real Celery worker on the "ml" queue: a promotion (and then a roll-back) makes
the worker embed the workflow's subjects with the version serving, and the search follows."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from machine import promotion
from machine.models import ModelVersion
from similarity import embeddings, selectors
from tests.similarity.conftest import tiny_classifier

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _wait_for(check, seconds: float = 90.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out")


def test_the_ml_worker_builds_the_space_of_each_version_promoted(galaxy_workflow, start_worker, monkeypatch) -> None:
    # Every promotion re-embeds here (no refresh interval; the interval itself: test_embeddings.py).
    monkeypatch.setattr(embeddings, "REFRESH_SECONDS", 0.0)
    workflow = galaxy_workflow()
    worker = start_worker("ml", queues="ml")
    versions = [ModelVersion.objects.create(workflow=workflow, version=n, state=ModelVersion.State.TRAINED,
                                            model=tiny_classifier(n).to_bytes(), metrics={"trained": False}) for n in (1, 2)]
    promotion.promote_model_version(versions[0], predict="no")
    first = _wait_for(lambda: (s := embeddings.current_space(workflow)) is not None and s.model_version_id == versions[0].pk and s)
    assert first.n_subjects == 40
    subject = workflow.subject_states.order_by("subject_id").first().subject_id
    assert selectors.similar_subjects(workflow, [subject], 5)["space"]["model_version"] == 1
    promotion.promote_model_version(versions[1], predict="no")
    _wait_for(lambda: embeddings.current_space(workflow).model_version_id == versions[1].pk)
    started = timezone.now()
    promotion.roll_back(workflow, predict="no")
    back = _wait_for(lambda: (s := embeddings.current_space(workflow)).activated_at > started and s)
    assert back.pk == first.pk  # reused, not embedded again
    assert "build_embeddings" in worker.log_path.read_text()
