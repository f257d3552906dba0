"""Queries for rescoring the archive and for comparing two model or exemplar versions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session, aliased

from db.schema import SCAN_DONE, Result, Scan, utcnow

_CHUNK = 2000


def _missing_result(model_version_id: int, exemplar_set_id: int):
    return ~exists().where(
        Result.scan_id == Scan.id, Result.model_version_id == model_version_id, Result.exemplar_set_id == exemplar_set_id
    )


def scans_to_rescore(session: Session, model_version_id: int, exemplar_set_id: int, include_sent: bool = False) -> list[tuple[int, str]]:
    """List (scan id, uri) of screened scans with no result from this pair, oldest first.

    Scans a previous rescore already sent for this exemplar set are left out unless
    ``include_sent``; failed scans are left out because their files could not be read.
    """
    statement = select(Scan.id, Scan.uri).where(Scan.status == SCAN_DONE, _missing_result(model_version_id, exemplar_set_id))
    if not include_sent:
        statement = statement.where(
            (Scan.rescore_exemplar_set_id.is_(None)) | (Scan.rescore_exemplar_set_id != exemplar_set_id)
        )
    return list(session.execute(statement.order_by(Scan.id)).tuples())


def mark_rescore_sent(session: Session, scan_ids: list[int], exemplar_set_id: int) -> None:
    now = utcnow()
    for start in range(0, len(scan_ids), _CHUNK):
        chunk = scan_ids[start : start + _CHUNK]
        session.execute(update(Scan).where(Scan.id.in_(chunk)).values(rescore_exemplar_set_id=exemplar_set_id, rescore_enqueued_at=now))


@dataclass(frozen=True)
class RescoreProgress:
    """How far the archive is from carrying a result of the active pair."""

    screened: int
    done: int
    sent_waiting: int
    not_sent: int
    scored_last_5_min: int

    @property
    def eta_seconds(self) -> float | None:
        remaining = self.screened - self.done
        if remaining == 0:
            return 0.0
        if self.scored_last_5_min == 0:
            return None
        return remaining / (self.scored_last_5_min / 300.0)


def rescore_progress(session: Session, model_version_id: int, exemplar_set_id: int) -> RescoreProgress:
    missing = _missing_result(model_version_id, exemplar_set_id)
    screened = session.execute(select(func.count()).select_from(Scan).where(Scan.status == SCAN_DONE)).scalar_one()
    waiting = session.execute(
        select(func.count()).select_from(Scan).where(Scan.status == SCAN_DONE, missing, Scan.rescore_exemplar_set_id == exemplar_set_id)
    ).scalar_one()
    not_done = session.execute(select(func.count()).select_from(Scan).where(Scan.status == SCAN_DONE, missing)).scalar_one()
    recent = session.execute(
        select(func.count()).select_from(Result).where(
            Result.model_version_id == model_version_id,
            Result.exemplar_set_id == exemplar_set_id,
            Result.scored_at >= utcnow() - timedelta(minutes=5),
        )
    ).scalar_one()
    return RescoreProgress(
        screened=screened, done=screened - not_done, sent_waiting=waiting, not_sent=not_done - waiting, scored_last_5_min=recent
    )


@dataclass(frozen=True)
class ChangedVerdict:
    scan_id: int
    uri: str
    change: str
    old_positive_distance: float
    new_positive_distance: float
    old_threshold: float
    new_threshold: float


def changed_verdicts(session: Session, old: tuple[int, int], new: tuple[int, int]) -> list[ChangedVerdict]:
    """List scans flagged by one (model version id, exemplar set id) pair and not the other."""
    old_result = aliased(Result)
    new_result = aliased(Result)
    statement = (
        select(Scan.id, Scan.uri, old_result.flagged, new_result.flagged, old_result.positive_distance,
               new_result.positive_distance, old_result.threshold, new_result.threshold)
        .join(old_result, and_(old_result.scan_id == Scan.id, old_result.model_version_id == old[0], old_result.exemplar_set_id == old[1]))
        .join(new_result, and_(new_result.scan_id == Scan.id, new_result.model_version_id == new[0], new_result.exemplar_set_id == new[1]))
        .where(old_result.flagged != new_result.flagged)
        .order_by(new_result.flagged.desc(), new_result.positive_distance, Scan.id)
    )
    return [
        ChangedVerdict(scan_id, uri, "newly flagged" if new_flag else "newly cleared", old_distance, new_distance, old_threshold, new_threshold)
        for scan_id, uri, _, new_flag, old_distance, new_distance, old_threshold, new_threshold in session.execute(statement).tuples()
    ]
