"""Dynamic batching through a real Celery worker: a lone scan is flushed, a burst fills batches.

These tests check behaviour, never speed: the time bound on the lone scan is generous so a
loaded machine passes, and it still fails when the scan waits for a batch to fill.
"""

from __future__ import annotations

import shutil
import time

import pytest

from db import repository
from db.schema import Scan
from scheduler.enqueue import send_job
from tests.worker.celery_harness import celery_worker, metric_value, scrape, wait_until
from tests.worker.scan_records import all_settled, register
from worker.tasks import screen

pytestmark = [pytest.mark.redis, pytest.mark.slow]

MAX_BATCH_DELAY_S = 1.0
# A batch of one tiny-model scan takes well under a second; the margin covers a busy machine.
BATCH_TIME_BOUND_S = 8.0




def _database_latency_s(database, scan_id: int) -> float:
    with database.sessions() as session:
        scan = session.get(Scan, scan_id)
        return (scan.updated_at - scan.queued_at).total_seconds()


def test_lone_scan_flushed_within_delay(enrolled_database, redis_url, scan_folder, tmp_path):
    warm_path, lone_path = sorted(scan_folder.glob("*.png"))[:2]
    ids = register(enrolled_database, [warm_path, lone_path])
    database_url = enrolled_database.engine.url.render_as_string(hide_password=False)
    delay_ms = str(int(MAX_BATCH_DELAY_S * 1000))

    with celery_worker(database_url, redis_url, tmp_path, max_batch_size="32", max_batch_delay_ms=delay_ms) as (queue, port, _):
        # The first batch loads the model and the exemplars; the lone scan must not pay for that.
        send_job(screen, ids[str(warm_path)], str(warm_path), queue)
        wait_until(lambda: all_settled(enrolled_database, [ids[str(warm_path)]]), 60, message="warm-up scan screened")

        lone_id = ids[str(lone_path)]
        with enrolled_database.sessions.begin() as session:
            repository.requeue_scans(session, [lone_id])
        sent = time.monotonic()
        send_job(screen, lone_id, str(lone_path), queue)
        wait_until(lambda: all_settled(enrolled_database, [lone_id]), 60, interval_s=0.02, message="lone scan screened")
        observed_s = time.monotonic() - sent
        metrics = scrape(port)

    assert observed_s < MAX_BATCH_DELAY_S + BATCH_TIME_BOUND_S
    assert _database_latency_s(enrolled_database, lone_id) < MAX_BATCH_DELAY_S + BATCH_TIME_BOUND_S
    assert metric_value(metrics, "cargoscan_batch_size_count") == 2
    assert metric_value(metrics, "cargoscan_batch_size_sum") == 2


def test_burst_fills_batches(enrolled_database, redis_url, scan_folder, tmp_path):
    # Twelve distinct scans (copies of the eight fixtures) sent at once, four per batch.
    sources = sorted(scan_folder.glob("*.png"))
    paths = []
    for index in range(12):
        copy = scan_folder / f"copy_{index:02d}.png"
        shutil.copyfile(sources[index % len(sources)], copy)
        paths.append(copy)
    ids = register(enrolled_database, paths)
    database_url = enrolled_database.engine.url.render_as_string(hide_password=False)

    # A long delay, so only a full buffer can trigger a flush while the burst arrives.
    with celery_worker(database_url, redis_url, tmp_path, max_batch_size="4", max_batch_delay_ms="20000") as (queue, port, _):
        for uri, scan_id in ids.items():
            send_job(screen, scan_id, uri, queue)
        wait_until(lambda: all_settled(enrolled_database, ids.values()), 90, message="burst screened")
        metrics = scrape(port)

    assert metric_value(metrics, "cargoscan_batch_size_count") == 3
    assert metric_value(metrics, "cargoscan_batch_size_sum") == 12
