"""The batch pipeline: decode, embed, compare with exemplars, decide, and write one transaction.

The in-process ``cargoscan screen`` and the Celery worker both call :func:`screen_batch`;
Celery only carries the jobs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch
from sqlalchemy.orm import Session, sessionmaker

from db import repository
from models.imaging import ScanReadError
from models.inference import Decoded, decode_one, embed_images
from models.exemplars import score
from worker.retry import run_with_db_retry
from worker.screener import Screener
from worker.scanpaths import resolve_scan_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanJob:
    """One job message: ``{"scan_id": int, "uri": str}``."""

    scan_id: int
    uri: str


@dataclass
class BatchReport:
    """What happened to one batch, for the caller's summary and for metrics."""

    size: int
    scored: list[tuple[int, bool, float]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    unknown_scan_ids: list[int] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    decode_s: float = 0.0
    inference_s: float = 0.0
    write_s: float = 0.0
    total_s: float = 0.0

    @property
    def flagged(self) -> int:
        return sum(1 for _, is_flagged, _ in self.scored if is_flagged)


def screen_batch(screener: Screener, session_factory: sessionmaker[Session], jobs: Sequence[ScanJob]) -> BatchReport:
    """Screen a batch of jobs and commit all their outcomes in one transaction.

    A scan that cannot be read is marked failed with a reason and the rest are scored. A
    scan id seen twice in one batch is screened once. Database errors are retried with
    backoff; if the database stays unreachable the error propagates and nothing is written.
    """
    started = time.perf_counter()
    jobs = list({job.scan_id: job for job in jobs}.values())
    report = BatchReport(size=len(jobs))

    decoded = _decode(screener, jobs)
    report.decode_s = time.perf_counter() - started

    good = [index for index, item in enumerate(decoded) if item.image is not None]
    scored_rows: list[repository.ScoredScan] = []
    if good:
        inference_started = time.perf_counter()
        images = torch.stack([decoded[index].image for index in good])
        embeddings = embed_images(screener.embedder, images, screener.preprocess, screener.device)
        verdicts = score(embeddings, screener.exemplars, screener.threshold)
        report.inference_s = time.perf_counter() - inference_started
        scored_rows = _scored_rows(jobs, decoded, good, verdicts)

    failed_rows = [
        repository.FailedScan(scan_id=jobs[index].scan_id, reason=item.error or "unknown error")
        for index, item in enumerate(decoded)
        if item.image is None
    ]

    write_started = time.perf_counter()
    queued_at = run_with_db_retry(
        lambda: _write(session_factory, screener, scored_rows, failed_rows, report),
        attempts=screener.db_retry_attempts,
        initial_delay_s=screener.db_retry_initial_delay_s,
    )
    report.write_s = time.perf_counter() - write_started

    now = datetime.now(timezone.utc)
    report.latencies_s = [max(0.0, (now - _aware(queued)).total_seconds()) for queued in queued_at]
    report.total_s = time.perf_counter() - started
    return report


def _decode(screener: Screener, jobs: Sequence[ScanJob]) -> list[Decoded]:
    def decode(job: ScanJob) -> Decoded:
        try:
            path = resolve_scan_path(job.uri, screener.scan_root)
        except ScanReadError as error:
            return Decoded(image=None, error=error.reason)
        return decode_one(path, screener.preprocess, screener.max_image_pixels)

    return list(screener.executor.map(decode, jobs))


def _scored_rows(jobs, decoded, good, verdicts) -> list[repository.ScoredScan]:
    rows = []
    for position, index in enumerate(good):
        negative_distance = None if verdicts.negative_distance is None else float(verdicts.negative_distance[position])
        negative_id = None if verdicts.negative_id is None else int(verdicts.negative_id[position])
        rows.append(
            repository.ScoredScan(
                scan_id=jobs[index].scan_id,
                positive_distance=float(verdicts.positive_distance[position]),
                positive_exemplar_id=int(verdicts.positive_id[position]),
                negative_distance=negative_distance,
                negative_exemplar_id=negative_id,
                flagged=bool(verdicts.flagged[position]),
                width=decoded[index].width,
                height=decoded[index].height,
            )
        )
    return rows


def _write(session_factory, screener, scored_rows, failed_rows, report) -> list[datetime]:
    with session_factory.begin() as session:
        ids = [row.scan_id for row in scored_rows] + [row.scan_id for row in failed_rows]
        known = repository.existing_scan_ids(session, ids)
        unknown = sorted(set(ids) - known)
        if unknown:
            # A job for a scan that is not recorded has nowhere to store its verdict.
            logger.warning("dropping jobs for unknown scan ids", extra={"scan_ids": unknown[:20], "count": len(unknown)})

        scored_rows = [row for row in scored_rows if row.scan_id in known]
        failed_rows = [row for row in failed_rows if row.scan_id in known]
        repository.write_batch(session, screener.model_version_id, screener.exemplar_set_id, screener.threshold, scored_rows, failed_rows)
        queued = repository.queued_times(session, [row.scan_id for row in scored_rows] + [row.scan_id for row in failed_rows])

    report.unknown_scan_ids = unknown
    report.scored = [(row.scan_id, row.flagged, row.positive_distance) for row in scored_rows]
    report.failed = [(row.scan_id, row.reason) for row in failed_rows]
    return list(queued.values())


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; CargoScan stores UTC everywhere.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
