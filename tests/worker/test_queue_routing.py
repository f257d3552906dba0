"""The live and rescore queues receive only the jobs routed to them, on a real Redis."""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection, Producer

from worker.celery import screening_queues
from worker.settings import Settings

pytestmark = pytest.mark.redis


def test_app_queues_have_distinct_routing_keys():
    from worker.celery import app, settings

    # Celery fills in defaults for queues declared without a key, so check what it made of
    # them. Other tests add private queues to the same app, so only the two configured ones
    # are looked up.
    queues = app.amqp.queues

    assert queues[settings.queue].routing_key == settings.queue
    assert queues[settings.rescore_queue].routing_key == settings.rescore_queue


def test_job_routed_by_key_reaches_one_queue(redis_url):
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(database_url="unused://", queue=f"test-live-{suffix}", rescore_queue=f"test-rescore-{suffix}")
    live, rescore = screening_queues(settings)

    with Connection(redis_url) as connection:
        channel = connection.channel()
        bound = [queue(channel) for queue in (live, rescore)]
        try:
            for queue in bound:
                queue.declare()
            producer = Producer(channel, exchange=live.exchange)
            producer.publish({"job": "live"}, routing_key=live.routing_key, serializer="json")
            producer.publish({"job": "rescore"}, routing_key=rescore.routing_key, serializer="json")

            received = {queue.name: [] for queue in bound}
            for queue in bound:
                while (message := queue.get(no_ack=True)) is not None:
                    received[queue.name].append(message.payload["job"])
        finally:
            for queue in bound:
                queue.delete()

    assert received == {live.name: ["live"], rescore.name: ["rescore"]}
