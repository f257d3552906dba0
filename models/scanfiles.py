"""Find scan files in folders."""

from __future__ import annotations

from pathlib import Path

SCAN_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff"})


def list_scan_files(directory: str | Path) -> list[Path]:
    """List image files under ``directory`` (recursively, sorted), by suffix, case-insensitive."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"scan folder not found: {directory}")
    return sorted(path for path in directory.rglob("*") if path.suffix.lower() in SCAN_SUFFIXES and path.is_file())
