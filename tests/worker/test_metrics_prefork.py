"""Metrics of a prefork worker whose children are replaced, served by its main process."""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from scheduler.enqueue import send_job
from tests.worker.celery_harness import celery_worker, metric_value, scrape, wait_until
from tests.worker.scan_records import register, settled_count
from worker.tasks import screen

pytestmark = [pytest.mark.redis, pytest.mark.slow]

JOBS = 200
CONCURRENCY = 4
MAX_TASKS_PER_CHILD = 5
BATCH_SIZE = 4

# prometheus_client writes at most four files per process: counter, histogram and the two
# gauge modes in use. Exited children leave only the two archive files behind.
MAX_METRIC_FILES = 2 + 4 * (CONCURRENCY + 1)
PID_FILE = re.compile(r"_(\d+)\.db$")


def _copy_scans(source_folder, target_folder, count: int) -> list:
    sources = sorted(source_folder.glob("*.png"))
    target_folder.mkdir()
    paths = []
    for index in range(count):
        target = target_folder / f"scan_{index:03d}.png"
        shutil.copyfile(sources[index % len(sources)], target)
        paths.append(target)
    return paths




def _processed(metrics: str) -> float:
    scored = metric_value(metrics, "cargoscan_scans_total", 'outcome="scored"')
    failed = metric_value(metrics, "cargoscan_scans_total", 'outcome="failed"')
    return scored + failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# PostgreSQL only: this is the multi-process production setup, and running it on SQLite as
# well would double a test that already takes minutes on a small machine.
@pytest.mark.parametrize("database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_prefork_counts_every_job(enrolled_database, redis_url, scan_folder, tmp_path):
    paths = _copy_scans(scan_folder, tmp_path / "queue", JOBS)
    ids = register(enrolled_database, paths)
    database_url = enrolled_database.engine.url.render_as_string(hide_password=False)
    metrics_dir = tmp_path / "metrics"

    with celery_worker(
        database_url, redis_url, tmp_path,
        pool="prefork", concurrency=CONCURRENCY, max_tasks_per_child=MAX_TASKS_PER_CHILD,
        max_batch_size=str(BATCH_SIZE), CARGOSCAN_SCAN_ROOT=str(tmp_path / "queue"),
        CARGOSCAN_METRICS_MULTIPROC_DIR=str(metrics_dir),
    ) as (queue, port, log_path):
        for uri, scan_id in ids.items():
            send_job(screen, scan_id, uri, queue)
        wait_until(lambda: settled_count(enrolled_database, ids.values()) == JOBS, 240, interval_s=1.0, message="all scans settled")
        wait_until(lambda: _processed(scrape(port)) >= JOBS, 30, message="every scan counted")

        # Several scrapes, so one that double-counts an archived child would show.
        samples = []
        for _ in range(3):
            samples.append(scrape(port))
            time.sleep(0.5)
        files = sorted(path.name for path in metrics_dir.iterdir())
        live_pid_files = [name for name in files if PID_FILE.search(name) and _alive(int(PID_FILE.search(name)[1]))]

    for metrics in samples:
        assert _processed(metrics) == JOBS
    metrics = samples[-1]
    assert metric_value(metrics, "cargoscan_scans_total", 'outcome="failed"') == 0
    assert metric_value(metrics, "cargoscan_batch_size_sum") == JOBS
    assert metric_value(metrics, "cargoscan_scan_latency_seconds_count") == JOBS
    assert metric_value(metrics, "cargoscan_batch_size_count") >= JOBS / BATCH_SIZE

    # At least JOBS / BATCH_SIZE batches at MAX_TASKS_PER_CHILD each means children were replaced.
    assert "counter_archive.db" in files
    assert "histogram_archive.db" in files
    assert len(files) <= MAX_METRIC_FILES, files
    assert sorted(name for name in files if PID_FILE.search(name)) == sorted(live_pid_files)
    assert re.search(r'cargoscan_worker_info\{exemplar_set="\d+",model_version="[0-9a-f]{12}",version="[^"]+"\} 1\.0', metrics)
