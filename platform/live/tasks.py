"""Celery tasks of the live loop (queue "aggregation"): thin wrappers around live.services.

Tasks are idempotent (applying twice finds nothing unapplied the second time), acknowledged late
(a killed worker's task is delivered again), and retried with a short exponential backoff (at most
``RETRY_BACKOFF_MAX`` seconds: the live loop's lag) when PostgreSQL, Redis or the broker is briefly
unavailable. A retry the broker refuses (it is down) drops the task; nothing is lost by that, since
unapplied classifications are found again in PostgreSQL when a worker reconnects (``chorus.celery``).
"""

from __future__ import annotations

from dataclasses import asdict

from celery import shared_task
from django.db import DatabaseError
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from live import services
from projects.models import Workflow

RETRYABLE = (DatabaseError, RedisError, OperationalError, services.LostLock, ConnectionError)
RETRY_BACKOFF_MAX = 4
LOCKED_OUT_RETRIES = 100


@shared_task(bind=True, acks_late=True, autoretry_for=RETRYABLE, retry_backoff=True, retry_backoff_max=RETRY_BACKOFF_MAX, max_retries=None)
def apply_workflow(self, workflow_id: int) -> dict:  # noqa: ANN001 - Celery's bound task
    report = services.apply_pending(workflow_id)
    if report.more:
        apply_workflow.delay(workflow_id)  # behind the other workflows' tasks already queued
    if report.locked_out and self.request.retries < LOCKED_OUT_RETRIES and services.has_unapplied(workflow_id):
        # Work is waiting and another worker holds the lock. A live holder applies it when it lets
        # go (an applier looks in PostgreSQL, a refit queues a task), so only the holder's death
        # needs watching: one task (the first to claim the watch) retries just after the holder's
        # lock would expire unless renewed, and then takes it over. The others end here. The check
        # runs after apply_pending gave up the pending flag: a vote stored later queues its own task.
        countdown = max(0.2, report.retry_in) + 0.1
        if services.hot_state.claim_watch(workflow_id, countdown):
            raise self.retry(countdown=countdown, max_retries=LOCKED_OUT_RETRIES)
    return asdict(report)


@shared_task(acks_late=True, autoretry_for=RETRYABLE, retry_backoff=True, max_retries=5)
def requeue_unapplied() -> list[int]:
    return services.requeue_unapplied()


@shared_task
def check_ingest() -> dict:
    return services.check_ingest()


@shared_task(acks_late=True, autoretry_for=RETRYABLE, retry_backoff=True, max_retries=5)
def refit_workflow(workflow_id: int) -> int:
    return services.refit_workflow(workflow_id)


@shared_task
def refit_active_workflows() -> list[int]:
    ids = list(Workflow.objects.filter(active=True).values_list("pk", flat=True))
    for workflow_id in ids:
        refit_workflow.delay(workflow_id)
    return ids


@shared_task(acks_late=True, autoretry_for=RETRYABLE, retry_backoff=True, max_retries=5)
def refit_grown_workflow(workflow_id: int) -> int | None:
    return services.refit_grown_workflow(workflow_id)


@shared_task
def refit_grown_workflows() -> list[int]:
    ids = services.grown_workflows()
    for workflow_id in ids:
        refit_grown_workflow.delay(workflow_id)
    return ids


@shared_task
def refresh_queues() -> dict[int, int]:
    return {pk: services.refresh_queue(pk) for pk in Workflow.objects.filter(active=True).values_list("pk", flat=True)}


@shared_task
def snapshot_statistics() -> list[int]:
    return [services.snapshot_statistics(pk).pk for pk in Workflow.objects.filter(active=True).values_list("pk", flat=True)]
