"""Archiving the multiprocess files of exited processes keeps every count and bounds the folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.worker.celery_harness import REPO_ROOT
from worker.metrics_multiprocess import ArchivingMultiProcessCollector, archive_dead_processes, clean_directory

# A short-lived process that records like a pool child: counters, a histogram and the info gauge.
CHILD_SCRIPT = textwrap.dedent(
    """
    import sys
    from worker.metrics import BATCH_SIZE, SCANS, WORKER_INFO

    count = int(sys.argv[1])
    SCANS.labels(outcome="scored").inc(count)
    BATCH_SIZE.observe(count)
    WORKER_INFO.labels("test", "abcdef012345", "1").set(1)
    """
)


def _run_child(folder, count: int) -> None:
    env = dict(os.environ, CARGOSCAN_METRICS_MULTIPROC_DIR=str(folder))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    subprocess.run([sys.executable, "-c", CHILD_SCRIPT, str(count)], cwd=REPO_ROOT, env=env, check=True, timeout=120)


def _totals(folder) -> dict[str, float]:
    values = {}
    for family in MultiProcessCollector(None, path=str(folder)).collect():
        for sample in family.samples:
            if sample.name in ("cargoscan_scans_total", "cargoscan_batch_size_count", "cargoscan_batch_size_sum"):
                if sample.labels.get("outcome", "scored") == "scored":
                    values[sample.name] = values.get(sample.name, 0.0) + sample.value
            if sample.name == "cargoscan_batch_size_bucket" and sample.labels["le"] == "4.0":
                values["bucket_le_4"] = sample.value
            if sample.name == "cargoscan_worker_info":
                values["info"] = sample.value
    return values


def test_archive_keeps_counts_and_removes_files(tmp_path):
    folder = tmp_path / "metrics"
    for count in (1, 2, 3):
        _run_child(folder, count)
    before = _totals(folder)

    archived = archive_dead_processes(folder)

    assert archived == 3
    assert sorted(path.name for path in folder.iterdir()) == ["counter_archive.db", "histogram_archive.db"]
    after = _totals(folder)
    assert after["cargoscan_scans_total"] == before["cargoscan_scans_total"] == 6
    assert after["cargoscan_batch_size_count"] == 3
    assert after["cargoscan_batch_size_sum"] == 6
    assert after["bucket_le_4"] == 3
    assert "info" not in after


def test_archive_twice_accumulates(tmp_path):
    folder = tmp_path / "metrics"
    _run_child(folder, 5)
    archive_dead_processes(folder)
    _run_child(folder, 7)
    _run_child(folder, 11)

    archive_dead_processes(folder)

    assert _totals(folder)["cargoscan_scans_total"] == 23
    assert _totals(folder)["cargoscan_batch_size_count"] == 3
    assert len(list(folder.iterdir())) == 2


def test_archive_skips_live_processes(tmp_path):
    folder = tmp_path / "metrics"
    _run_child(folder, 4)
    counter = folder / next(path.name for path in folder.iterdir() if path.name.startswith("counter_"))
    live_file = folder / f"counter_{os.getpid()}.db"
    counter.rename(live_file)

    assert archive_dead_processes(folder) == 1
    assert live_file.exists()


def test_collector_counts_each_process_once(tmp_path):
    folder = tmp_path / "metrics"
    _run_child(folder, 2)
    _run_child(folder, 3)
    registry = CollectorRegistry()
    registry.register(ArchivingMultiProcessCollector(folder))

    first = generate_latest(registry).decode()
    second = generate_latest(registry).decode()

    assert 'cargoscan_scans_total{outcome="scored"} 5.0' in first
    assert 'cargoscan_scans_total{outcome="scored"} 5.0' in second
    assert sorted(path.name for path in folder.iterdir()) == ["counter_archive.db", "histogram_archive.db"]


def test_clean_directory_keeps_own_files(tmp_path):
    folder = tmp_path / "metrics"
    _run_child(folder, 1)
    own = folder / f"counter_{os.getpid()}.db"
    own.write_bytes(b"")
    (folder / "counter_archive.db").write_bytes(b"")

    deleted = clean_directory(folder, keep_pid=os.getpid())

    assert deleted == 4
    assert [path.name for path in folder.iterdir()] == [own.name]
