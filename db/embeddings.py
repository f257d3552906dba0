"""Stored scan embeddings, one per scan and model version."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.schema import ScanEmbedding, utcnow
from db.upsert import dialect_insert

EMBEDDING_DTYPES = {"float32": "<f4", "float16": "<f2"}
_ROWS_PER_STATEMENT = 2000


def encode_embedding(vector: np.ndarray, dtype: str) -> bytes:
    """Serialise a 1-d embedding as little-endian ``float32`` or ``float16`` bytes."""
    if dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"embedding dtype must be one of {sorted(EMBEDDING_DTYPES)}, got {dtype!r}")
    return np.asarray(vector).astype(EMBEDDING_DTYPES[dtype]).tobytes()


def decode_embedding(data: bytes, dtype: str) -> np.ndarray:
    """Return a stored embedding as float32."""
    if dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"stored embedding has unknown dtype {dtype!r}")
    return np.frombuffer(data, dtype=EMBEDDING_DTYPES[dtype]).astype(np.float32)


def upsert_embeddings(session: Session, model_version_id: int, rows: Sequence[tuple[int, bytes]], dtype: str) -> None:
    """Store (scan id, embedding bytes) rows for a model version, replacing older ones."""
    now = utcnow()
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        values = [
            {"scan_id": scan_id, "model_version_id": model_version_id, "dtype": dtype, "embedding": data, "created_at": now}
            for scan_id, data in rows[start : start + _ROWS_PER_STATEMENT]
        ]
        statement = dialect_insert(session, ScanEmbedding).values(values)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["scan_id", "model_version_id"],
                set_={"dtype": statement.excluded.dtype, "embedding": statement.excluded.embedding, "created_at": now},
            )
        )


def load_embeddings(session: Session, model_version_id: int, scan_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Return scan id -> float32 embedding for the scans that have one stored for this model version."""
    found: dict[int, np.ndarray] = {}
    for start in range(0, len(scan_ids), _ROWS_PER_STATEMENT):
        chunk = list(scan_ids[start : start + _ROWS_PER_STATEMENT])
        rows = session.execute(
            select(ScanEmbedding.scan_id, ScanEmbedding.dtype, ScanEmbedding.embedding).where(
                ScanEmbedding.model_version_id == model_version_id, ScanEmbedding.scan_id.in_(chunk)
            )
        ).tuples()
        found.update((scan_id, decode_embedding(data, dtype)) for scan_id, dtype, data in rows)
    return found
