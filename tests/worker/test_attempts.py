"""Delivery counting in-process: a scan that crashes its worker must not use up its neighbours' budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from db import repository
from db.schema import SCAN_DONE, SCAN_FAILED, Scan
from worker import attempts
from worker.pipeline import ScanJob
from worker.runtime import Runtime
from worker.screener import build_screener
from worker.settings import Settings


class WorkerCrashed(BaseException):
    """Stands in for the worker process dying while it screens the poison scan."""


@pytest.fixture
def runtime(enrolled_database, scan_folder):
    settings = Settings(database_url="unused://", scan_root=scan_folder, db_retry_initial_delay_s=0.01)
    screener = build_screener(enrolled_database.sessions, settings)
    yield Runtime(database=enrolled_database, screener=screener, pid=os.getpid())
    screener.close()


def _jobs(database, paths: list[Path]) -> list[ScanJob]:
    with database.sessions.begin() as session:
        recorded = repository.register_scans(session, [str(path) for path in paths])
    return [ScanJob(scan_id=recorded[str(path)][0], uri=str(path)) for path in paths]


def _crash_on(monkeypatch, poison: ScanJob) -> None:
    screen_batch = attempts.screen_batch

    def crashing(screener, sessions, jobs):
        if poison in jobs:
            raise WorkerCrashed
        return screen_batch(screener, sessions, jobs)

    monkeypatch.setattr(attempts, "screen_batch", crashing)


def _scan(database, scan_id: int) -> Scan:
    with database.sessions() as session:
        return session.get(Scan, scan_id)


def test_scans_behind_crash_keep_budget(runtime, enrolled_database, scan_folder, monkeypatch):
    jobs = _jobs(enrolled_database, sorted(scan_folder.glob("*.png"))[:5])
    poison = jobs[0]
    _crash_on(monkeypatch, poison)

    # The first delivery crashes the whole batch. The second crashes on the poison scan,
    # which is screened alone before the others get their turn.
    for _ in range(2):
        with pytest.raises(WorkerCrashed):
            attempts.screen_jobs(runtime, jobs, max_attempts=2)
    assert [_scan(enrolled_database, job.scan_id).attempts for job in jobs] == [2, 1, 1, 1, 1]

    reports = attempts.screen_jobs(runtime, jobs, max_attempts=2)

    poisoned = _scan(enrolled_database, poison.scan_id)
    assert poisoned.status == SCAN_FAILED
    assert "did not finish in 2 deliveries" in poisoned.failure_reason
    assert all(_scan(enrolled_database, job.scan_id).status == SCAN_DONE for job in jobs[1:])
    assert sum(len(report.scored) for report in reports) == 4


def test_raced_scan_screened_alone(runtime, enrolled_database, scan_folder, monkeypatch):
    jobs = _jobs(enrolled_database, sorted(scan_folder.glob("*.png"))[:3])
    raced = jobs[1]
    unfinished = repository.unfinished_attempts

    def counted_elsewhere(session, scan_ids):
        # Another worker counts its own delivery of this scan right after this one looked.
        seen = unfinished(session, scan_ids)
        repository.begin_attempts(session, [raced.scan_id])
        return seen

    monkeypatch.setattr(repository, "unfinished_attempts", counted_elsewhere)
    batches = []
    screen_batch = attempts.screen_batch

    def recording(screener, sessions, batch):
        batches.append(batch)
        return screen_batch(screener, sessions, batch)

    monkeypatch.setattr(attempts, "screen_batch", recording)

    attempts.screen_jobs(runtime, jobs, max_attempts=3)

    assert batches == [[jobs[0], jobs[2]], [raced]]
    assert all(_scan(enrolled_database, job.scan_id).status == SCAN_DONE for job in jobs)


def test_raced_scan_past_budget_fails(runtime, enrolled_database, scan_folder, monkeypatch):
    jobs = _jobs(enrolled_database, sorted(scan_folder.glob("*.png"))[:2])
    unfinished = repository.unfinished_attempts

    def counted_elsewhere(session, scan_ids):
        seen = unfinished(session, scan_ids)
        repository.begin_attempts(session, [jobs[0].scan_id])
        return seen

    monkeypatch.setattr(repository, "unfinished_attempts", counted_elsewhere)

    attempts.screen_jobs(runtime, jobs, max_attempts=1)

    assert _scan(enrolled_database, jobs[0].scan_id).status == SCAN_FAILED
    assert _scan(enrolled_database, jobs[1].scan_id).status == SCAN_DONE
