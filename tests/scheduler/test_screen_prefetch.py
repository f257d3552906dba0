"""In-process screening with prefetching gives the same results as the sequential path."""

from __future__ import annotations

from sqlalchemy import select

from db import repository
from db.schema import Result, Scan
from scheduler.screen import screen_in_batches
from worker.pipeline import ScanJob
from worker.screener import build_screener
from worker.settings import Settings


def _jobs(database, paths) -> list[ScanJob]:
    with database.sessions.begin() as session:
        recorded = repository.register_scans(session, [str(path) for path in paths])
    return [ScanJob(scan_id=recorded[str(path)][0], uri=str(path)) for path in paths]


def _stored(database) -> dict[int, tuple]:
    with database.sessions() as session:
        results = session.execute(select(Result)).scalars().all()
        scans = {scan.id: scan for scan in session.execute(select(Scan)).scalars()}
    stored = {
        result.scan_id: (result.positive_distance, result.positive_exemplar_id, result.negative_distance, result.negative_exemplar_id, result.flagged)
        for result in results
    }
    for scan_id, scan in scans.items():
        stored.setdefault(scan_id, ())
        stored[scan_id] += (scan.status, scan.failure_reason, scan.width, scan.height)
    return stored


def _screen(database, screener, jobs, prefetch: bool):
    outcomes = []
    for batch, report in screen_in_batches(screener, database.sessions, jobs, batch_size=3, prefetch=prefetch):
        outcomes.append(([job.scan_id for job in batch], sorted(report.scored), sorted(report.failed), report.size))
    return outcomes, _stored(database)


def test_prefetch_matches_sequential(enrolled_database, scan_folder):
    paths = sorted(scan_folder.glob("*.png"))
    paths[4].write_bytes(paths[4].read_bytes()[:100])
    jobs = _jobs(enrolled_database, paths)
    settings = Settings(database_url="unused://", scan_root=scan_folder, db_retry_initial_delay_s=0.01)
    screener = build_screener(enrolled_database.sessions, settings)

    try:
        sequential, sequential_rows = _screen(enrolled_database, screener, jobs, prefetch=False)
        prefetched, prefetched_rows = _screen(enrolled_database, screener, jobs, prefetch=True)
    finally:
        screener.close()

    assert len(prefetched) == 3
    assert prefetched == sequential
    assert prefetched_rows == sequential_rows
    assert sum(len(failed) for _, _, failed, _ in prefetched) == 1


def test_prefetch_handles_single_and_empty(enrolled_database, scan_folder):
    jobs = _jobs(enrolled_database, sorted(scan_folder.glob("*.png"))[:1])
    settings = Settings(database_url="unused://", scan_root=scan_folder)
    screener = build_screener(enrolled_database.sessions, settings)

    try:
        single = list(screen_in_batches(screener, enrolled_database.sessions, jobs, batch_size=4))
        empty = list(screen_in_batches(screener, enrolled_database.sessions, [], batch_size=4))
    finally:
        screener.close()

    assert [len(report.scored) for _, report in single] == [1]
    assert empty == []
