"""Start the worker's Prometheus endpoint in the worker's main process.

With the solo pool (or threads) the main process screens and serves its own registry. With
the prefork pool the children screen, so the main process serves a registry that reads
every child's multiprocess files. Both add the Redis queue depth, read at scrape time.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from worker.metrics import MULTIPROCESS_DIR
from worker.metrics_multiprocess import ArchivingMultiProcessCollector, clean_directory, start_archiver
from worker.queue_depth import QueueDepthCollector, is_redis_url
from worker.settings import Settings

logger = logging.getLogger(__name__)

ARCHIVE_INTERVAL_S = 15.0


def runs_in_child_processes(pool_cls) -> bool:
    """Return True when the Celery pool ``pool_cls`` (a class or an alias like "solo") runs tasks in forked children."""
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool

    return issubclass(get_implementation(pool_cls), TaskPool)


def monitored_queues(settings: Settings) -> list[str]:
    """Return the configured Celery queues: every settings field whose name ends in ``queue``."""
    return [value for name, value in settings if name.endswith("queue") and isinstance(value, str) and value]


def start_worker_metrics(settings: Settings, pool_cls) -> bool:
    """Serve /metrics on ``metrics_address:metrics_port`` from daemon threads; returns False when it stays off.

    The endpoint stays off with port 0, and for a prefork pool without a multiprocess folder,
    because the main process would then serve zeros while its children do the counting.
    """
    if settings.metrics_port == 0:
        return False

    if MULTIPROCESS_DIR is None and runs_in_child_processes(pool_cls):
        logger.error(
            "metrics endpoint disabled: the prefork pool screens in child processes, whose metrics the main process "
            "can only read through files; set CARGOSCAN_METRICS_MULTIPROC_DIR to an empty folder for this worker, "
            "or start the worker with --pool solo"
        )
        return False

    if MULTIPROCESS_DIR is not None:
        deleted = clean_directory(MULTIPROCESS_DIR, keep_pid=os.getpid())
        logger.info("metrics multiprocess folder %s: removed %d files of earlier processes", MULTIPROCESS_DIR, deleted)
        registry = CollectorRegistry()
        registry.register(ArchivingMultiProcessCollector(MULTIPROCESS_DIR))
        start_archiver(MULTIPROCESS_DIR, ARCHIVE_INTERVAL_S)
    else:
        registry = REGISTRY

    if is_redis_url(settings.broker_url):
        registry.register(QueueDepthCollector(settings.broker_url, monitored_queues(settings)))
    else:
        logger.info("queue depth not exported: the broker is not Redis")

    start_http_server(settings.metrics_port, addr=settings.metrics_address, registry=registry)
    logger.info("serving Prometheus metrics on %s:%d", settings.metrics_address, settings.metrics_port)
    return True
