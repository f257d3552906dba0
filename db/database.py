"""Open a database by URL, migrated to the newest schema."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_session_factory
from db.migrate import upgrade


@dataclass(frozen=True)
class Database:
    engine: Engine
    sessions: sessionmaker[Session]

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str, migrate: bool = True) -> Database:
    """Create the engine and session factory; apply pending migrations unless ``migrate`` is false."""
    engine = make_engine(url)
    if migrate:
        upgrade(engine)
    return Database(engine=engine, sessions=make_session_factory(engine))
