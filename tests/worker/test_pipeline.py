"""The batch pipeline against real SQLite and PostgreSQL databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from db import repository
from db.schema import SCAN_DONE, SCAN_FAILED, Result, Scan
from worker.pipeline import ScanJob, screen_batch
from worker.screener import build_screener
from worker.settings import Settings


def _jobs(database, paths: list[Path]) -> list[ScanJob]:
    with database.sessions.begin() as session:
        recorded = repository.register_scans(session, [str(path) for path in paths])
    return [ScanJob(scan_id=recorded[str(path)][0], uri=str(path)) for path in paths]


def _screener(database, root: Path):
    return build_screener(database.sessions, Settings(database_url="unused://", scan_root=root, db_retry_initial_delay_s=0.01))


def _status(database, scan_id: int) -> tuple[str, str | None]:
    with database.sessions() as session:
        scan = session.get(Scan, scan_id)
        return scan.status, scan.failure_reason


def _result_count(database) -> int:
    with database.sessions() as session:
        return session.execute(select(func.count()).select_from(Result)).scalar_one()


def test_batch_scores_good_and_fails_bad(enrolled_database, scan_folder):
    paths = sorted(scan_folder.glob("*.png"))
    truncated, empty = paths[2], paths[5]
    truncated.write_bytes(truncated.read_bytes()[: len(truncated.read_bytes()) // 2])
    empty.write_bytes(b"")
    jobs = _jobs(enrolled_database, paths)
    screener = _screener(enrolled_database, scan_folder)

    report = screen_batch(screener, enrolled_database.sessions, jobs)

    assert len(report.scored) == 6
    assert sorted(scan_id for scan_id, _ in report.failed) == sorted([jobs[2].scan_id, jobs[5].scan_id])
    assert _status(enrolled_database, jobs[2].scan_id)[0] == SCAN_FAILED
    assert "truncated" in _status(enrolled_database, jobs[2].scan_id)[1]
    assert "empty" in _status(enrolled_database, jobs[5].scan_id)[1]
    assert _status(enrolled_database, jobs[0].scan_id) == (SCAN_DONE, None)
    assert _result_count(enrolled_database) == 6
    screener.close()


def test_rescreening_keeps_one_row(enrolled_database, scan_folder):
    jobs = _jobs(enrolled_database, sorted(scan_folder.glob("*.png")))
    screener = _screener(enrolled_database, scan_folder)

    screen_batch(screener, enrolled_database.sessions, jobs)
    screen_batch(screener, enrolled_database.sessions, jobs + jobs[:3])

    assert _result_count(enrolled_database) == len(jobs)
    with enrolled_database.sessions() as session:
        assert repository.count_results(session, jobs[0].scan_id) == 1
    screener.close()


def test_duplicate_job_in_batch_scored_once(enrolled_database, scan_folder):
    jobs = _jobs(enrolled_database, sorted(scan_folder.glob("*.png"))[:2])
    screener = _screener(enrolled_database, scan_folder)

    report = screen_batch(screener, enrolled_database.sessions, [jobs[0], jobs[0], jobs[1]])

    assert report.size == 2
    assert _result_count(enrolled_database) == 2
    screener.close()


def test_path_outside_scan_root_fails(enrolled_database, scan_folder, tmp_path):
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(next(scan_folder.glob("*.png")).read_bytes())
    link = scan_folder / "link.png"
    link.symlink_to(outside)
    jobs = _jobs(enrolled_database, [outside, link, scan_folder / ".." / "elsewhere.png"])
    screener = _screener(enrolled_database, scan_folder)

    report = screen_batch(screener, enrolled_database.sessions, jobs)

    assert len(report.failed) == 3
    assert all("outside the scan root" in reason for _, reason in report.failed)
    screener.close()


def test_unknown_scan_id_is_dropped(enrolled_database, scan_folder):
    jobs = _jobs(enrolled_database, sorted(scan_folder.glob("*.png"))[:1])
    screener = _screener(enrolled_database, scan_folder)

    report = screen_batch(screener, enrolled_database.sessions, jobs + [ScanJob(scan_id=999_999, uri=jobs[0].uri)])

    assert report.unknown_scan_ids == [999_999]
    assert _result_count(enrolled_database) == 1
    screener.close()


def test_result_records_nearest_exemplars(enrolled_database, scan_folder):
    jobs = _jobs(enrolled_database, sorted(scan_folder.glob("*.png"))[:2])
    screener = _screener(enrolled_database, scan_folder)

    screen_batch(screener, enrolled_database.sessions, jobs)

    with enrolled_database.sessions() as session:
        result = session.execute(select(Result).where(Result.scan_id == jobs[0].scan_id)).scalar_one()
    assert result.positive_exemplar_id in set(screener.exemplars.positives.ids.tolist())
    assert result.negative_exemplar_id in set(screener.exemplars.negatives.ids.tolist())
    assert result.positive_distance >= 0.0
    assert result.flagged is True  # the tiny checkpoint's threshold is huge
    assert result.model_version_id == screener.model_version_id
    screener.close()


def test_overlapping_deliveries_counted_once(enrolled_database, scan_folder, monkeypatch):
    import threading
    import time

    jobs = _jobs(enrolled_database, sorted(scan_folder.glob("*.png"))[:1])
    screener = _screener(enrolled_database, scan_folder)
    real_check = repository.scans_with_result

    def slow_check(*args, **kwargs):
        # Widens the window between the redelivery check and the upsert.
        found = real_check(*args, **kwargs)
        time.sleep(1.0)
        return found

    monkeypatch.setattr(repository, "scans_with_result", slow_check)
    reports = []
    threads = [threading.Thread(target=lambda: reports.append(screen_batch(screener, enrolled_database.sessions, jobs))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    first_outcomes = [report for report in reports if jobs[0].scan_id not in report.repeated]
    assert len(reports) == 2
    assert len(first_outcomes) == 1
    assert _result_count(enrolled_database) == 1
    screener.close()
