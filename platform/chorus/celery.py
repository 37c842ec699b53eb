"""The Celery application: broker and settings come from Django's settings (``CELERY_*``).

A worker that consumes the live loop's queue requeues, each time it connects to the broker (start,
restart after a kill, reconnection after Redis came back), every workflow that has unapplied
classifications in PostgreSQL: the tasks lost with a killed worker or refused by a broker that was
down are replaced at once, not at beat's next recovery run.

It also keeps a worker alive through a Redis restart (kombu 5.7 / Celery 5.7): on a lost connection
the consumer closes the broker connection twice (``collect()``, then ``close()``). When the first
close could not hand a task it held back to Redis (Redis being down, which is why the connection
was lost), the second tries again through a transport whose client the first one cleared, and the
``AttributeError`` ("'NoneType' object has no attribute 'hostname'") ended the worker: "Unrecoverable
error". ``_connparams`` now raises the connection error kombu ignores while cleaning up, and the
consumer reconnects; the held task stays in Redis's unacknowledged set (redelivered after the
visibility timeout), and the work it stood for is requeued from PostgreSQL on reconnection.
"""

import logging
import os

from celery import Celery, bootsteps
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chorus.settings")

logger = logging.getLogger(__name__)

_kombu_connparams = kombu_redis.Channel._connparams


def _connparams_of_open_connection(self, asynchronous: bool = False) -> dict:  # noqa: ANN001 - kombu's Channel
    if self.connection.client is None:
        raise RedisConnectionError("the broker connection is already closed")
    return _kombu_connparams(self, asynchronous=asynchronous)


kombu_redis.Channel._connparams = _connparams_of_open_connection

app = Celery("chorus")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class RequeueUnappliedOnConnect(bootsteps.StartStopStep):
    """Consumer step: started after the task consumer on every (re)connection to the broker."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, consumer) -> None:  # noqa: ANN001 - Celery's Consumer
        queues = {queue.name for queue in getattr(consumer.task_consumer, "queues", [])}
        if "aggregation" not in queues:
            return
        from live.services import requeue_unapplied

        try:
            requeue_unapplied(older_than_seconds=0)
        except Exception:  # noqa: BLE001 - PostgreSQL down too: beat's recovery task requeues later
            logger.exception("could not requeue unapplied classifications on connecting")


app.steps["consumer"].add(RequeueUnappliedOnConnect)
