"""Inputs and bookkeeping of the chaos run: synthetic scans, a tiny model, a private PostgreSQL database, the final audit."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import func, select

logger = logging.getLogger(__name__)

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Random weights give arbitrary distances; a large threshold flags some scans, which is
# enough here because the run checks bookkeeping, not detection.
TINY_THRESHOLD = 1e6
EXEMPLARS_PER_LABEL = 3
# The kinds of bad file mixed into the submitted scans; each must fail alone with a reason.
BAD_FILE_KINDS = ("empty", "truncated", "not_an_image")


def scene_config():
    from models.synthetic import SceneConfig

    return SceneConfig(width=96, height=48)


def write_scans(folder: Path, count: int, bad_count: int, chunk_size: int, seed: int) -> tuple[list[Path], set[Path]]:
    """Write ``count`` scans into chunk folders of ``chunk_size``; returns the chunk folders and the bad files.

    ``bad_count`` of the scans are bad files, spread evenly over the run and cycling through
    :data:`BAD_FILE_KINDS`.
    """
    from models.synthetic import render_scan, write_png16

    rng = np.random.default_rng(seed)
    config = scene_config()
    bad_kinds = {}
    if bad_count:
        for order, position in enumerate(np.linspace(0, count - 1, bad_count, dtype=int).tolist()):
            bad_kinds[position] = BAD_FILE_KINDS[order % len(BAD_FILE_KINDS)]

    chunks = []
    bad = set()
    for index in range(count):
        chunk = folder / f"chunk_{index // chunk_size:03d}"
        if index % chunk_size == 0:
            chunk.mkdir(parents=True)
            chunks.append(chunk)
        path = chunk / f"scan_{index:05d}.png"
        scan = render_scan(rng, with_item=index % 2 == 0, config=config)
        write_png16(path, scan.pixels)
        if index in bad_kinds:
            _spoil(path, bad_kinds[index])
            bad.add(path)
    return chunks, bad


def _spoil(path: Path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"this is a text file, not a PNG image\n" * 4)


def write_checkpoint_and_exemplars(folder: Path, seed: int) -> tuple[Path, list[Path], list[Path]]:
    """Save a randomly initialised embedder at 32 px input and three exemplars of each label."""
    from models.checkpoint import save_checkpoint
    from models.embedder import SiameseEmbedder
    from models.preprocess import PreprocessConfig
    from models.synthetic import render_scan, write_png16

    torch.manual_seed(seed)
    checkpoint = folder / "chaos-model.pt"
    save_checkpoint(checkpoint, SiameseEmbedder().eval(), PreprocessConfig(image_size=32), threshold=TINY_THRESHOLD, metadata={"purpose": "chaos run"})

    rng = np.random.default_rng(seed + 1)
    exemplars = {}
    for label in ("positive", "negative"):
        label_folder = folder / "exemplars" / label
        label_folder.mkdir(parents=True)
        paths = []
        for index in range(EXEMPLARS_PER_LABEL):
            path = label_folder / f"{label}_{index}.png"
            write_png16(path, render_scan(rng, with_item=label == "positive", config=scene_config()).pixels)
            paths.append(path)
        exemplars[label] = paths
    return checkpoint, exemplars["positive"], exemplars["negative"]


def create_private_database(name: str) -> str:
    """Create database ``name`` on the PostgreSQL server at 127.0.0.1:5432; raises when it exists."""
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            raise RuntimeError(
                f"database {name!r} already exists, probably left by an interrupted chaos run; "
                f"drop it with: psql -h 127.0.0.1 -U postgres -c 'DROP DATABASE {name} WITH (FORCE)'"
            )
        connection.execute(f'CREATE DATABASE "{name}"')
    logger.info("created database %s", name)
    return name


def drop_private_database(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    logger.info("dropped database %s", name)


@dataclass
class Audit:
    """The outcome of every submitted scan, read from the database after the run."""

    submitted: int = 0
    recorded: int = 0
    scored: int = 0
    failed_by_reason: Counter = field(default_factory=Counter)
    failed_examples: dict[str, str] = field(default_factory=dict)
    failed_good_scans: list[tuple[str, str]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    status_counts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(self.failed_by_reason.values())


def audit(database, submitted: list[Path], bad: set[Path]) -> Audit:
    """Compare the submitted files with the scans, statuses and result rows in the database.

    A scan is lost when it has neither a result row nor status failed. It is duplicated when
    it has more than one result row for one model version and exemplar set, which the unique
    constraint on results forbids, so that check fails only if the constraint is missing.
    """
    from db.schema import SCAN_FAILED, Result, Scan

    uris = [str(path.resolve()) for path in submitted]
    bad_uris = {str(path.resolve()) for path in bad}
    with database.sessions() as session:
        scans = {uri: (scan_id, status, reason) for scan_id, uri, status, reason in session.execute(
            select(Scan.id, Scan.uri, Scan.status, Scan.failure_reason)
        ).tuples()}
        with_result = set(session.execute(select(Result.scan_id).distinct()).scalars())
        duplicated = session.execute(
            select(Result.scan_id)
            .group_by(Result.scan_id, Result.model_version_id, Result.exemplar_set_id)
            .having(func.count() > 1)
        ).scalars().all()

    report = Audit(submitted=len(uris), duplicated=sorted(duplicated))
    report.status_counts = dict(Counter(status for _, status, _ in scans.values()))
    for uri in uris:
        if uri not in scans:
            report.lost.append(uri)
            continue

        report.recorded += 1
        scan_id, status, reason = scans[uri]
        if status == SCAN_FAILED:
            kind = _reason_kind(reason)
            report.failed_by_reason[kind] += 1
            report.failed_examples.setdefault(kind, reason or "")
            if uri not in bad_uris:
                report.failed_good_scans.append((uri, reason or ""))
        elif scan_id in with_result:
            report.scored += 1
        else:
            report.lost.append(uri)
    return report


def _reason_kind(reason: str | None) -> str:
    from worker.failure_reasons import failure_reason_label

    label = failure_reason_label(reason)
    if label == "other" and reason and "deliveries" in reason:
        return "too many unfinished deliveries"
    return label
