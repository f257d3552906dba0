"""The in-process pipeline on real scans: read, decode, preprocess, embed, compare, write.

This is what ``cargoscan screen`` runs (scheduler.screen.screen_in_batches), against a
SQLite file, with and without prefetching of the next batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.common import DATA_ROOT, database_url, enroll_exemplars, make_checkpoint, temporary_database
from bench.forward_bench import forward_images_per_second
from db import repository
from scheduler.screen import screen_in_batches
from worker.pipeline import ScanJob
from worker.screener import build_screener
from worker.settings import Settings


@dataclass
class PipelineRun:
    name: str
    prefetch: bool
    scans: int
    seconds: float
    inference_s: float
    write_s: float
    failed: int

    @property
    def rate(self) -> float:
        return self.scans / self.seconds


def exemplar_files(count: int = 8) -> tuple[list[Path], list[Path]]:
    """Pick ``count`` SIXray positives and negatives as exemplars."""
    from models.scanfiles import list_scan_files

    positives = list_scan_files(DATA_ROOT / "sixray" / "positive")[:count]
    negatives = list_scan_files(DATA_ROOT / "sixray" / "negative")[:count]
    return positives, negatives


def _jobs(database, paths: list[Path]) -> list[ScanJob]:
    uris = [str(path) for path in paths]
    with database.sessions.begin() as session:
        recorded = repository.register_scans(session, uris)
        repository.requeue_scans(session, [recorded[uri][0] for uri in uris])
    return [ScanJob(scan_id=recorded[uri][0], uri=uri) for uri in uris]


def _screen(database, screener, name: str, paths: list[Path], batch_size: int, prefetch: bool) -> PipelineRun:
    jobs = _jobs(database, paths)
    inference_s = write_s = 0.0
    failed = 0

    started = time.perf_counter()
    for _, report in screen_in_batches(screener, database.sessions, jobs, batch_size, prefetch=prefetch):
        inference_s += report.inference_s
        write_s += report.write_s
        failed += len(report.failed)
    seconds = time.perf_counter() - started
    return PipelineRun(name, prefetch, len(jobs), seconds, inference_s, write_s, failed)


def run(section, workdir: Path, scan_sets: dict[str, list[Path]], batch_size: int, min_seconds: float) -> dict[str, float]:
    """Rows per data set and prefetch mode; returns the ratios to the adjacent bare forward pass."""
    checkpoint = make_checkpoint(workdir, 224)
    ratios: dict[str, float] = {}

    with temporary_database(workdir, "sqlite") as database:
        enroll_exemplars(database, checkpoint, *exemplar_files())
        settings = Settings(database_url=database_url(database), max_batch_size=batch_size, scan_root=DATA_ROOT, metrics_port=0)
        screener = build_screener(database.sessions, settings)
        try:
            # One batch first, so one-time costs (oneDNN kernels, allocator) are not timed.
            first = next(iter(scan_sets.values()))[:batch_size]
            _screen(database, screener, "warm-up", first, batch_size, prefetch=False)

            for name, paths in scan_sets.items():
                reference = forward_images_per_second(batch_size, min_seconds)
                for prefetch in (True, False):
                    result = _screen(database, screener, name, paths, batch_size, prefetch)
                    ratio = result.rate / reference
                    ratios[f"{name}, prefetch {'on' if prefetch else 'off'}"] = ratio
                    section.add(
                        name, "on" if prefetch else "off", result.scans, result.rate, reference, f"{ratio:.2f}",
                        result.scans / result.inference_s, result.write_s / result.seconds, result.failed,
                    )
        finally:
            screener.close()

    section.note(
        f"batch {batch_size}, 224x224, {torch.get_num_threads()} torch threads, {settings.decode_threads} decode threads, "
        "SQLite (WAL) file; 'bare fwd' is the bare forward pass at the same batch size measured just before the data set"
    )
    section.note("'fwd+score in pipeline' is scans / time spent in the forward pass and exemplar comparison inside the pipeline")
    return ratios
