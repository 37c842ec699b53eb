"""Celery tasks of similarity search, sent to the "ml" queue (``similarity.embeddings.QUEUE``, with
the CNN's other work): thin wrappers around ``similarity.embeddings``."""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError

from similarity import embeddings


@shared_task(acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=True, max_retries=3)
def build_embeddings(workflow_id: int, force: bool = False) -> int | None:
    """Embed the workflow's subjects with the model serving it; returns the space's id (None: nothing to embed with)."""
    space = embeddings.build_space(workflow_id, force=force)
    return space.pk if space is not None else None


@shared_task
def refresh_embeddings() -> list[int]:
    """Beat: re-embed the workflows whose space is due for a refresh and whose model serving changed
    since (a promotion inside ``REFRESH_SECONDS`` of the last build waits for this)."""
    from machine.models import ModelVersion
    from machine.selectors import current_model
    from projects.models import Workflow

    requested = []
    for workflow in Workflow.objects.filter(active=True, model_versions__state=ModelVersion.State.PROMOTED).distinct():
        workflow_id = workflow.pk
        space = embeddings.current_space(workflow_id)
        serving = current_model(workflow)  # which version serves; its weights are loaded only to build
        changed = space is None or serving is None or space.model_version_id != serving.pk
        if changed and embeddings.request_refresh(workflow_id):
            requested.append(workflow_id)
    return requested
