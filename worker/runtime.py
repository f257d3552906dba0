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
    current = _runtime.screener
    pair_changed = selection.exemplar_set_id != current.exemplar_set_id
    stored = None if settings.threshold is not None else _stored_threshold(selection)
    if pair_changed:
        logger.info(
            "switching to model %s, exemplar set %d (was %s, %d)", selection.model_sha256[:12], selection.exemplar_set_id,
            current.model_sha256[:12], current.exemplar_set_id,
        )
    elif stored is not None and stored != current.threshold:
        logger.info(
            "threshold of model %s changed from %.4f to %.4f (recalibrated); exemplar set %d unchanged",
            current.model_sha256[:12], current.threshold, stored, current.exemplar_set_id,
        )
    else:
        return _runtime

    _runtime.screener = build_screener(_runtime.database.sessions, settings, selection, reuse=current)
    return _runtime


def _stored_threshold(selection) -> float:
    # A recalibrated threshold is picked up between batches like a new exemplar set.
    with _runtime.database.sessions() as session:
        return session.get(ModelVersion, selection.model_version_id).threshold
