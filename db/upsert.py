"""Dialect-specific INSERT for upserts (``ON CONFLICT``), on PostgreSQL and SQLite."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def dialect_insert(session: Session, table):
    """Return an ``insert()`` that supports ``on_conflict_do_update`` for the session's database."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"upserts support PostgreSQL and SQLite, not {dialect}")
