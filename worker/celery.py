"""The Celery app: JSON-only messages over Redis, late acknowledgement, batched screening.

Start a worker with ``celery -A worker worker --pool solo`` (one process per GPU).
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from scheduler.beat import nightly_beat_schedule
from worker.settings import Settings, get_settings


def screening_queues(settings: Settings) -> tuple[Queue, Queue]:
    """Return the live and rescore queues, each bound to its own routing key.

    Without an explicit key Celery binds every queue to the default queue's key, so a job
    published to the exchange by key would land in both queues.
    """
    exchange = Exchange(settings.queue, type="direct")
    return (
        Queue(settings.queue, exchange, routing_key=settings.queue),
        Queue(settings.rescore_queue, exchange, routing_key=settings.rescore_queue),
    )


settings = get_settings()

app = Celery("cargoscan", broker=settings.broker_url, include=["worker.tasks", "scheduler.beat"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    task_acks_late=True,
    # A job lost with its worker is redelivered, not dropped.
    task_reject_on_worker_lost=True,
    task_default_queue=settings.queue,
    # Workers consume the live queue first and the rescore queue only when it is empty: the
    # Redis transport's "priority" strategy polls queues in the order listed here.
    task_queues=screening_queues(settings),
    # celery-batches needs the prefetch window to hold at least one full batch; two let the
    # next batch arrive while the current one runs, without one worker hoarding the queue.
    worker_prefetch_multiplier=2 * settings.max_batch_size,
    broker_transport_options={
        "visibility_timeout": settings.visibility_timeout_s,
        "queue_order_strategy": "priority",
        # kombu 5.7 sweeps for unacknowledged messages past the visibility timeout only every
        # interval x throttle seconds (100 s by default); one scan per interval is cheap.
        "unacked_restore_interval": settings.unacked_restore_interval_s,
        "unacked_restore_throttle": 1,
    },
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    # `celery -A worker beat` sends the nightly drop-folder run at nightly_time in this time zone.
    timezone=settings.timezone,
    beat_schedule=nightly_beat_schedule(settings),
)
