"""Bound the deliveries of scans that crash their worker, and isolate them from the rest.

A job that kills its worker process (a scan that exhausts memory, say) is delivered again
after the broker's visibility timeout, together with the rest of its batch. Each delivery
is counted in the database before screening starts. A scan seen again before its outcome
was written is screened alone, so it cannot take innocent scans down with it, and once it
passes ``max_attempts`` it is marked failed instead of crashing workers forever.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from db import repository
from worker.pipeline import BatchReport, ScanJob, screen_batch
from worker.retry import run_with_db_retry

logger = logging.getLogger(__name__)


@dataclass
class Triage:
    fresh: list[ScanJob] = field(default_factory=list)
    retried: list[ScanJob] = field(default_factory=list)
    exhausted: list[tuple[ScanJob, int]] = field(default_factory=list)


def triage(runtime, jobs: Sequence[ScanJob], max_attempts: int) -> Triage:
    """Count this delivery of every job and sort the jobs by how often they were tried."""
    screener = runtime.screener

    def count() -> dict[int, int]:
        with runtime.database.sessions.begin() as session:
            return repository.begin_attempts(session, [job.scan_id for job in jobs])

    attempts = run_with_db_retry(count, screener.db_retry_attempts, screener.db_retry_initial_delay_s)
    sorted_jobs = Triage()
    for job in jobs:
        tries = attempts.get(job.scan_id, 1)
        if tries > max_attempts:
            sorted_jobs.exhausted.append((job, tries - 1))
        elif tries > 1:
            sorted_jobs.retried.append(job)
        else:
            sorted_jobs.fresh.append(job)
    return sorted_jobs


def screen_jobs(runtime, jobs: Sequence[ScanJob], max_attempts: int) -> list[BatchReport]:
    """Screen fresh jobs as one batch and retried ones one at a time; fail the exhausted ones."""
    sorted_jobs = triage(runtime, jobs, max_attempts)
    screener = runtime.screener
    sessions = runtime.database.sessions
    reports = []

    if sorted_jobs.exhausted:
        reports.append(_fail_exhausted(runtime, sorted_jobs.exhausted, max_attempts))
    if sorted_jobs.fresh:
        reports.append(screen_batch(screener, sessions, sorted_jobs.fresh))
    for job in sorted_jobs.retried:
        logger.warning("screening scan %d alone: an earlier delivery did not finish", job.scan_id)
        reports.append(screen_batch(screener, sessions, [job]))
    return reports


def _fail_exhausted(runtime, exhausted: list[tuple[ScanJob, int]], max_attempts: int) -> BatchReport:
    screener = runtime.screener
    failed = [
        repository.FailedScan(
            scan_id=job.scan_id,
            reason=f"screening did not finish in {unfinished} deliveries (the worker probably crashed on this scan); "
            f"not retried after {max_attempts}",
        )
        for job, unfinished in exhausted
    ]
    for job, unfinished in exhausted:
        logger.error("scan %d failed after %d unfinished deliveries", job.scan_id, unfinished)

    def write() -> None:
        with runtime.database.sessions.begin() as session:
            repository.write_batch(session, screener.model_version_id, screener.exemplar_set_id, screener.threshold, [], failed)

    run_with_db_retry(write, screener.db_retry_attempts, screener.db_retry_initial_delay_s)
    return BatchReport(size=len(failed), failed=[(item.scan_id, item.reason) for item in failed])
