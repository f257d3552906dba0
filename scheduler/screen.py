"""In-process screening of a folder: the embedded default, with no Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from db import repository
from db.database import Database
from models.scanfiles import list_scan_files
from worker.metrics import record_batch
from worker.pipeline import BatchReport, ScanJob, screen_batch, screen_decoded, start_decode
from worker.screener import Screener, build_screener
from worker.settings import Settings


@dataclass
class ScreenSummary:
    scanned: int = 0
    scored: int = 0
    flagged: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.scanned / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        return [
            f"scanned {self.scanned}, scored {self.scored}, flagged {self.flagged}, failed {self.failed}",
            f"{self.images_per_second:.1f} images/s over {self.seconds:.1f} s",
        ]


def screen_folder(database: Database, settings: Settings, folder: Path, rescreen: bool = True) -> ScreenSummary:
    """Record every scan under ``folder`` and screen them in batches of ``settings.max_batch_size``.

    Scans already recorded are screened again unless ``rescreen`` is false; the upsert keeps
    one result per scan, model version and exemplar set either way.
    """
    paths = [str(path.resolve()) for path in list_scan_files(folder)]
    if not paths:
        raise ValueError(f"no scan files (.jpg, .jpeg, .png, .tif, .tiff) under {folder}")

    with database.sessions.begin() as session:
        recorded = repository.register_scans(session, paths)
        if rescreen:
            repository.requeue_scans(session, [scan_id for scan_id, _ in recorded.values()])
    jobs = [ScanJob(scan_id=recorded[path][0], uri=path) for path in paths if rescreen or recorded[path][1]]

    screener = build_screener(database.sessions, settings)
    uri_by_id = {job.scan_id: job.uri for job in jobs}
    summary = ScreenSummary()
    started = time.perf_counter()
    try:
        with tqdm(total=len(jobs), desc="screen", unit="scan", disable=None) as bar:
            for batch, report in screen_in_batches(screener, database.sessions, jobs, settings.max_batch_size):
                record_batch(report)
                summary.scanned += report.size
                summary.scored += len(report.scored)
                summary.flagged += report.flagged
                summary.failed += len(report.failed)
                summary.failures.extend((uri_by_id[scan_id], reason) for scan_id, reason in report.failed)
                bar.update(len(batch))
    finally:
        screener.close()

    summary.seconds = time.perf_counter() - started
    return summary


def screen_in_batches(
    screener: Screener, session_factory: sessionmaker[Session], jobs: Sequence[ScanJob], batch_size: int, prefetch: bool = True
) -> Iterator[tuple[list[ScanJob], BatchReport]]:
    """Screen ``jobs`` in batches of ``batch_size``, yielding each batch with its report.

    With ``prefetch``, the next batch is decoded on the screener's thread pool while the
    current one is embedded, scored and written. The results are the same either way.
    """
    batches = [list(jobs[start : start + batch_size]) for start in range(0, len(jobs), batch_size)]
    if not prefetch:
        for batch in batches:
            yield batch, screen_batch(screener, session_factory, batch)
        return

    pending = start_decode(screener, batches[0]) if batches else None
    for index, batch in enumerate(batches):
        current = pending
        pending = start_decode(screener, batches[index + 1]) if index + 1 < len(batches) else None
        yield batch, screen_decoded(screener, session_factory, current)
