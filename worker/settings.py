"""The one typed settings object, read from ``CARGOSCAN_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.engine import DEFAULT_DATABASE_URL
from models.imaging import DEFAULT_MAX_IMAGE_PIXELS


class Settings(BaseSettings):
    """Runtime settings shared by the CLI and the workers; units are in the names."""

    model_config = SettingsConfigDict(env_prefix="CARGOSCAN_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = "redis://localhost:6379/0"
    queue: str = Field("cargoscan.scans", description="Celery queue that carries live scan jobs")

    scan_root: Path | None = Field(None, description="Jobs may only read files under this folder; unset allows any path")
    max_image_pixels: int = Field(DEFAULT_MAX_IMAGE_PIXELS, gt=0)

    max_batch_size: int = Field(32, ge=1, le=4096)
    max_batch_delay_ms: int = Field(200, ge=1)
    decode_threads: int = Field(4, ge=1)
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads per worker process; unset divides the process's CPUs by worker_processes"
    )
    device: str | None = Field(None, description="cpu, cuda or cuda:N; unset picks CUDA when present")
    worker_processes: int = Field(
        1, ge=1, description="Worker processes sharing this machine's CPUs; with torch_threads unset each gets an equal share"
    )
    mixed_precision: bool = Field(True, description="CUDA only: forward pass in bfloat16, or float16 where unsupported; the CPU stays float32")
    torch_compile: bool = Field(False, description="CUDA only: compile the embedder with torch.compile on its first batch")
    tile_batch_size: int = Field(
        256, ge=1, description="Tile-mode models: tiles per forward pass, mixing tiles of the batch's scans"
    )

    exemplar_set_id: int | None = Field(None, description="Exemplar set to screen against; unset uses the newest")
    # Margin scores can be negative, so the sign is checked against the model's rule when
    # the screener is built.
    threshold: float | None = Field(None, description="Decision threshold; unset uses the one stored with the model version (calibrated or the checkpoint's)")
    approximate_index_min_exemplars: int = Field(
        100_000, ge=1, description="Exemplars of one class from which a faiss index proposes candidates for exact re-ranking"
    )
    approximate_index_probes: int = Field(
        0, ge=0, description="Inverted lists the approximate index searches per query; 0 picks max(8, lists / 32)"
    )

    embedding_dtype: Literal["float32", "float16"] = Field(
        "float32", description="Storage type of scan embeddings: 2048 bytes (float32) or 1024 bytes (float16) per scan and model"
    )
    rescore_queue: str = Field("cargoscan.rescore", description="Celery queue for archive rescoring, consumed after the live queue")

    metrics_port: int = Field(9808, ge=0, le=65535, description="Port of the worker's Prometheus endpoint; 0 disables it")
    metrics_address: str = "127.0.0.1"
    metrics_multiproc_dir: Path | None = Field(
        None,
        description="Folder for prometheus_client's per-process files, needed with the prefork pool; one folder per "
        "worker, emptied at worker start",
    )

    nightly_drop_folder: Path | None = Field(None, description="Folder that Celery beat enqueues every night; unset disables the run")
    nightly_time: str = Field("02:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="Time of the nightly run, HH:MM")
    timezone: str = Field("UTC", description="IANA time zone of Celery beat schedules such as nightly_time")

    max_attempts: int = Field(3, ge=1, description="Deliveries a scan may take without finishing before it is marked failed")
    stale_queued_after_s: int = Field(
        3600, ge=60, description="Seconds after which a still-queued scan's job is sent again (a lost message)"
    )
    unacked_restore_interval_s: int = Field(10, ge=1, description="Seconds between sweeps that redeliver timed-out jobs")
    visibility_timeout_s: int = Field(900, ge=10, description="Seconds before Redis redelivers an unacknowledged job")
    db_retry_attempts: int = Field(6, ge=1)
    db_retry_initial_delay_s: float = Field(0.5, gt=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
