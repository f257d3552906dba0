"""Queries and writes: every statement CargoScan runs against its database."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, select, update
from sqlalchemy.orm import Session

from db.embeddings import upsert_embeddings
from db.upsert import dialect_insert
from db.schema import (
    LABEL_NEGATIVE,
    LABEL_POSITIVE,
    SCAN_DONE,
    SCAN_FAILED,
    SCAN_QUEUED,
    Exemplar,
    ExemplarSet,
    ModelVersion,
    Result,
    Scan,
    utcnow,
)

# SQLite allows 32766 bound parameters per statement; results use 11 columns each.
_ROWS_PER_STATEMENT = 2000


def get_or_create_model_version(
    session: Session, sha256: str, name: str, checkpoint_path: str, preprocessing: dict[str, Any], threshold: float, training: dict[str, Any]
) -> ModelVersion:
    """Return the model version with this sha256, registering it first if it is new."""
    statement = dialect_insert(session, ModelVersion).values(
        sha256=sha256, name=name, checkpoint_path=checkpoint_path, preprocessing=preprocessing,
        threshold=threshold, training=training, created_at=utcnow(),
    )
    session.execute(statement.on_conflict_do_nothing(index_elements=["sha256"]))
    return session.execute(select(ModelVersion).where(ModelVersion.sha256 == sha256)).scalar_one()


@dataclass(frozen=True)
class ExemplarRow:
    label: str
    uri: str
    embedding: bytes


def create_exemplar_set(session: Session, model_version_id: int, name: str, rows: Sequence[ExemplarRow]) -> ExemplarSet:
    """Store a new exemplar set with its exemplars; it needs at least one positive."""
    positives = sum(row.label == LABEL_POSITIVE for row in rows)
    negatives = sum(row.label == LABEL_NEGATIVE for row in rows)
    if positives == 0:
        raise ValueError("an exemplar set needs at least one positive exemplar")
    if positives + negatives != len(rows):
        raise ValueError(f"exemplar labels must be {LABEL_POSITIVE!r} or {LABEL_NEGATIVE!r}")

    exemplar_set = ExemplarSet(model_version_id=model_version_id, name=name, positive_count=positives, negative_count=negatives)
    session.add(exemplar_set)
    session.flush()
    session.add_all(Exemplar(exemplar_set_id=exemplar_set.id, label=row.label, uri=row.uri, embedding=row.embedding) for row in rows)
    session.flush()
    return exemplar_set


def latest_exemplar_set(session: Session) -> ExemplarSet | None:
    return session.execute(select(ExemplarSet).order_by(ExemplarSet.id.desc()).limit(1)).scalar_one_or_none()


def load_exemplars(session: Session, exemplar_set_id: int) -> list[Exemplar]:
    return list(session.execute(select(Exemplar).where(Exemplar.exemplar_set_id == exemplar_set_id).order_by(Exemplar.id)).scalars())


def register_scans(session: Session, uris: Iterable[str]) -> dict[str, tuple[int, bool]]:
    """Record scans by URI; returns uri -> (scan id, newly recorded). Known scans are left as they are."""
    uris = list(dict.fromkeys(uris))
    known: dict[str, int] = {}
    for start in range(0, len(uris), _ROWS_PER_STATEMENT):
        chunk = uris[start : start + _ROWS_PER_STATEMENT]
        known.update(session.execute(select(Scan.uri, Scan.id).where(Scan.uri.in_(chunk))).tuples().all())

    new = [uri for uri in uris if uri not in known]
    now = utcnow()
    for start in range(0, len(new), _ROWS_PER_STATEMENT):
        chunk = new[start : start + _ROWS_PER_STATEMENT]
        rows = [{"uri": uri, "status": SCAN_QUEUED, "queued_at": now, "updated_at": now} for uri in chunk]
        session.execute(dialect_insert(session, Scan).values(rows).on_conflict_do_nothing(index_elements=["uri"]))

    created: dict[str, int] = {}
    for start in range(0, len(new), _ROWS_PER_STATEMENT):
        chunk = new[start : start + _ROWS_PER_STATEMENT]
        created.update(session.execute(select(Scan.uri, Scan.id).where(Scan.uri.in_(chunk))).tuples().all())

    return {uri: (known[uri], False) if uri in known else (created[uri], True) for uri in uris}


def requeue_scans(session: Session, scan_ids: Sequence[int]) -> None:
    """Mark scans queued again (for a new screening run), clearing any old failure."""
    now = utcnow()
    for start in range(0, len(scan_ids), _ROWS_PER_STATEMENT):
        chunk = list(scan_ids[start : start + _ROWS_PER_STATEMENT])
        session.execute(
            update(Scan).where(Scan.id.in_(chunk)).values(status=SCAN_QUEUED, failure_reason=None, queued_at=now, updated_at=now)
        )


def lock_scans(session: Session, scan_ids: Sequence[int]) -> None:
    """Hold the scans' rows (PostgreSQL) or the database's write lock (SQLite) until commit.

    Rows are locked in id order, so two transactions over overlapping batches wait for
    each other instead of deadlocking.
    """
    ids = sorted(set(scan_ids))
    if not ids:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Scan.id).where(Scan.id.in_(ids)).order_by(Scan.id).with_for_update())
    else:
        # SQLite has no row locks; any write takes the database's single write lock.
        session.execute(update(Scan).where(Scan.id.in_(ids)).values(updated_at=Scan.updated_at))


def begin_attempts(session: Session, scan_ids: Sequence[int]) -> dict[int, int]:
    """Count one more delivery of each scan; returns scan id -> deliveries not yet finished, this one included."""
    ids = list(dict.fromkeys(scan_ids))
    session.execute(update(Scan).where(Scan.id.in_(ids)).values(attempts=Scan.attempts + 1))
    return dict(session.execute(select(Scan.id, Scan.attempts).where(Scan.id.in_(ids))).tuples().all())


def unfinished_attempts(session: Session, scan_ids: Sequence[int]) -> dict[int, int]:
    """Return scan id -> deliveries counted so far that did not finish (0 for a settled scan)."""
    return dict(session.execute(select(Scan.id, Scan.attempts).where(Scan.id.in_(list(scan_ids)))).tuples().all())


def scans_with_result(session: Session, scan_ids: Sequence[int], model_version_id: int, exemplar_set_id: int) -> set[int]:
    """Return the scans among ``scan_ids`` that already have a result from this pair."""
    return set(
        session.execute(
            select(Result.scan_id).where(
                Result.scan_id.in_(list(scan_ids)),
                Result.model_version_id == model_version_id,
                Result.exemplar_set_id == exemplar_set_id,
            )
        ).scalars()
    )


def scan_statuses(session: Session, scan_ids: Sequence[int]) -> dict[int, str]:
    return dict(session.execute(select(Scan.id, Scan.status).where(Scan.id.in_(list(scan_ids)))).tuples().all())


def stale_queued_scans(session: Session, older_than: datetime, limit: int = 10_000) -> list[tuple[int, str]]:
    """List (id, uri) of scans still queued since before ``older_than``, oldest first."""
    statement = select(Scan.id, Scan.uri).where(Scan.status == SCAN_QUEUED, Scan.queued_at < older_than)
    return list(session.execute(statement.order_by(Scan.queued_at).limit(limit)).tuples())


def touch_queued(session: Session, scan_ids: Sequence[int]) -> None:
    """Reset the queued time of scans whose jobs were just sent again."""
    session.execute(update(Scan).where(Scan.id.in_(list(scan_ids))).values(queued_at=utcnow()))


def queued_times(session: Session, scan_ids: Sequence[int]) -> dict[int, datetime]:
    return dict(session.execute(select(Scan.id, Scan.queued_at).where(Scan.id.in_(list(scan_ids)))).tuples().all())


def existing_scan_ids(session: Session, scan_ids: Sequence[int]) -> set[int]:
    return set(session.execute(select(Scan.id).where(Scan.id.in_(list(scan_ids)))).scalars())


@dataclass(frozen=True)
class ScoredScan:
    scan_id: int
    positive_distance: float
    positive_exemplar_id: int
    negative_distance: float | None
    negative_exemplar_id: int | None
    flagged: bool
    width: int | None
    height: int | None
    embedding: bytes | None = None
    # Tile mode: the top tile's (x0, y0, x1, y1) in scan pixels and the scan's tile count.
    box: tuple[int, int, int, int] | None = None
    tile_count: int | None = None


@dataclass(frozen=True)
class FailedScan:
    scan_id: int
    reason: str


def write_batch(
    session: Session,
    model_version_id: int,
    exemplar_set_id: int,
    threshold: float,
    scored: Sequence[ScoredScan],
    failed: Sequence[FailedScan],
    embedding_dtype: str = "float32",
) -> None:
    """Upsert the batch's results (and embeddings, where given) and set each scan's status.

    Runs in the caller's transaction. The upsert keys on (scan, model version, exemplar
    set), so a redelivered job overwrites its earlier row instead of adding a second one.
    """
    now = utcnow()
    embeddings = [(item.scan_id, item.embedding) for item in scored if item.embedding is not None]
    if embeddings:
        upsert_embeddings(session, model_version_id, embeddings, embedding_dtype)

    if scored:
        rows = [
            {
                "scan_id": item.scan_id,
                "model_version_id": model_version_id,
                "exemplar_set_id": exemplar_set_id,
                "positive_distance": item.positive_distance,
                "positive_exemplar_id": item.positive_exemplar_id,
                "negative_distance": item.negative_distance,
                "negative_exemplar_id": item.negative_exemplar_id,
                "threshold": threshold,
                "flagged": item.flagged,
                "scored_at": now,
                **_box_columns(item),
            }
            for item in scored
        ]
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            statement = dialect_insert(session, Result).values(rows[start : start + _ROWS_PER_STATEMENT])
            excluded = statement.excluded
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["scan_id", "model_version_id", "exemplar_set_id"],
                    set_={
                        "positive_distance": excluded.positive_distance,
                        "positive_exemplar_id": excluded.positive_exemplar_id,
                        "negative_distance": excluded.negative_distance,
                        "negative_exemplar_id": excluded.negative_exemplar_id,
                        "threshold": excluded.threshold,
                        "flagged": excluded.flagged,
                        "scored_at": excluded.scored_at,
                        **{name: getattr(excluded, name) for name in _BOX_FIELDS},
                    },
                )
            )

        # One UPDATE for the batch: scan sizes arrive per row through CASE expressions.
        ids = [item.scan_id for item in scored]
        session.execute(
            update(Scan)
            .where(Scan.id.in_(ids))
            .values(
                status=SCAN_DONE,
                failure_reason=None,
                attempts=0,
                updated_at=now,
                width=_size_update(scored, "width", Scan.width),
                height=_size_update(scored, "height", Scan.height),
            )
        )

    if failed:
        session.execute(
            update(Scan)
            .where(Scan.id.in_([item.scan_id for item in failed]))
            .values(
                status=SCAN_FAILED,
                attempts=0,
                updated_at=now,
                failure_reason=case({item.scan_id: item.reason for item in failed}, value=Scan.id),
            )
        )


_BOX_FIELDS = ("box_x0", "box_y0", "box_x1", "box_y1", "tile_count")


def _box_columns(item: ScoredScan) -> dict[str, int | None]:
    box = item.box if item.box is not None else (None, None, None, None)
    values = [None if value is None else int(value) for value in box]
    return dict(zip(_BOX_FIELDS, [*values, item.tile_count]))


def _size_update(scored: Sequence[ScoredScan], field: str, column):
    # Rescoring from stored embeddings has no image size, so those rows keep the stored one.
    sizes = {item.scan_id: getattr(item, field) for item in scored if getattr(item, field) is not None}
    return case(sizes, value=Scan.id, else_=column) if sizes else column


@dataclass(frozen=True)
class ResultRow:
    scan_id: int
    uri: str
    status: str
    flagged: bool | None
    positive_distance: float | None
    negative_distance: float | None
    threshold: float | None
    failure_reason: str | None
    model_sha256: str | None
    exemplar_set_id: int | None
    scored_at: datetime | None
    # Tile mode: the top tile's box in scan pixels.
    box_x0: int | None = None
    box_y0: int | None = None
    box_x1: int | None = None
    box_y1: int | None = None
    # The model version's score rule and the result's score under it: the nearest-positive
    # distance (flagged at or below the threshold), the nearest-negative distance for
    # novelty, or their difference for margin (both flagged at or above it).
    score_rule: str | None = None
    score: float | None = None


def _score_columns():
    # Checkpoints from before score rules name none and flag by the nearest positive.
    rule = func.coalesce(ModelVersion.training["score_rule"].as_string(), "nearest_positive")
    score = case(
        (rule == "novelty", Result.negative_distance),
        (rule == "margin", Result.negative_distance - Result.positive_distance),
        else_=Result.positive_distance,
    )
    # Higher is more suspicious under every rule, as models.exemplars.suspicion defines it.
    suspicion = case((rule == "nearest_positive", -score), else_=score)
    return case((Result.id.is_(None), None), else_=rule).label("score_rule"), score.label("score"), suspicion


def list_results(session: Session, limit: int | None = None, flagged_only: bool = False, include_failed: bool = True) -> list[ResultRow]:
    """List each scan with its latest result: flagged first, then most suspicious first under the model's score rule."""
    latest = (
        select(Result.scan_id, func.max(Result.id).label("result_id")).group_by(Result.scan_id).subquery()
    )
    score_rule, score, suspicion = _score_columns()
    statement: Select = (
        select(
            Scan.id, Scan.uri, Scan.status, Result.flagged, Result.positive_distance, Result.negative_distance,
            Result.threshold, Scan.failure_reason, ModelVersion.sha256, Result.exemplar_set_id, Result.scored_at,
            Result.box_x0, Result.box_y0, Result.box_x1, Result.box_y1, score_rule, score,
        )
        .select_from(Scan)
        .outerjoin(latest, latest.c.scan_id == Scan.id)
        .outerjoin(Result, Result.id == latest.c.result_id)
        .outerjoin(ModelVersion, ModelVersion.id == Result.model_version_id)
        .order_by(
            case((Result.flagged.is_(True), 0), (Scan.status == SCAN_FAILED, 2), else_=1),
            suspicion.desc().nulls_last(),
            Scan.id,
        )
    )
    if flagged_only:
        statement = statement.where(Result.flagged.is_(True))
    if not include_failed:
        statement = statement.where(Scan.status != SCAN_FAILED)
    if limit is not None:
        statement = statement.limit(limit)
    return [ResultRow(*row) for row in session.execute(statement).tuples()]


def count_results(session: Session, scan_id: int) -> int:
    return int(session.execute(select(func.count()).select_from(Result).where(Result.scan_id == scan_id)).scalar_one())


def scan_status_counts(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Scan.status, func.count()).group_by(Scan.status)).tuples().all())


def set_model_threshold(session: Session, sha256: str, threshold: float) -> ModelVersion | None:
    """Store a calibrated decision threshold on the model version with this sha256; returns it, or None when unknown."""
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    version = session.execute(select(ModelVersion).where(ModelVersion.sha256 == sha256)).scalar_one_or_none()
    if version is not None:
        version.threshold = float(threshold)
        session.flush()
    return version
