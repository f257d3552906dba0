"""The SQLAlchemy schema: model versions, exemplar sets, exemplars, scans and results."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCAN_QUEUED = "queued"
SCAN_DONE = "done"
SCAN_FAILED = "failed"

LABEL_POSITIVE = "positive"
LABEL_NEGATIVE = "negative"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class ModelVersion(Base):
    """A checkpoint, identified by the sha256 of its file."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    checkpoint_path: Mapped[str] = mapped_column(Text)
    preprocessing: Mapped[dict[str, Any]] = mapped_column(JSON)
    threshold: Mapped[float] = mapped_column(Float)
    training: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ExemplarSet(Base):
    """Labelled exemplar embeddings made by one model version; never mixed across versions."""

    __tablename__ = "exemplar_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    positive_count: Mapped[int] = mapped_column(Integer)
    negative_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Exemplar(Base):
    """One labelled exemplar: its source file and its embedding as little-endian float32 bytes."""

    __tablename__ = "exemplars"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exemplar_set_id: Mapped[int] = mapped_column(ForeignKey("exemplar_sets.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(16))
    uri: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)


class Scan(Base):
    """A scan file known to CargoScan, with its screening status."""

    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uri: Mapped[str] = mapped_column(Text, unique=True)
    status: Mapped[str] = mapped_column(String(16), default=SCAN_QUEUED, index=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Deliveries that started without finishing; reset when an outcome is written. A scan
    # that keeps killing its worker is failed once this passes the configured maximum.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Set when a rescore sent this scan for that exemplar set, so a rerun does not send it twice.
    rescore_exemplar_set_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rescore_enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ActiveConfiguration(Base):
    """The model version and exemplar set that workers screen with; at most one row (id 1)."""

    __tablename__ = "active_configuration"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    exemplar_set_id: Mapped[int] = mapped_column(ForeignKey("exemplar_sets.id"))
    activated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ScanEmbedding(Base):
    """A scan's embedding by one model version, so exemplar changes need no network pass.

    ``dtype`` is ``float32`` (2048 bytes per 512-d embedding) or ``float16`` (1024 bytes).
    """

    __tablename__ = "scan_embeddings"

    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    dtype: Mapped[str] = mapped_column(String(8))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Result(Base):
    """The verdict on one scan by one model version and exemplar set; unique per triple."""

    __tablename__ = "results"
    __table_args__ = (
        UniqueConstraint("scan_id", "model_version_id", "exemplar_set_id", name="uq_results_scan_model_set"),
        Index("ix_results_flagged", "flagged"),
        Index("ix_results_model_set", "model_version_id", "exemplar_set_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    exemplar_set_id: Mapped[int] = mapped_column(ForeignKey("exemplar_sets.id"))
    positive_distance: Mapped[float] = mapped_column(Float)
    positive_exemplar_id: Mapped[int] = mapped_column(ForeignKey("exemplars.id"))
    negative_distance: Mapped[float | None] = mapped_column(Float, nullable=True)
    negative_exemplar_id: Mapped[int | None] = mapped_column(ForeignKey("exemplars.id"), nullable=True)
    threshold: Mapped[float] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean)
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Tile mode only: the top-scoring tile in scan pixels (ends exclusive) and how many tiles were scored.
    box_x0: Mapped[int | None] = mapped_column(Integer, nullable=True)
    box_y0: Mapped[int | None] = mapped_column(Integer, nullable=True)
    box_x1: Mapped[int | None] = mapped_column(Integer, nullable=True)
    box_y1: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tile_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
