"""Retry database work through short outages, with exponential backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from db.engine import redact_url

logger = logging.getLogger(__name__)
T = TypeVar("T")


class DatabaseUnavailable(Exception):
    """The database stayed unreachable through every retry."""


def run_with_db_retry(work: Callable[[], T], attempts: int, initial_delay_s: float, max_delay_s: float = 8.0) -> T:
    """Run ``work``, retrying on connection-level database errors; raises :class:`DatabaseUnavailable`."""
    delay = initial_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except DBAPIError as error:
            transient = isinstance(error, OperationalError) or error.connection_invalidated
            if not transient:
                raise
            message = redact_url(str(error.orig or error)).splitlines()[0]
            if attempt == attempts:
                raise DatabaseUnavailable(f"database unavailable after {attempts} attempts: {message}") from error
            logger.warning("database write failed, retrying in %.1f s (attempt %d of %d): %s", delay, attempt, attempts, message)
            time.sleep(delay)
            delay = min(delay * 2.0, max_delay_s)
    raise AssertionError("unreachable")
