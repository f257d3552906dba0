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
    """Sort the jobs by how many earlier deliveries of their scan did not finish.

    Nothing is counted here: a retried scan's delivery is counted only when its own turn
    to be screened alone comes, so scans queued behind a crashing one keep their budget.
    """
    unfinished = _with_db_retry(runtime, lambda session: repository.unfinished_attempts(session, [job.scan_id for job in jobs]))
    sorted_jobs = Triage()
    for job in jobs:
        earlier = unfinished.get(job.scan_id, 0)
        if earlier >= max_attempts:
            sorted_jobs.exhausted.append((job, earlier))
        elif earlier > 0:
            sorted_jobs.retried.append(job)
        else:
            sorted_jobs.fresh.append(job)
    return sorted_jobs


def screen_jobs(runtime, jobs: Sequence[ScanJob], max_attempts: int) -> list[BatchReport]:
    """Screen fresh jobs as one batch and retried ones one at a time; fail the exhausted ones."""
    sorted_jobs = triage(runtime, jobs, max_attempts)
    reports = []

    if sorted_jobs.exhausted:
        reports.append(_fail_exhausted(runtime, sorted_jobs.exhausted, max_attempts))

    counted = _count_delivery(runtime, sorted_jobs.fresh)
    batch = [job for job in sorted_jobs.fresh if counted.get(job.scan_id, 1) == 1]
    if batch:
        reports.append(screen_batch(runtime.screener, runtime.database.sessions, batch))

    # A fresh scan counted above 1 was also being delivered to another worker (a redelivery
    # racing this one), so it is treated like a retried scan that has been counted already.
    for job in sorted_jobs.fresh:
        if counted.get(job.scan_id, 1) > 1:
            reports.append(_screen_alone(runtime, job, counted[job.scan_id], max_attempts))
    for job in sorted_jobs.retried:
        tries = _count_delivery(runtime, [job]).get(job.scan_id, 1)
        reports.append(_screen_alone(runtime, job, tries, max_attempts))
    return reports


def _screen_alone(runtime, job: ScanJob, tries: int, max_attempts: int) -> BatchReport:
    if tries > max_attempts:
        return _fail_exhausted(runtime, [(job, tries - 1)], max_attempts)

    logger.warning("screening scan %d alone: an earlier delivery did not finish", job.scan_id)
    return screen_batch(runtime.screener, runtime.database.sessions, [job])


def _count_delivery(runtime, jobs: Sequence[ScanJob]) -> dict[int, int]:
    if not jobs:
        return {}
    return _with_db_retry(runtime, lambda session: repository.begin_attempts(session, [job.scan_id for job in jobs]))


def _with_db_retry(runtime, work):
    screener = runtime.screener

    def run_in_transaction():
        with runtime.database.sessions.begin() as session:
            return work(session)

    return run_with_db_retry(run_in_transaction, screener.db_retry_attempts, screener.db_retry_initial_delay_s)


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

    _with_db_retry(
        runtime,
        lambda session: repository.write_batch(session, screener.model_version_id, screener.exemplar_set_id, screener.threshold, [], failed),
    )
    return BatchReport(size=len(failed), failed=[(item.scan_id, item.reason) for item in failed])
