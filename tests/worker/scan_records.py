"""Register scans and read their progress: the database side shared by the worker tests."""

from __future__ import annotations

from sqlalchemy import select

from db import repository
from db.schema import SCAN_QUEUED, Scan


def register(database, paths) -> dict[str, int]:
    """Record scans for ``paths``; returns uri -> scan id."""
    with database.sessions.begin() as session:
        recorded = repository.register_scans(session, [str(path) for path in paths])
    return {uri: scan_id for uri, (scan_id, _) in recorded.items()}


def settled_count(database, scan_ids) -> int:
    """Count the scans among ``scan_ids`` that are no longer queued."""
    with database.sessions() as session:
        statuses = session.execute(select(Scan.status).where(Scan.id.in_(list(scan_ids)))).scalars().all()
    return sum(1 for status in statuses if status != SCAN_QUEUED)


def all_settled(database, scan_ids) -> bool:
    """Return whether every scan among ``scan_ids`` exists and is no longer queued."""
    return settled_count(database, scan_ids) == len(list(scan_ids))
