"""The Celery path: jobs through the local Redis to 1 or 2 solo-pool worker processes.

Throughput is scans over the time from the first job sent to the last outcome written.
Latency per scan is its database ``updated_at`` minus ``queued_at``: from enqueueing to the
write of its outcome (the write's start, a few milliseconds before the commit).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import DATA_ROOT, database_url, enroll_exemplars, make_checkpoint, percentile, temporary_database
from bench.forward_bench import forward_images_per_second
from bench.inprocess_bench import exemplar_files
from bench.workers import LoggedBatch, celery_workers, requeue, scan_times, send_jobs, wait_settled
from db import repository

_LOG_GRACE_S = 0.5


@dataclass
class CeleryRun:
    scans: int
    seconds: float
    latencies_s: list[float]
    batches: list[LoggedBatch] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.scans / self.seconds


def _latencies(database, scan_ids: list[int]) -> tuple[list[float], float]:
    """Return per-scan latencies and the span from the earliest enqueue to the last write."""
    times = scan_times(database, scan_ids)
    latencies = [(updated - queued).total_seconds() for queued, updated in times]
    span = (max(updated for _, updated in times) - min(queued for queued, _ in times)).total_seconds()
    return latencies, span


def burst(database, queue: str, workers, jobs: list[tuple[int, str]], timeout_s: float) -> CeleryRun:
    """Enqueue every job at once and wait for all outcomes."""
    ids = [scan_id for scan_id, _ in jobs]
    logged_before = [len(worker.batches()) for worker in workers]
    requeue(database, ids)
    send_jobs(queue, jobs)
    wait_settled(database, ids, timeout_s)

    latencies, span = _latencies(database, ids)
    # The worker logs a batch just after committing it; give the last line time to appear.
    time.sleep(_LOG_GRACE_S)
    batches = [batch for worker, before in zip(workers, logged_before) for batch in worker.batches()[before:]]
    return CeleryRun(scans=len(ids), seconds=span, latencies_s=latencies, batches=batches)


def _time_shares(result: CeleryRun, workers: int) -> list[str]:
    # Shares of the run's span that the workers logged inside their batches and in each step
    # of them. What is left went to receiving, acknowledging and waiting for jobs.
    span = result.seconds * workers
    parts = [
        sum(batch.seconds for batch in result.batches),
        sum(batch.decode_s for batch in result.batches),
        sum(batch.inference_s for batch in result.batches),
        sum(batch.write_s for batch in result.batches),
    ]
    return [f"{part / span:.2f}" for part in parts]


def trickle(database, queue: str, worker, jobs: list[tuple[int, str]], seed: int = 0) -> tuple[list[float], list[float]]:
    """Send jobs one at a time, each after the previous one is written; returns latencies and batch seconds."""
    rng = random.Random(seed)
    latencies = []
    logged_before = len(worker.batches())
    for scan_id, uri in jobs:
        # A random pause puts each arrival at a random point of the worker's flush timer.
        time.sleep(rng.uniform(0.05, 0.4))
        requeue(database, [scan_id])
        send_jobs(queue, [(scan_id, uri)])
        wait_settled(database, [scan_id], timeout_s=60, interval_s=0.02)
        latencies.extend(_latencies(database, [scan_id])[0])
    time.sleep(_LOG_GRACE_S)
    batch_seconds = [batch.seconds for batch in worker.batches()[logged_before:]]
    return latencies, batch_seconds


def _register(database, paths: list[Path]) -> list[tuple[int, str]]:
    uris = [str(path) for path in paths]
    with database.sessions.begin() as session:
        recorded = repository.register_scans(session, uris)
    return [(recorded[uri][0], uri) for uri in uris]


def run(
    throughput,
    latency,
    workdir: Path,
    paths: list[Path],
    database_kind: str,
    batch_size: int,
    delay_ms: int,
    lone_scans: int,
    min_seconds: float,
) -> dict[str, float]:
    """Fill the throughput and latency sections; returns the ratios to the adjacent bare forward pass."""
    checkpoint = make_checkpoint(workdir, 224)
    ratios = {}
    settings = {"max_batch_size": str(batch_size), "max_batch_delay_ms": str(delay_ms), "scan_root": str(DATA_ROOT)}

    with temporary_database(workdir, database_kind) as database:
        enroll_exemplars(database, checkpoint, *exemplar_files())
        jobs = _register(database, paths)
        timeout_s = 60 + 2.0 * len(jobs)

        for count in (1, 2):
            with celery_workers(count, database_url(database), workdir, worker_processes=str(count), **settings) as (queue, workers):
                # Every worker loads its model on its first batch; that is not timed.
                burst(database, queue, workers, jobs[: batch_size * count], timeout_s)

                reference = forward_images_per_second(batch_size, min_seconds)
                result = burst(database, queue, workers, jobs, timeout_s)
                ratio = result.rate / reference
                ratios[f"celery, {count} worker(s)"] = ratio
                full = sum(batch.jobs == batch_size for batch in result.batches)
                throughput.add(
                    count, result.scans, result.rate, reference, f"{ratio:.2f}",
                    len(result.batches), f"{full}/{len(result.batches)}", *_time_shares(result, count),
                )
                latency.add(
                    f"high: burst of {result.scans}, {count} worker(s)", result.scans,
                    percentile(result.latencies_s, 0.5), percentile(result.latencies_s, 0.99), max(result.latencies_s), "",
                )

                if count == 1:
                    lone, batch_seconds = trickle(database, queue, workers[0], jobs[:lone_scans])
                    bound = delay_ms / 1000 + max(batch_seconds, default=float("nan"))
                    latency.add(
                        "low: one scan at a time, 1 worker", len(lone), percentile(lone, 0.5), percentile(lone, 0.99), max(lone),
                        f"{bound:.3f}",
                    )

    throughput.note(
        f"batch {batch_size}, max delay {delay_ms} ms, 224x224, {database_kind} database, Redis 127.0.0.1:6379 database 13; "
        "torch threads per worker = CPUs / worker processes (CARGOSCAN_WORKER_PROCESSES); 'in batches' = seconds the workers "
        "logged inside their batches (decode to commit) over the run's span; 'decode', 'inference' and 'write' split that time "
        "(decode is the wait for the decode threads, inference the forward pass and exemplar comparison)"
    )
    latency.note(
        f"bound = max batch delay ({delay_ms} ms) + the slowest batch of one scan that the worker logged during the low-load run"
    )
    return ratios
