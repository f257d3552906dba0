"""Per-process worker state, built lazily on the first batch so it is created after the fork."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from db import repository
from db.database import Database, open_database
from worker.pipeline import ScanJob
from worker.screener import Screener, build_screener
from worker.settings import get_settings

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    database: Database
    screener: Screener
    pid: int


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """Return this process's runtime, building it on first use or after a fork."""
    global _runtime
    if _runtime is None or _runtime.pid != os.getpid():
        settings = get_settings()
        database = open_database(settings.database_url)
        screener = build_screener(database.sessions, settings)
        _runtime = Runtime(database=database, screener=screener, pid=os.getpid())
    return _runtime


def mark_jobs_failed(runtime: Runtime, jobs: Sequence[ScanJob], reason: str) -> None:
    """Record every job of a batch as failed with ``reason``."""
    with runtime.database.sessions.begin() as session:
        known = repository.existing_scan_ids(session, [job.scan_id for job in jobs])
        failed = [repository.FailedScan(scan_id=job.scan_id, reason=reason) for job in jobs if job.scan_id in known]
        screener = runtime.screener
        repository.write_batch(session, screener.model_version_id, screener.exemplar_set_id, screener.threshold, [], failed)
