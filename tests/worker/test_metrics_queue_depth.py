"""The queue-depth collector against the local Redis, fed by the real job publisher."""

from __future__ import annotations

import uuid

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest

from scheduler.enqueue import send_job
from tests.worker.celery_harness import free_port
from worker.metrics_endpoint import monitored_queues
from worker.queue_depth import QueueDepthCollector, redis_list_keys
from worker.settings import Settings
from worker.tasks import screen

pytestmark = pytest.mark.redis


@pytest.fixture
def queues(redis_url):
    names = [f"cargoscan.test.depth.{uuid.uuid4().hex[:8]}" for _ in range(2)]
    yield names
    client = redis.Redis.from_url(redis_url)
    client.delete(*[key for name in names for key in redis_list_keys(name)])
    client.close()


def _depths(collector: QueueDepthCollector) -> dict[str, float]:
    families = list(collector.collect())
    assert [family.name for family in families] == ["cargoscan_queue_depth"]
    return {sample.labels["queue"]: sample.value for sample in families[0].samples}


def test_empty_queues_read_zero(redis_url, queues):
    collector = QueueDepthCollector(redis_url, queues)
    assert _depths(collector) == {queues[0]: 0, queues[1]: 0}
    collector.close()


def test_published_jobs_counted_per_queue(redis_url, queues):
    collector = QueueDepthCollector(redis_url, queues)
    for scan_id in range(1, 4):
        send_job(screen, scan_id, f"/scans/{scan_id}.png", queues[0])
    send_job(screen, 9, "/scans/9.png", queues[1])

    assert _depths(collector) == {queues[0]: 3, queues[1]: 1}
    collector.close()


def test_priority_lists_added(redis_url, queues):
    client = redis.Redis.from_url(redis_url)
    client.rpush(queues[0], "job")
    client.rpush(redis_list_keys(queues[0])[2], "job", "job")
    client.close()

    collector = QueueDepthCollector(redis_url, queues)
    assert _depths(collector)[queues[0]] == 3
    collector.close()


def test_duplicate_queue_names_exported_once(redis_url, queues):
    collector = QueueDepthCollector(redis_url, [queues[0], queues[0]])
    assert list(_depths(collector)) == [queues[0]]
    collector.close()


def test_unreachable_redis_skips_metric():
    # A free port on 127.0.0.1 where nothing listens: the connection is refused at once.
    collector = QueueDepthCollector(f"redis://127.0.0.1:{free_port()}/0", ["cargoscan.scans"], timeout_s=0.5)
    assert list(collector.collect()) == []
    collector.close()


def test_registration_does_not_read_redis(redis_url, queues):
    reads = []

    class CountingCollector(QueueDepthCollector):
        def read_depths(self):
            reads.append(1)
            return super().read_depths()

    collector = CountingCollector(redis_url, queues)
    CollectorRegistry(auto_describe=True).register(collector)

    assert reads == []
    collector.close()


def test_scrape_text_has_queue_label(redis_url, queues):
    registry = CollectorRegistry()
    collector = QueueDepthCollector(redis_url, queues[:1])
    registry.register(collector)
    send_job(screen, 1, "/scans/1.png", queues[0])

    text = generate_latest(registry).decode()

    assert f'cargoscan_queue_depth{{queue="{queues[0]}"}} 1.0' in text
    collector.close()


def test_monitored_queues_from_settings():
    settings = Settings(queue="live")
    expected = [getattr(settings, name) for name in Settings.model_fields if name.endswith("queue")]

    queues = monitored_queues(settings)

    assert queues[0] == "live"
    assert queues == expected
