"""A real Celery worker process, fed through a real Redis, writing to SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db import repository
from db.schema import SCAN_FAILED, Result, Scan
from scheduler.enqueue import send_job
from tests.worker.celery_harness import celery_worker, metric_value, scrape, wait_until
from tests.worker.scan_records import all_settled, register
from worker.tasks import screen

pytestmark = [pytest.mark.redis, pytest.mark.slow]




def test_scan_enqueued_twice_scored_once(enrolled_database, redis_url, scan_folder, tmp_path):
    ids = register(enrolled_database, sorted(scan_folder.glob("*.png")))
    database_url = enrolled_database.engine.url.render_as_string(hide_password=False)

    with celery_worker(database_url, redis_url, tmp_path, CARGOSCAN_SCAN_ROOT=str(scan_folder)) as (queue, port, _):
        uri, scan_id = next(iter(ids.items()))
        send_job(screen, scan_id, uri, queue)
        send_job(screen, scan_id, uri, queue)
        wait_until(lambda: metric_value(scrape(port), "cargoscan_scans_total", 'outcome="scored"') >= 1, 60, message="first job scored")
        send_job(screen, scan_id, uri, queue)
        wait_until(lambda: metric_value(scrape(port), "cargoscan_batch_size_count") >= 2, 60, message="second batch screened")

    with enrolled_database.sessions() as session:
        assert repository.count_results(session, scan_id) == 1


def test_metrics_count_every_job(enrolled_database, redis_url, scan_folder, tmp_path):
    paths = sorted(scan_folder.glob("*.png"))
    paths[1].write_bytes(b"")
    ids = register(enrolled_database, paths)
    database_url = enrolled_database.engine.url.render_as_string(hide_password=False)

    with celery_worker(database_url, redis_url, tmp_path, CARGOSCAN_SCAN_ROOT=str(scan_folder), max_batch_size="3") as (queue, port, _):
        for uri, scan_id in ids.items():
            send_job(screen, scan_id, uri, queue)
        wait_until(lambda: all_settled(enrolled_database, ids.values()), 90, message="all scans settled")
        metrics = scrape(port)

    assert metric_value(metrics, "cargoscan_scans_total", 'outcome="scored"') == len(ids) - 1
    assert metric_value(metrics, "cargoscan_scans_total", 'outcome="failed"') == 1
    assert metric_value(metrics, "cargoscan_batch_size_sum") == len(ids)
    assert metric_value(metrics, "cargoscan_scan_latency_seconds_count") == len(ids)
    with enrolled_database.sessions() as session:
        assert session.execute(select(func.count()).select_from(Result)).scalar_one() == len(ids) - 1
        failed = session.get(Scan, ids[str(paths[1])])
    assert failed.status == SCAN_FAILED
    assert "empty" in failed.failure_reason


def test_lone_scan_flushed_after_delay(enrolled_database, redis_url, scan_folder, tmp_path):
    ids = register(enrolled_database, sorted(scan_folder.glob("*.png"))[:1])
    database_url = enrolled_database.engine.url.render_as_string(hide_password=False)

    with celery_worker(database_url, redis_url, tmp_path, max_batch_size="32", max_batch_delay_ms="300") as (queue, port, _):
        uri, scan_id = next(iter(ids.items()))
        send_job(screen, scan_id, uri, queue)
        wait_until(lambda: all_settled(enrolled_database, [scan_id]), 60, message="lone scan screened")
        metrics = scrape(port)

    assert metric_value(metrics, "cargoscan_batch_size_sum") == 1
