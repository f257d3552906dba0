"""Per-process worker state, built lazily on the first batch so it is created after the fork."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from db.database import Database, open_database
from db.schema import ModelVersion
from worker.screener import Screener, build_screener, resolve_selection
from worker.settings import get_settings

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    database: Database
    screener: Screener
    pid: int


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """Return this process's runtime, building it on first use or after a fork.

    Between batches it checks which model version and exemplar set are active, and loads
    the new pair when an operator has activated another one, so workers need no restart.
    """
    global _runtime
    settings = get_settings()
    if _runtime is None or _runtime.pid != os.getpid():
        database = open_database(settings.database_url)
        screener = build_screener(database.sessions, settings)
        _runtime = Runtime(database=database, screener=screener, pid=os.getpid())
        return _runtime

    selection = resolve_selection(_runtime.database.sessions, settings)
    threshold_changed = settings.threshold is None and _stored_threshold(selection) != _runtime.screener.threshold
    if selection.exemplar_set_id != _runtime.screener.exemplar_set_id or threshold_changed:
        logger.info(
            "switching to model %s, exemplar set %d (was %s, %d)", selection.model_sha256[:12], selection.exemplar_set_id,
            _runtime.screener.model_sha256[:12], _runtime.screener.exemplar_set_id,
        )
        _runtime.screener = build_screener(_runtime.database.sessions, settings, selection, reuse=_runtime.screener)
    return _runtime


def _stored_threshold(selection) -> float:
    # A recalibrated threshold is picked up between batches like a new exemplar set.
    with _runtime.database.sessions() as session:
        return session.get(ModelVersion, selection.model_version_id).threshold
