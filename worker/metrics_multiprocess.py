"""Keep prometheus_client's multiprocess folder correct and bounded while pool children come and go.

Every process writes its own ``<type>_<pid>.db`` files. A prefork pool replaces children
(``--max-tasks-per-child``, crashes), so without clean-up the folder grows by a few files per
child and every scrape reads all of them. The worker's parent process therefore merges the
counter and histogram files of exited processes into one archive file per type, which
keeps their counts, and deletes the gauge files of exited processes, whose values no longer
describe anything. Archiving and collecting share one lock, so a scrape cannot count a
process twice, once in the archive and once in its own files.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from worker.metrics_env import PID_FILE_PATTERN

logger = logging.getLogger(__name__)

ARCHIVED_TYPES = ("counter", "histogram", "summary")
ARCHIVE_SUFFIX = "archive"

_lock = threading.Lock()


def clean_directory(folder: Path, keep_pid: int | None = None) -> int:
    """Delete every metric file in ``folder`` except those of ``keep_pid``; returns the count deleted."""
    deleted = 0
    for path in folder.glob("*.db"):
        match = PID_FILE_PATTERN.match(path.name)
        if keep_pid is not None and match and int(match["pid"]) == keep_pid:
            continue
        path.unlink(missing_ok=True)
        deleted += 1
    return deleted


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The id belongs to a process of another user, so it is not one of ours any more,
        # but its files stay until that process exits too.
        return True
    return True


def dead_pids(folder: Path) -> set[int]:
    """Return the ids of exited processes that still have metric files in ``folder``."""
    pids = set()
    for path in folder.glob("*.db"):
        match = PID_FILE_PATTERN.match(path.name)
        if match:
            pids.add(int(match["pid"]))
    return {pid for pid in pids if pid != os.getpid() and not process_alive(pid)}


def archive_dead_processes(folder: Path) -> int:
    """Fold the files of exited processes into the archive files; returns how many processes were folded."""
    with _lock:
        return _archive_dead_processes(folder)


def _archive_dead_processes(folder: Path) -> int:
    pids = dead_pids(folder)
    if not pids:
        return 0

    for metric_type in ARCHIVED_TYPES:
        sources = [folder / f"{metric_type}_{pid}.db" for pid in sorted(pids)]
        sources = [path for path in sources if path.exists()]
        if sources:
            _merge_into_archive(folder, metric_type, sources)

    for pid in pids:
        mark_process_dead(pid, str(folder))
        # Gauges in the non-live modes have no meaning once their process is gone either.
        for path in folder.glob(f"gauge_*_{pid}.db"):
            path.unlink(missing_ok=True)

    logger.debug("archived the metric files of %d exited processes: %s", len(pids), sorted(pids))
    return len(pids)


def _merge_into_archive(folder: Path, metric_type: str, sources: list[Path]) -> None:
    archive = folder / f"{metric_type}_{ARCHIVE_SUFFIX}.db"
    inputs = ([archive] if archive.exists() else []) + sources

    # accumulate=False keeps histogram buckets per bucket, the form the files store.
    merged = MultiProcessCollector.merge([str(path) for path in inputs], accumulate=False)

    # The new archive is written under a name the collector does not read (it globs *.db),
    # then renamed over the old one, so a crash leaves either the old or the new archive.
    staging = folder / f"{metric_type}_{ARCHIVE_SUFFIX}.staging"
    staging.unlink(missing_ok=True)
    writer = MmapedDict(str(staging))
    try:
        for metric in merged:
            for sample in metric.samples:
                key = mmap_key(metric.name, sample.name, list(sample.labels), list(sample.labels.values()), metric.documentation)
                writer.write_value(key, sample.value, 0.0)
    finally:
        writer.close()
    os.replace(staging, archive)

    for path in sources:
        path.unlink(missing_ok=True)


class ArchivingMultiProcessCollector:
    """A :class:`MultiProcessCollector` that first archives exited processes, under the archive lock."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._collector = MultiProcessCollector(None, path=str(folder))

    def collect(self):
        with _lock:
            _archive_dead_processes(self._folder)
            return list(self._collector.collect())


def start_archiver(folder: Path, interval_s: float) -> threading.Thread:
    """Archive exited processes every ``interval_s`` seconds from a daemon thread, also when nobody scrapes."""

    def run() -> None:
        while True:
            time.sleep(interval_s)
            try:
                archive_dead_processes(folder)
            except OSError:
                logger.exception("archiving the metric files in %s failed; retrying in %.0f s", folder, interval_s)

    thread = threading.Thread(target=run, name="metrics-archiver", daemon=True)
    thread.start()
    return thread
