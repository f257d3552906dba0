"""The batch pipeline: decode, embed, compare with exemplars, decide, and write one transaction.

The in-process ``cargoscan screen`` and the Celery worker both call :func:`screen_batch`;
Celery only carries the jobs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from db import repository
from db.schema import SCAN_FAILED
from db.embeddings import encode_embedding
from models.imaging import ScanReadError
from models.inference import Decoded, decode_one
from models.scan_scoring import score_decoded
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
    """The outcome of one batch, for the caller's summary and for metrics."""

    size: int
    scored: list[tuple[int, bool, float]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    unknown_scan_ids: list[int] = field(default_factory=list)
    # Scans whose outcome from this model and exemplar set was already recorded: redelivered
    # or re-sent jobs, which metrics must not count a second time.
    repeated: set[int] = field(default_factory=set)
    latencies_s: list[float] = field(default_factory=list)
    # Tile mode: tiles embedded for this batch, redelivered scans included.
    tiles: int = 0
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
    return screen_decoded(screener, session_factory, start_decode(screener, jobs))


@dataclass
class PendingBatch:
    """A batch whose scans are being decoded on the screener's thread pool."""

    jobs: list[ScanJob]
    futures: list[Future[tuple[Decoded, float]]]
    started: float

    def wait(self) -> tuple[list[Decoded], float]:
        """Wait for every decode; returns the results in job order and the seconds from submission to the last."""
        results = [future.result() for future in self.futures]
        finished = max((done for _, done in results), default=self.started)
        return [decoded for decoded, _ in results], finished - self.started


def start_decode(screener: Screener, jobs: Sequence[ScanJob]) -> PendingBatch:
    """Deduplicate a batch's jobs by scan id and submit their decoding; returns without waiting.

    Starting the next batch's decoding before screening the current one overlaps decoding
    with the forward pass, as ``cargoscan screen`` does.
    """
    started = time.perf_counter()
    jobs = list({job.scan_id: job for job in jobs}.values())
    futures = [screener.executor.submit(_decode_job, screener, job) for job in jobs]
    return PendingBatch(jobs=jobs, futures=futures, started=started)


def screen_decoded(screener: Screener, session_factory: sessionmaker[Session], pending: PendingBatch) -> BatchReport:
    """Embed, score and commit a batch from :func:`start_decode`, as :func:`screen_batch` does."""
    started = pending.started
    jobs = pending.jobs
    report = BatchReport(size=len(jobs))

    decoded, report.decode_s = pending.wait()

    good = [index for index, item in enumerate(decoded) if item.ok]
    scored_rows: list[repository.ScoredScan] = []
    if good:
        inference_started = time.perf_counter()
        scan_verdicts = score_decoded(
            screener.embedder, [decoded[index] for index in good], screener.exemplars, screener.threshold,
            screener.preprocess, screener.device, screener.inference_options, screener.tile_batch_size, screener.score_rule,
        )
        report.inference_s = time.perf_counter() - inference_started
        if scan_verdicts.tile_counts is not None:
            report.tiles = int(scan_verdicts.tile_counts.sum())
        scored_rows = _scored_rows(jobs, decoded, good, scan_verdicts, screener.embedding_dtype)

    failed_rows = [
        repository.FailedScan(scan_id=jobs[index].scan_id, reason=item.error or "unknown error")
        for index, item in enumerate(decoded)
        if not item.ok
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


def _decode_job(screener: Screener, job: ScanJob) -> tuple[Decoded, float]:
    try:
        path = resolve_scan_path(job.uri, screener.scan_root)
    except ScanReadError as error:
        return Decoded(image=None, error=error.reason), time.perf_counter()
    return decode_one(path, screener.preprocess, screener.max_image_pixels), time.perf_counter()


def _scored_rows(jobs, decoded, good, scan_verdicts, embedding_dtype) -> list[repository.ScoredScan]:
    verdicts = scan_verdicts.verdicts
    rows = []
    for position, index in enumerate(good):
        # Tile mode stores no scan embedding: a scan has hundreds of tile embeddings, and
        # exemplar-only rescoring of tile models re-embeds instead.
        embedding = None
        if scan_verdicts.embeddings is not None:
            embedding = encode_embedding(scan_verdicts.embeddings[position], embedding_dtype)
        box = None if scan_verdicts.boxes is None else tuple(int(value) for value in scan_verdicts.boxes[position])
        tile_count = None if scan_verdicts.tile_counts is None else int(scan_verdicts.tile_counts[position])
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
                embedding=embedding,
                box=box,
                tile_count=tile_count,
            )
        )
    return rows


def _write(session_factory, screener, scored_rows, failed_rows, report) -> list[datetime]:
    with session_factory.begin() as session:
        ids = [row.scan_id for row in scored_rows] + [row.scan_id for row in failed_rows]
        # Locking the scans first makes the redelivery check below and the upsert one atomic
        # step, so two overlapping deliveries of a scan cannot both count as its first outcome.
        repository.lock_scans(session, ids)
        known = repository.existing_scan_ids(session, ids)
        unknown = sorted(set(ids) - known)
        if unknown:
            # A job for a scan that is not recorded has nowhere to store its verdict.
            logger.warning("dropping jobs for unknown scan ids", extra={"scan_ids": unknown[:20], "count": len(unknown)})

        scored_rows = [row for row in scored_rows if row.scan_id in known]
        failed_rows = [row for row in failed_rows if row.scan_id in known]
        repeated = _already_recorded(session, screener, scored_rows, failed_rows)
        repository.write_batch(
            session, screener.model_version_id, screener.exemplar_set_id, screener.threshold, scored_rows, failed_rows,
            embedding_dtype=screener.embedding_dtype,
        )
        queued = repository.queued_times(session, [row.scan_id for row in scored_rows] + [row.scan_id for row in failed_rows])

    report.unknown_scan_ids = unknown
    report.repeated = repeated
    report.scored = [(row.scan_id, row.flagged, row.positive_distance) for row in scored_rows]
    report.failed = [(row.scan_id, row.reason) for row in failed_rows]
    return list(queued.values())


def _already_recorded(session, screener, scored_rows, failed_rows) -> set[int]:
    repeated = repository.scans_with_result(
        session, [row.scan_id for row in scored_rows], screener.model_version_id, screener.exemplar_set_id
    )
    if failed_rows:
        statuses = repository.scan_statuses(session, [row.scan_id for row in failed_rows])
        repeated |= {scan_id for scan_id, status in statuses.items() if status == SCAN_FAILED}
    return repeated


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; CargoScan stores UTC everywhere.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
