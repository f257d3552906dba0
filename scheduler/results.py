"""Format result listings as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict

from db.repository import ResultRow

COLUMNS = (
    "scan_id", "status", "flagged", "score_rule", "score", "threshold", "positive_distance", "negative_distance", "box", "model",
    "uri", "failure_reason",
)


def _values(row: ResultRow) -> dict[str, object]:
    return {
        "scan_id": row.scan_id,
        "status": row.status,
        "flagged": row.flagged,
        "score_rule": row.score_rule,
        "score": row.score,
        "threshold": row.threshold,
        "positive_distance": row.positive_distance,
        "negative_distance": row.negative_distance,
        "box": _box(row),
        "model": row.model_sha256[:12] if row.model_sha256 else None,
        "uri": row.uri,
        "failure_reason": row.failure_reason,
    }


def _box(row: ResultRow) -> str | None:
    # Tile-mode results name the top tile as x0,y0,x1,y1 in scan pixels; whole-scan results have none.
    corners = (row.box_x0, row.box_y0, row.box_x1, row.box_y1)
    return None if any(value is None for value in corners) else ",".join(str(value) for value in corners)


def format_json(rows: Sequence[ResultRow]) -> str:
    records = []
    for row in rows:
        record = asdict(row)
        record["scored_at"] = row.scored_at.isoformat() if row.scored_at else None
        records.append(record)
    return json.dumps(records, indent=2)


def format_csv(rows: Sequence[ResultRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow(_values(row))
    return buffer.getvalue()


def format_table(rows: Sequence[ResultRow]) -> str:
    if not rows:
        return "no scans recorded"
    cells = [[_cell(value) for value in _values(row).values()] for row in rows]
    return format_rows(list(COLUMNS), cells, max_widths={COLUMNS.index("uri"): 60})


def format_rows(header: list[str], cells: list[list[str]], max_widths: dict[int, int] | None = None) -> str:
    """Lay out string cells as aligned columns; long cells keep their informative end."""
    widths = [max(len(title), *(len(line[index]) for line in cells)) if cells else len(title) for index, title in enumerate(header)]
    for index, limit in (max_widths or {}).items():
        widths[index] = min(widths[index], limit)

    lines = ["  ".join(title.ljust(width) for title, width in zip(header, widths)).rstrip()]
    for line in cells:
        lines.append("  ".join(_fit(cell, width) for cell, width in zip(line, widths)).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _fit(text: str, width: int) -> str:
    # Long paths keep their informative end.
    return text.ljust(width) if len(text) <= width else "..." + text[-(width - 3) :]
