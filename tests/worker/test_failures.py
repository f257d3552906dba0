"""Failure scenarios with real worker processes: kills, crashing scans, pickle messages."""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest
from kombu import Connection, Exchange, Producer, Queue
from sqlalchemy import func, select

from db.schema import SCAN_DONE, SCAN_FAILED, Result, Scan
from scheduler.enqueue import send_job
from tests.worker.celery_harness import launch_worker, metric_value, private_queue, scrape, wait_until
from tests.worker.scan_records import all_settled, register
from worker.tasks import screen

pytestmark = [pytest.mark.redis, pytest.mark.slow]

VISIBILITY_TIMEOUT_S = "10"



def _statuses(database, scan_ids) -> dict[int, tuple[str, str | None]]:
    with database.sessions() as session:
        rows = session.execute(select(Scan.id, Scan.status, Scan.failure_reason).where(Scan.id.in_(list(scan_ids)))).tuples()
        return {scan_id: (status, reason) for scan_id, status, reason in rows}



def _result_counts(database, scan_ids) -> list[int]:
    with database.sessions() as session:
        return session.execute(
            select(func.count(Result.id)).select_from(Scan).outerjoin(Result, Result.scan_id == Scan.id)
            .where(Scan.id.in_(list(scan_ids))).group_by(Scan.id)
        ).scalars().all()


def _url(database) -> str:
    return database.engine.url.render_as_string(hide_password=False)


def _kill(worker) -> None:
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait()


def test_killed_worker_jobs_redelivered(enrolled_database, redis_url, scan_folder, tmp_path):
    paths = sorted(scan_folder.glob("*.png"))
    slow = scan_folder / "slow_scan.png"
    shutil.copy(paths[0], slow)
    ids = register(enrolled_database, [*paths, slow])
    queue = private_queue()
    options = dict(
        queue=queue, crashing=True, max_batch_size="16", CARGOSCAN_SCAN_ROOT=str(scan_folder),
        CARGOSCAN_VISIBILITY_TIMEOUT_S=VISIBILITY_TIMEOUT_S,
    )

    first = launch_worker(_url(enrolled_database), redis_url, tmp_path, CARGOSCAN_TEST_SLOW_S="120", **options)
    for uri, scan_id in ids.items():
        send_job(screen, scan_id, uri, queue)
    wait_until(lambda: _attempted(enrolled_database, ids.values()), 60, message="batch started")
    _kill(first)
    assert _result_counts(enrolled_database, ids.values()) == [0] * len(ids)

    second = launch_worker(_url(enrolled_database), redis_url, tmp_path, CARGOSCAN_TEST_SLOW_S="0.5", **options)
    try:
        wait_until(lambda: all_settled(enrolled_database, ids.values()), 120, interval_s=1.0, message="redelivered jobs screened")
        metrics = scrape(second.port)
    finally:
        second.stop()

    assert _result_counts(enrolled_database, ids.values()) == [1] * len(ids)
    assert all(status == SCAN_DONE for status, _ in _statuses(enrolled_database, ids.values()).values())
    assert metric_value(metrics, "cargoscan_scans_total", 'outcome="scored"') == len(ids)


def _attempted(database, scan_ids) -> bool:
    with database.sessions() as session:
        return session.execute(select(func.max(Scan.attempts)).where(Scan.id.in_(list(scan_ids)))).scalar_one() > 0


def test_poison_scan_fails_after_bounded_attempts(enrolled_database, redis_url, scan_folder, tmp_path):
    paths = sorted(scan_folder.glob("*.png"))[:4]
    poison = scan_folder / "poison_scan.png"
    shutil.copy(paths[0], poison)
    ids = register(enrolled_database, [*paths, poison])
    queue = private_queue()
    options = dict(
        queue=queue, crashing=True, CARGOSCAN_SCAN_ROOT=str(scan_folder),
        CARGOSCAN_VISIBILITY_TIMEOUT_S=VISIBILITY_TIMEOUT_S, CARGOSCAN_MAX_ATTEMPTS="2",
    )
    for uri, scan_id in ids.items():
        send_job(screen, scan_id, uri, queue)

    # A supervisor restarts the worker each time the poison scan kills it.
    restarts = 0
    deadline = time.monotonic() + 240
    while not all_settled(enrolled_database, ids.values()) and time.monotonic() < deadline:
        worker = launch_worker(_url(enrolled_database), redis_url, tmp_path, **options)
        while worker.process.poll() is None and not all_settled(enrolled_database, ids.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
        if worker.process.poll() is not None:
            restarts += 1
        worker.stop()

    statuses = _statuses(enrolled_database, ids.values())
    assert statuses[ids[str(poison)]][0] == SCAN_FAILED
    assert "did not finish in 2 deliveries" in statuses[ids[str(poison)]][1]
    assert all(statuses[ids[str(path)]][0] == SCAN_DONE for path in paths)
    assert 1 <= restarts <= 3


def test_pickle_message_rejected(enrolled_database, redis_url, scan_folder, tmp_path):
    paths = sorted(scan_folder.glob("*.png"))[:1]
    ids = register(enrolled_database, paths)
    queue = private_queue()
    marker = tmp_path / "pickle-ran"
    worker = launch_worker(_url(enrolled_database), redis_url, tmp_path, queue=queue, CARGOSCAN_SCAN_ROOT=str(scan_folder))
    try:
        with Connection(redis_url) as connection:
            exchange = Exchange(queue, type="direct")
            producer = Producer(connection, exchange=exchange, routing_key=queue, serializer="pickle")
            producer.publish(
                [(), {"scan_id": 1, "uri": str(marker)}, {}],
                headers={"task": "cargoscan.screen", "id": "pickle-job", "lang": "py"},
                declare=[Queue(queue, exchange, routing_key=queue)],
            )
        uri, scan_id = next(iter(ids.items()))
        send_job(screen, scan_id, uri, queue)
        wait_until(lambda: all_settled(enrolled_database, [scan_id]), 60, message="JSON job after the pickle one screened")
        wait_until(lambda: "pickle" in worker.log(), 30, message="pickle message logged")
        log = worker.log()
    finally:
        worker.stop()

    assert "pickle" in log
    assert "Refusing to deserialize" in log or "untrusted" in log
    assert worker.process.returncode in (0, -signal.SIGTERM)
    assert _statuses(enrolled_database, [scan_id])[scan_id][0] == SCAN_DONE
