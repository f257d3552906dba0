"""Record scans and send one JSON job per scan to the Celery queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from db import repository
from db.database import Database
from db.schema import utcnow
from models.scanfiles import list_scan_files


@dataclass(frozen=True)
class EnqueueSummary:
    found: int
    sent: int
    skipped: int


def enqueue_folder(database: Database, folder: Path, queue: str, include_known: bool = False) -> EnqueueSummary:
    """Record the scans under ``folder`` and send a job for each new one (or each one with ``include_known``)."""
    from worker.tasks import screen

    paths = [str(path.resolve()) for path in list_scan_files(folder)]
    with database.sessions.begin() as session:
        recorded = repository.register_scans(session, paths)
        selected = [recorded[path][0] for path in paths if include_known or recorded[path][1]]
        if include_known:
            repository.requeue_scans(session, selected)

    uri_by_id = {recorded[path][0]: path for path in paths}
    for scan_id in selected:
        send_job(screen, scan_id, uri_by_id[scan_id], queue)
    return EnqueueSummary(found=len(paths), sent=len(selected), skipped=len(paths) - len(selected))


def send_job(task, scan_id: int, uri: str, queue: str) -> None:
    """Publish one ``{"scan_id", "uri"}`` job; the image itself never travels in the message."""
    task.apply_async(kwargs={"scan_id": scan_id, "uri": uri}, queue=queue)


def resend_stale(database: Database, queue: str, older_than_s: float) -> int:
    """Send again the jobs of scans queued longer than ``older_than_s``; returns how many.

    A job can vanish with the broker (a Redis restart without persistence, a flushed
    database). The scans table still lists the scan as queued, so sending its job again
    loses nothing, and the result upsert makes a duplicate job harmless.
    """
    from worker.tasks import screen

    cutoff = utcnow() - timedelta(seconds=older_than_s)
    with database.sessions() as session:
        stale = repository.stale_queued_scans(session, cutoff)

    for scan_id, uri in stale:
        send_job(screen, scan_id, uri, queue)
    if stale:
        with database.sessions.begin() as session:
            repository.touch_queued(session, [scan_id for scan_id, _ in stale])
    return len(stale)
