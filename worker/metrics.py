"""Prometheus metrics of the screening pipeline, all recorded by the functions of this module.

With ``CARGOSCAN_METRICS_MULTIPROC_DIR`` (or ``PROMETHEUS_MULTIPROC_DIR``) set, values are
kept in prometheus_client's per-process files so a prefork worker's parent can serve the
sum over its children; :mod:`worker.metrics_endpoint` serves them. Gauges name their
multiprocess mode, which prometheus_client ignores in single-process mode.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from worker.metrics_env import configure_multiprocess_dir

# Runs before the import below because prometheus_client fixes its storage when imported.
MULTIPROCESS_DIR = configure_multiprocess_dir()

from prometheus_client import Counter, Gauge, Histogram  # noqa: E402

from worker.failure_reasons import FAILURE_REASONS, failure_reason_label  # noqa: E402

logger = logging.getLogger(__name__)

OUTCOMES = ("scored", "failed")

SCANS = Counter("cargoscan_scans_total", "Scans processed, by outcome (scored or failed)", ["outcome"])
SCANS_FAILED = Counter(
    "cargoscan_scans_failed_total", "Scans that could not be screened, by reason (a fixed set of labels)", ["reason"]
)
SCANS_REPEATED = Counter(
    "cargoscan_scans_redelivered_total",
    "Jobs for scans whose outcome from the same model and exemplar set was already recorded (not counted again)",
)
FLAGGED = Counter("cargoscan_scans_flagged_total", "Scored scans that the model version's score rule flagged")
TILES = Counter("cargoscan_tiles_total", "Tiles embedded by tile-mode models; 0 for whole-scan models")
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

# One series per model and exemplar set in use: 1 while in use, 0 once this process switched
# away. "livemax" drops the series of exited pool children and takes the maximum over the rest.
WORKER_INFO = Gauge(
    "cargoscan_worker_info",
    "CargoScan version, model version (sha256 prefix) and exemplar set in use; the value is 1 while in use",
    ["version", "model_version", "exemplar_set"],
    multiprocess_mode="livemax",
)
GPU_MEMORY_ALLOCATED = Gauge(
    "cargoscan_gpu_memory_allocated_bytes",
    "CUDA memory held by tensors after the latest batch, summed over the worker's processes",
    ["device"],
    multiprocess_mode="livesum",
)
GPU_MEMORY_RESERVED = Gauge(
    "cargoscan_gpu_memory_reserved_bytes",
    "CUDA memory reserved by torch's caching allocator after the latest batch, summed over the worker's processes",
    ["device"],
    multiprocess_mode="livesum",
)

MODEL_VERSION_LENGTH = 12

try:
    CARGOSCAN_VERSION = version("cargoscan")
except PackageNotFoundError:
    CARGOSCAN_VERSION = "unknown"

_info_labels: tuple[str, str, str] | None = None


def initialize_metrics() -> None:
    """Create the labelled series at zero so rates and alerts see them before the first event.

    In a prefork child this is also the first write after the fork, which makes
    prometheus_client open this process's files.
    """
    for outcome in OUTCOMES:
        SCANS.labels(outcome=outcome).inc(0)
    for reason in FAILURE_REASONS:
        SCANS_FAILED.labels(reason=reason).inc(0)


def record_batch(report, screener=None) -> None:
    """Record one :class:`worker.pipeline.BatchReport`, and the screener that produced it when given."""
    # A redelivered scan already counted when its outcome was first written.
    repeated = report.repeated
    scored = [item for item in report.scored if item[0] not in repeated]
    failed = [item for item in report.failed if item[0] not in repeated]
    SCANS.labels(outcome="scored").inc(len(scored))
    SCANS.labels(outcome="failed").inc(len(failed))
    SCANS_REPEATED.inc(len(report.scored) + len(report.failed) - len(scored) - len(failed))
    for _, reason in failed:
        SCANS_FAILED.labels(reason=failure_reason_label(reason)).inc()
    FLAGGED.inc(sum(1 for _, is_flagged, _ in scored if is_flagged))
    TILES.inc(report.tiles)
    BATCH_SIZE.observe(report.size)
    if report.scored:
        BATCH_INFERENCE.observe(report.inference_s)
    for latency in report.latencies_s:
        SCAN_LATENCY.observe(latency)

    if screener is not None:
        record_screener(screener)


def record_screener(screener) -> None:
    """Record which model and exemplar set a :class:`worker.screener.Screener` uses, and its GPU memory."""
    global _info_labels

    labels = (CARGOSCAN_VERSION, screener.model_sha256[:MODEL_VERSION_LENGTH], str(screener.exemplar_set_id))
    if labels != _info_labels:
        if _info_labels is not None:
            WORKER_INFO.labels(*_info_labels).set(0)
        WORKER_INFO.labels(*labels).set(1)
        _info_labels = labels

    if screener.device.type == "cuda":
        record_gpu_memory(screener.device)


def record_gpu_memory(device) -> None:
    """Record the CUDA memory torch holds on ``device`` in this process."""
    import torch

    name = str(device) if device.index is not None else f"cuda:{torch.cuda.current_device()}"
    GPU_MEMORY_ALLOCATED.labels(device=name).set(torch.cuda.memory_allocated(device))
    GPU_MEMORY_RESERVED.labels(device=name).set(torch.cuda.memory_reserved(device))
