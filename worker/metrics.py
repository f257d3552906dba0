"""Prometheus metrics of the screening pipeline, all recorded by :func:`record_batch`."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

logger = logging.getLogger(__name__)

SCANS = Counter("cargoscan_scans_total", "Scans processed, by outcome (scored or failed)", ["outcome"])
FLAGGED = Counter("cargoscan_scans_flagged_total", "Scored scans whose nearest positive exemplar is within the threshold")
BATCH_SIZE = Histogram(
    "cargoscan_batch_size", "Jobs per screened batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
BATCH_INFERENCE = Histogram(
    "cargoscan_batch_inference_seconds",
    "Seconds per batch for the forward pass and exemplar comparison",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SCAN_LATENCY = Histogram(
    "cargoscan_scan_latency_seconds",
    "Seconds from enqueueing a scan to committing its outcome",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
BATCHES_FAILED = Counter("cargoscan_batches_failed_total", "Batches that could not be written and were sent back to the queue")


def record_batch(report) -> None:
    """Record one :class:`worker.pipeline.BatchReport`."""
    SCANS.labels(outcome="scored").inc(len(report.scored))
    SCANS.labels(outcome="failed").inc(len(report.failed))
    FLAGGED.inc(report.flagged)
    BATCH_SIZE.observe(report.size)
    if report.scored:
        BATCH_INFERENCE.observe(report.inference_s)
    for latency in report.latencies_s:
        SCAN_LATENCY.observe(latency)


def serve_metrics(port: int, address: str = "127.0.0.1") -> None:
    """Serve /metrics on ``address:port`` from a daemon thread; port 0 disables it."""
    if port == 0:
        return
    start_http_server(port, addr=address)
    logger.info("serving Prometheus metrics on %s:%d", address, port)
