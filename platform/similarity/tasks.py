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
