"""Shared helpers of the benchmark scripts: timing, load averages, tables and test fixtures.

The real scans live outside the repository, in ../shared/data/xray relative to its root;
sections that need them are skipped when that folder is absent.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO_ROOT.parent / "shared" / "data" / "xray"
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# A private Redis database number, so the benchmark's queues never mix with others' keys.
REDIS_URL = "redis://127.0.0.1:6379/13"


def load_average() -> tuple[float, float, float]:
    """Return the 1-, 5- and 15-minute load averages from /proc/loadavg."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def format_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{value:.2f}" for value in load)


@dataclass
class Section:
    """One benchmark section's table: a title, column names, rows, notes and the load around it."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0

    def add(self, *cells: object) -> None:
        self.rows.append([_cell(cell) for cell in cells])

    def note(self, text: str) -> None:
        self.notes.append(text)

    def render(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append(
            f"load average (1/5/15 min) before {format_load(self.load_before)}, after {format_load(self.load_after)}; "
            f"section took {self.seconds:.0f} s"
        )
        lines.append("")
        if self.rows:
            lines.append("| " + " | ".join(self.columns) + " |")
            lines.append("|" + "|".join(" --- " for _ in self.columns) + "|")
            lines.extend("| " + " | ".join(row) + " |" for row in self.rows)
            lines.append("")
        lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines).rstrip() + "\n"


@contextmanager
def section(title: str, columns: list[str]):
    """Time a section and record the load average before and after it."""
    result = Section(title=title, columns=columns, load_before=load_average())
    started = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - started
        result.load_after = load_average()


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def percentile(values: list[float], fraction: float) -> float:
    """Return the ``fraction`` quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    return float(np.quantile(np.asarray(values, dtype=np.float64), fraction))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def resident_memory_bytes(pid: int | None = None) -> int:
    """Return a process's resident set size from /proc/PID/status (this process by default)."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status")


def real_scan_sets(limit: int | None = None) -> dict[str, list[Path]]:
    """Return the sixray and cargo scan files, ``limit`` of each at most; empty without the data."""
    from models.scanfiles import list_scan_files

    if not DATA_ROOT.is_dir():
        return {}
    sets = {name: list_scan_files(DATA_ROOT / name) for name in ("sixray", "cargo")}
    if limit is not None:
        sets = {name: _spread(paths, limit) for name, paths in sets.items()}
    return sets


def _spread(paths: list[Path], limit: int) -> list[Path]:
    # Evenly spaced over the sorted list, so a subset mixes every subfolder (positives and
    # negatives, the cargo categories) in proportion.
    if len(paths) <= limit:
        return paths
    positions = np.linspace(0, len(paths) - 1, limit).round().astype(int)
    return [paths[position] for position in positions]


def make_checkpoint(folder: Path, image_size: int) -> Path:
    """Save a randomly initialised embedder; throughput does not depend on the weights."""
    from models.checkpoint import save_checkpoint
    from models.embedder import SiameseEmbedder
    from models.preprocess import PreprocessConfig

    torch.manual_seed(0)
    path = folder / f"bench-{image_size}.pt"
    save_checkpoint(path, SiameseEmbedder().eval(), PreprocessConfig(image_size=image_size), threshold=1.0, metadata={"purpose": "benchmark"})
    return path


def enroll_exemplars(database, checkpoint: Path, positives: list[Path], negatives: list[Path]) -> None:
    from scheduler.enroll import enroll

    enroll(database.sessions, checkpoint, positives, negatives, name="benchmark")


@contextmanager
def temporary_database(folder: Path, kind: str):
    """Yield a migrated database: a SQLite file in ``folder`` or a private PostgreSQL database, dropped afterwards."""
    from db.database import open_database

    if kind == "sqlite":
        database = open_database(f"sqlite:///{folder / f'bench-{uuid.uuid4().hex[:8]}.db'}")
        try:
            yield database
        finally:
            database.dispose()
        return

    import psycopg

    name = f"cargoscan_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    database = open_database(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    try:
        yield database
    finally:
        database.dispose()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_url(database) -> str:
    return database.engine.url.render_as_string(hide_password=False)


def postgres_available() -> bool:
    return port_open("127.0.0.1", 5432)


def redis_available() -> bool:
    return port_open("127.0.0.1", 6379)
