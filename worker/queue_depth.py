"""A Prometheus collector that reads the length of the Celery queues from Redis at scrape time."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from urllib.parse import urlparse

import redis
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

QUEUE_DEPTH = "cargoscan_queue_depth"
QUEUE_DEPTH_HELP = "Jobs waiting in the Redis list of a Celery queue, not counting jobs prefetched by workers"

# kombu's Redis transport (5.x) keeps one list per priority step: the queue name itself for
# priority 0 and "<queue>\x06\x16<step>" for the others. Jobs sent without a priority all go
# to the first list, but counting every step keeps the figure right when a sender sets one.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)

ERROR_LOG_INTERVAL_S = 60.0


def redis_list_keys(queue: str) -> list[str]:
    """Return the Redis keys that hold the jobs of one Celery queue."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]


def is_redis_url(url: str) -> bool:
    return urlparse(url).scheme in ("redis", "rediss", "unix")


class QueueDepthCollector:
    """Exports ``cargoscan_queue_depth{queue}`` for a fixed list of queues.

    The queue names come from configuration, never from Redis, so the label set stays
    bounded. When Redis cannot be reached the metric is left out of that scrape and the
    error is logged at most once a minute.
    """

    def __init__(self, broker_url: str, queues: Sequence[str], timeout_s: float = 2.0) -> None:
        self._queues = list(dict.fromkeys(queues))
        self._client = redis.Redis.from_url(broker_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._errors_since_log = 0
        self._last_error_log = float("-inf")

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Registering with describe() keeps the registry from reading Redis at registration.
        return [GaugeMetricFamily(QUEUE_DEPTH, QUEUE_DEPTH_HELP, labels=["queue"])]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            depths = self.read_depths()
        except redis.RedisError as error:
            self._log_error(error)
            return []

        family = GaugeMetricFamily(QUEUE_DEPTH, QUEUE_DEPTH_HELP, labels=["queue"])
        for queue, depth in depths.items():
            family.add_metric([queue], depth)
        return [family]

    def read_depths(self) -> dict[str, int]:
        """Return the number of waiting jobs per queue, read with one pipelined round trip."""
        with self._client.pipeline(transaction=False) as pipe:
            for queue in self._queues:
                for key in redis_list_keys(queue):
                    pipe.llen(key)
            lengths = pipe.execute()

        steps = len(PRIORITY_STEPS)
        return {queue: sum(lengths[index * steps : (index + 1) * steps]) for index, queue in enumerate(self._queues)}

    def close(self) -> None:
        self._client.close()

    def _log_error(self, error: redis.RedisError) -> None:
        self._errors_since_log += 1
        now = time.monotonic()
        if now - self._last_error_log < ERROR_LOG_INTERVAL_S:
            return

        logger.warning(
            "cannot read queue depth from Redis (%d failed scrapes since the last message): %s", self._errors_since_log, error
        )
        self._errors_since_log = 0
        self._last_error_log = now
