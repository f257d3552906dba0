"""Engines and sessions for SQLite (the default) and PostgreSQL.

Create engines inside each worker process after it forks: a pooled connection shared across
a fork corrupts both processes' sessions.
"""

from __future__ import annotations

import re

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DATABASE_URL = "sqlite:///cargoscan.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> str:
    """Use the psycopg 3 driver for plain ``postgresql://`` and ``postgres://`` URLs."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)


_PASSWORD_IN_URL = re.compile(r"(\w+://[^:/@\s]*):[^@\s]*@")


def redact_url(text: str) -> str:
    """Mask the password of every URL in ``text``, for logs and error messages."""
    return _PASSWORD_IN_URL.sub(r"\1:***@", text)


def make_engine(url: str = DEFAULT_DATABASE_URL) -> Engine:
    """Create an engine; SQLite gets WAL mode, a busy timeout and enforced foreign keys."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    return create_engine(url, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _configure_sqlite(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
