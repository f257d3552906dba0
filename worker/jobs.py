"""Validate job messages: ``{"scan_id": int, "uri": str}``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from worker.pipeline import ScanJob

logger = logging.getLogger(__name__)


def parse_job(kwargs: dict[str, Any]) -> ScanJob:
    """Build a job from message keyword arguments; raises ValueError naming what is wrong."""
    scan_id = kwargs.get("scan_id")
    uri = kwargs.get("uri")
    if isinstance(scan_id, bool) or not isinstance(scan_id, int) or scan_id < 1:
        raise ValueError(f"expected a positive integer scan_id, got {scan_id!r}")
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"expected a non-empty string uri, got {uri!r}")
    return ScanJob(scan_id=scan_id, uri=uri)


def parse_requests(requests: Iterable[Any]) -> list[ScanJob]:
    """Turn buffered Celery requests into jobs, logging and dropping malformed messages."""
    jobs = []
    for request in requests:
        try:
            jobs.append(parse_job(dict(request.kwargs or {})))
        except (ValueError, TypeError) as error:
            logger.warning("dropping malformed job message %s: %s", request.id, error)
    return jobs
