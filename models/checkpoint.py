"""Checkpoint files: the embedder's weights plus the settings needed to use them.

A checkpoint is identified by the sha256 of its file (the model version). It stores its
preprocessing settings and decision threshold, so every stage that loads it preprocesses
scans the same way. Files are read with ``weights_only=True``, so loading never runs code.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.embedder import SiameseEmbedder
from models.preprocess import PreprocessConfig

FORMAT = "cargoscan-checkpoint"
FORMAT_VERSION = 1
DEFAULT_THRESHOLD = 0.5


class CheckpointError(Exception):
    """A checkpoint file that is missing, unsafe, or not a CargoScan checkpoint."""


@dataclass
class Checkpoint:
    """A loaded checkpoint; ``version`` is the sha256 of the file it came from."""

    embedder: SiameseEmbedder
    preprocess: PreprocessConfig
    threshold: float
    version: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hash a file in 1 MiB blocks; returns the hex digest."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    embedder: SiameseEmbedder,
    preprocess: PreprocessConfig,
    threshold: float = DEFAULT_THRESHOLD,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Write a checkpoint atomically (temporary file, then rename); returns its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": {key: value.detach().cpu() for key, value in embedder.state_dict().items()},
        "preprocess": preprocess.to_dict(),
        "threshold": float(threshold),
        "metadata": metadata or {},
    }

    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        # Serialising to memory gives the archive a fixed inner folder name. torch.save to a
        # path names it after the random temporary file, so equal weights hashed differently.
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        with open(temporary, "wb") as stream:
            stream.write(buffer.getvalue())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return file_sha256(path)


def load_checkpoint(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> Checkpoint:
    """Load a checkpoint onto ``device`` in eval mode; raises :class:`CheckpointError` with the cause."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")

    version = file_sha256(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {path} is not a readable torch file (expected the zip format that torch.save writes)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"refusing to load {path}: it contains objects other than tensors and plain values "
            f"(weights_only=True rejected it: {str(error).splitlines()[0]})"
        ) from error
    except Exception as error:
        # Besides RuntimeError, EOFError and OSError, torch's weights-only unpickler raises
        # whatever its parser hits on bytes that are not a pickle (IndexError for a text file).
        raise CheckpointError(f"checkpoint {path} is not a readable torch file: {error}") from error

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a CargoScan checkpoint (missing format marker {FORMAT!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('format_version')}, this CargoScan reads {FORMAT_VERSION}"
        )

    embedder = SiameseEmbedder()
    try:
        embedder.load_state_dict(payload["state_dict"], strict=True)
        preprocess = PreprocessConfig.from_dict(payload["preprocess"])
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path} is incomplete or does not match ResNet-18: {error}") from error

    embedder.to(device).eval()
    return Checkpoint(
        embedder=embedder,
        preprocess=preprocess,
        threshold=float(payload.get("threshold", DEFAULT_THRESHOLD)),
        version=version,
        path=path,
        metadata=dict(payload.get("metadata", {})),
    )
