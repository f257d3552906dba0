"""Labelled image sets for the commands: a split of a manifest, or a positive and a negative folder."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.splits import ManifestError, read_manifest, select_split


class SetError(ValueError):
    """Labelled images that cannot be gathered as requested."""


@dataclass(frozen=True)
class LabelledSet:
    """Positive and negative paths, with a family id per path (positives first) when a manifest gave them."""

    positives: list[Path]
    negatives: list[Path]
    families: list[str] | None = None
    source: str = ""

    @property
    def paths(self) -> list[Path]:
        return self.positives + self.negatives

    @property
    def labels(self) -> np.ndarray:
        return np.array([1] * len(self.positives) + [0] * len(self.negatives), dtype=np.int64)


def from_manifest(manifest: Path, split: str) -> LabelledSet:
    """Gather one split of a manifest, positives first; raises :class:`SetError` naming the problem."""
    try:
        entries = select_split(read_manifest(manifest), split)
    except ManifestError as error:
        raise SetError(str(error)) from error

    positives = [entry for entry in entries if entry.label == "positive"]
    negatives = [entry for entry in entries if entry.label == "negative"]
    missing = [str(entry.path) for entry in positives + negatives if not entry.path.is_file()]
    if missing:
        raise SetError(f"{len(missing)} files listed in {manifest} are missing, for example {missing[0]}")
    return LabelledSet(
        positives=[entry.path for entry in positives],
        negatives=[entry.path for entry in negatives],
        families=[entry.family for entry in positives + negatives],
        source=f"{manifest} split {split!r}",
    )


def from_folders(positive: Path | None, negative: Path | None) -> LabelledSet:
    """Gather every scan file under a positive and a negative folder."""
    from models.scanfiles import list_scan_files

    found = []
    for folder in (positive, negative):
        if folder is None:
            found.append([])
            continue
        try:
            found.append(list_scan_files(folder))
        except NotADirectoryError as error:
            raise SetError(str(error)) from error
        if not found[-1]:
            raise SetError(f"no scan files (.jpg, .jpeg, .png, .tif, .tiff) under {folder}")
    return LabelledSet(positives=found[0], negatives=found[1], source=f"folders {positive} and {negative}")


def resolve(manifest: Path | None, split: str | None, positive: Path | None, negative: Path | None, what: str) -> LabelledSet:
    """Take the set from ``manifest`` and ``split``, or else from the folders; exactly one source is allowed."""
    if manifest is not None and (positive is not None or negative is not None):
        raise SetError(f"give the {what} images either as --manifest with a split or as folders, not both")
    if manifest is not None:
        return from_manifest(manifest, split or "train")
    if positive is None and negative is None:
        raise SetError(f"no {what} images: pass --manifest FILE --split NAME, or --positive and --negative folders")
    return from_folders(positive, negative)


def optional_split(manifest: Path | None, split: str | None) -> LabelledSet | None:
    """Gather a split that may be absent: None for no manifest, split 'none', or a split the manifest lacks."""
    if manifest is None or split in (None, "none"):
        return None
    try:
        return from_manifest(manifest, split)
    except SetError as error:
        if "has no images in split" in str(error):
            return None
        raise


def embed_paths(checkpoint, paths: list[Path], device: torch.device, batch_size: int = 32,
                max_image_pixels: int | None = None) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """Decode and embed files in batches; returns (K, 512) embeddings, the kept indices and the skipped files with reasons."""
    from models.inference import decode_many, embed_images

    limit = {"max_image_pixels": max_image_pixels} if max_image_pixels else {}
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    parts: list[torch.Tensor] = []
    with ThreadPoolExecutor(max_workers=4) as executor:
        for start in range(0, len(paths), batch_size):
            decoded = decode_many(paths[start : start + batch_size], checkpoint.preprocess, executor, **limit)
            good = [index for index, item in enumerate(decoded) if item.image is not None]
            skipped += [(str(paths[start + index]), item.error or "") for index, item in enumerate(decoded) if item.image is None]
            if good:
                images = torch.stack([decoded[index].image for index in good])
                parts.append(embed_images(checkpoint.embedder, images, checkpoint.preprocess, device))
                kept += [start + index for index in good]

    embeddings = torch.cat(parts) if parts else torch.zeros((0, 512))
    return embeddings, kept, skipped
