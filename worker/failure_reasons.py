"""Map the free-text reason of a failed scan to one of a fixed set of metric labels.

The stored reason can contain paths, sizes and library messages, which must not become
label values because each distinct value is a new time series. The patterns follow the
messages of ``models.imaging.load_scan``, ``worker.scanpaths.resolve_scan_path`` and
``worker.attempts``, which fails a scan whose deliveries kept crashing the worker.
``tests/worker/test_metrics_reasons.py`` produces those messages with the real code, so a
reworded message fails there instead of turning into ``other``.
"""

from __future__ import annotations

import re

EMPTY = "empty"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
NOT_FOUND = "not_found"
UNREADABLE = "unreadable"
OUTSIDE_ROOT = "outside_root"
TOO_LARGE = "too_large"
UNSUPPORTED_FORMAT = "unsupported_format"
INVALID_URI = "invalid_uri"
INTERNAL = "internal"
OTHER = "other"

FAILURE_REASONS = (
    EMPTY, TRUNCATED, CORRUPT, NOT_FOUND, UNREADABLE, OUTSIDE_ROOT, TOO_LARGE, UNSUPPORTED_FORMAT, INVALID_URI, INTERNAL, OTHER,
)

# The first matching rule wins, so the truncated case comes before the general corrupt one.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^internal error|^screening did not finish"), INTERNAL),
    (re.compile(r"^empty file|^image has no pixels"), EMPTY),
    (re.compile(r"^file not found"), NOT_FOUND),
    (re.compile(r"^file cannot be read|^not a regular file"), UNREADABLE),
    (re.compile(r"outside the scan root"), OUTSIDE_ROOT),
    (re.compile(r"over the (pixel )?limit"), TOO_LARGE),
    (re.compile(r"^unsupported (image format|pixel mode)"), UNSUPPORTED_FORMAT),
    (re.compile(r"^unsupported URI scheme|^job has no scan URI"), INVALID_URI),
    (re.compile(r"^truncated or corrupt image data:.*truncat", re.IGNORECASE), TRUNCATED),
    (re.compile(r"^truncated or corrupt image data|^not a readable image file|outside 0\.\.65535|NaN or infinite"), CORRUPT),
)


def failure_reason_label(reason: str | None) -> str:
    """Return the label in :data:`FAILURE_REASONS` for a stored failure reason."""
    if not reason:
        return OTHER

    for pattern, label in _RULES:
        if pattern.search(reason):
            return label
    return OTHER
