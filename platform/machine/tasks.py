"""Celery tasks of the machine (queue "ml", see CELERY_TASK_ROUTES): thin wrappers around its
services (``machine.training``, ``machine.pretraining``, ``machine.prediction``). A long training
never delays applying votes, which run on "aggregation"."""

from __future__ import annotations

from celery import shared_task
from django.core.cache import cache
from django.db import DatabaseError

from machine import heartbeat, prediction, pretraining, training


@shared_task(acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=True, max_retries=3)
def train_workflow(workflow_id: int, reason: str = "manual") -> int | None:
    """Train a new model version (promoted, and its predictions made, if better); returns its id."""
    try:
        version = training.train_model_version(workflow_id, reason=reason)
    finally:
        cache.delete(heartbeat.training_key(workflow_id))  # the next run may be requested from now on
    return version.pk if version is not None else None


@shared_task(acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=True, max_retries=3)
def pretrain_workflow(workflow_id: int) -> dict:
    """Pretrain the machine's trunk on the workflow's unlabelled images; returns the run's record."""
    try:
        return pretraining.pretrain_machine(workflow_id).pretraining
    finally:
        cache.delete(heartbeat.training_key(workflow_id))


@shared_task(acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=True, max_retries=3)
def predict_unretired(version_id: int) -> dict:
    return prediction.predict_unretired(version_id)


@shared_task
def check_retraining() -> list[int]:
    """Beat: queue a training run wherever ``retrain_every`` new retirements have accumulated."""
    return training.check_retraining()
