"""Map job URIs to files, keeping every read inside the configured scan root."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from models.imaging import ScanReadError


def resolve_scan_path(uri: str, scan_root: Path | None) -> Path:
    """Turn a path or ``file://`` URI into a file path; raises :class:`ScanReadError` outside ``scan_root``.

    Symbolic links are resolved before the check, so a link inside the root that points
    outside it is rejected too. Relative paths are taken relative to the scan root.
    """
    if not isinstance(uri, str) or not uri:
        raise ScanReadError("job has no scan URI")

    parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
    elif parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # one letter: a Windows drive
        path = Path(uri)
    else:
        raise ScanReadError(f"unsupported URI scheme {parsed.scheme!r}; expected a file path or file:// URI")

    if scan_root is None:
        return path.resolve()

    root = scan_root.resolve()
    resolved = (root / path).resolve() if not path.is_absolute() else path.resolve()
    if not resolved.is_relative_to(root):
        raise ScanReadError(
            f"path is outside the scan root {root} (symbolic links are followed before this check); "
            "set CARGOSCAN_SCAN_ROOT to a folder that contains the real files"
        )
    return resolved
