"""The batched screening task: a thin shell around :func:`worker.attempts.screen_jobs`."""

from __future__ import annotations

import logging
import time

from celery import signals
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from worker.celery import app, settings
from worker.jobs import parse_requests
from worker.metrics import BATCHES_FAILED, initialize_metrics, record_batch
from worker.attempts import screen_jobs
from worker.retry import DatabaseUnavailable
from worker.runtime import get_runtime

logger = logging.getLogger(__name__)

DONE = "done"
REQUEUE = "requeue"
SETUP_RETRY_DELAY_S = 5.0


class AckAfterCommitBatches(Batches):
    """Batches that acknowledge their messages only once the batch is committed.

    celery-batches 0.11 acknowledges a late-ack batch whenever the task returns, even after
    an exception. Here the task returns ``REQUEUE`` when nothing could be written, and its
    messages go back to the queue instead.
    """

    abstract = True

    def Strategy(self, task, app, consumer):
        """Build the message handler, and restart the flush timer that a lost broker connection removed.

        Celery 5.6 clears the event loop's timers when the broker connection is lost and builds
        every task's strategy again once it reconnects. celery-batches 0.11 starts its flush
        timer only while ``_tref`` is None, so without this a reconnected worker flushed only
        full batches, and a part-filled one waited for more jobs or the visibility timeout.
        """
        handler = super().Strategy(task, app, consumer)
        if self._tref is not None:
            self._tref.cancel()
            self._tref = None
        if self._buffer.qsize() or self._pending.qsize():
            # Jobs buffered before the connection was lost still need a flush.
            self._tref = consumer.timer.call_repeatedly(self.flush_interval, self._do_flush)
        return handler

    def flush(self, requests):
        serializable = ([SimpleRequest.from_request(request) for request in requests],)

        def on_return(outcome) -> None:
            for request in requests:
                if outcome == REQUEUE:
                    request.reject(requeue=True)
                else:
                    request.acknowledge()

        return self._pool.apply_async(apply_batches_task, (self, serializable, 0, None), callback=on_return)


@app.task(
    base=AckAfterCommitBatches,
    name="cargoscan.screen",
    flush_every=settings.max_batch_size,
    flush_interval=settings.max_batch_delay_ms / 1000.0,
    acks_late=True,
)
def screen(requests) -> str:
    """Screen a buffered batch of ``{"scan_id", "uri"}`` jobs; returns DONE or REQUEUE."""
    jobs = parse_requests(requests)
    if not jobs:
        return DONE

    try:
        runtime = get_runtime()
    except Exception:
        # Without a model or database nothing can be screened; keep the jobs and slow down.
        logger.exception("worker cannot screen; %d jobs sent back to the queue", len(jobs))
        BATCHES_FAILED.inc()
        time.sleep(SETUP_RETRY_DELAY_S)
        return REQUEUE

    try:
        reports = screen_jobs(runtime, jobs, settings.max_attempts)
    except DatabaseUnavailable as error:
        BATCHES_FAILED.inc()
        logger.error("batch of %d sent back to the queue: %s", len(jobs), error)
        return REQUEUE
    except Exception:
        # Sent back, not dropped: the redelivery is counted, the scans are then screened one
        # at a time, and one that keeps failing is marked failed after max_attempts.
        logger.exception("batch of %d failed unexpectedly; sending it back to the queue", len(jobs))
        BATCHES_FAILED.inc()
        return REQUEUE

    for report in reports:
        record_batch(report, runtime.screener)
        logger.info(
            "batch screened: %d jobs, %d scored, %d flagged, %d failed, %.3f s (decode %.3f, inference %.3f, write %.3f)",
            report.size, len(report.scored), report.flagged, len(report.failed), report.total_s,
            report.decode_s, report.inference_s, report.write_s,
        )
    return DONE


@signals.worker_init.connect
def _start_metrics_server(sender=None, **_kwargs) -> None:
    from worker.metrics_endpoint import start_worker_metrics

    start_worker_metrics(settings, sender.pool_cls)


@signals.worker_process_init.connect
def _initialize_process_metrics(**_kwargs) -> None:
    # Runs in each prefork child after the fork, and once in a solo worker.
    initialize_metrics()
