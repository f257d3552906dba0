"""Result writes: repository.write_batch rows per second on SQLite and PostgreSQL.

Each batch is one transaction, as in the pipeline: one multi-row upsert of the results (with
their 2048-byte float32 embeddings) and one UPDATE of the scans' status.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sqlalchemy import select

from bench.common import postgres_available, temporary_database
from db import repository
from db.schema import Exemplar


def _fixture_rows(database, scans: int) -> tuple[int, int, int, list[int]]:
    """Create a model version, an exemplar set with one exemplar, and ``scans`` scans."""
    with database.sessions.begin() as session:
        version = repository.get_or_create_model_version(
            session, sha256="b" * 64, name="bench.pt", checkpoint_path="/nonexistent/bench.pt",
            preprocessing={}, threshold=1.0, training={},
        )
        vector = np.zeros(512, dtype="<f4").tobytes()
        exemplar_set = repository.create_exemplar_set(
            session, version.id, "bench", [repository.ExemplarRow(label="positive", uri="/nonexistent/e.png", embedding=vector)]
        )
        exemplar_id = session.execute(select(Exemplar.id).where(Exemplar.exemplar_set_id == exemplar_set.id)).scalar_one()
        recorded = repository.register_scans(session, [f"/nonexistent/scan-{index:06d}.png" for index in range(scans)])
    return version.id, exemplar_set.id, exemplar_id, sorted(scan_id for scan_id, _ in recorded.values())


def rows_per_second(database, batch_size: int, batches: int) -> float:
    version_id, set_id, exemplar_id, scan_ids = _fixture_rows(database, batch_size * batches)
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal(512).astype("<f4").tobytes()

    started = time.perf_counter()
    for start in range(0, len(scan_ids), batch_size):
        rows = [
            repository.ScoredScan(
                scan_id=scan_id, positive_distance=float(rng.random()), positive_exemplar_id=exemplar_id,
                negative_distance=None, negative_exemplar_id=None, flagged=False, width=1000, height=800,
                embedding=embedding,
            )
            for scan_id in scan_ids[start : start + batch_size]
        ]
        with database.sessions.begin() as session:
            repository.write_batch(session, version_id, set_id, 1.0, rows, [])
    return len(scan_ids) / (time.perf_counter() - started)


def run(section, workdir: Path, batch_sizes: list[int], rows: int) -> None:
    kinds = ["sqlite"] + (["postgresql"] if postgres_available() else [])
    for kind in kinds:
        for batch_size in batch_sizes:
            with temporary_database(workdir, kind) as database:
                rate = rows_per_second(database, batch_size, max(1, rows // batch_size))
                section.add(kind, batch_size, rate, 1000 * batch_size / rate)
    if "postgresql" not in kinds:
        section.note("PostgreSQL is not running on 127.0.0.1:5432; its rows are missing")
    section.note("SQLite in WAL mode on the local disk; PostgreSQL on 127.0.0.1 over TCP, a fresh database per row")
