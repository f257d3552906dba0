"""Group near-duplicate images into families, so that a split never separates copies.

Public X-ray sets hold augmented copies of one scan (mirrored, flipped, rotated or zoomed
on the same canvas). A copy on each side of a train/test split lets a model score well by
recognising the scan rather than the item. Three rules link two images into one family:

- **thumbnail**: the high-pass grey thumbnails of the two images correlate at
  ``similarity`` or more, directly or after a horizontal or vertical mirror or a 180 degree
  turn of one of them, and their widths and heights agree within ``size_tolerance``;
- **stem**: their file names agree once an augmentation suffix (``_flip``, ``-mirrored``,
  ``_aug3``, ``_rot90``, ``_copy``) is removed, or their bytes are identical;
- **same size** (opt-in): their pixel sizes are identical. Augmentations that rotate or
  zoom inside the canvas keep its size but defeat the thumbnail rule. The rule merges
  unrelated scans when many share one size, as scanner output often does, so it is off
  unless requested.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

THUMBNAIL_SIZE = 32
DEFAULT_SIMILARITY = 0.9
DEFAULT_SIZE_TOLERANCE = 0.1

_AUGMENTATION_SUFFIX = re.compile(
    r"(?:[-_ ](?:flip(?:ped)?|mirror(?:ed)?|aug(?:mented)?|rot(?:ated)?|copy)[-_ ]?\d*)+$", re.IGNORECASE
)


@dataclass(frozen=True)
class FamilyRules:
    """Rules that link two images into one family, with the thumbnail rule's limits."""

    similarity: float = DEFAULT_SIMILARITY
    size_tolerance: float = DEFAULT_SIZE_TOLERANCE
    same_size: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.similarity <= 1.0:
            raise ValueError(f"similarity must be in (0, 1], got {self.similarity}")
        if self.size_tolerance < 0:
            raise ValueError(f"size_tolerance must be non-negative, got {self.size_tolerance}")


@dataclass(frozen=True)
class ImageSignature:
    """Per-image values the rules compare: pixel size, normalised thumbnail, name stem and content hash."""

    width: int
    height: int
    thumbnail: np.ndarray
    stem: str
    sha256: str


def augmentation_stem(path: str | os.PathLike[str]) -> str:
    """Return the file name without extension and without trailing augmentation suffixes."""
    stem = Path(path).stem
    stripped = _AUGMENTATION_SUFFIX.sub("", stem)
    return (stripped or stem).lower()


def image_signature(path: str | os.PathLike[str]) -> ImageSignature:
    """Read the size, a high-pass grey thumbnail and the content hash of one image file."""
    data = Path(path).read_bytes()
    with Image.open(path) as image:
        width, height = image.size
        # JPEG draft mode decodes at a reduced scale, which makes thumbnails of large scans cheap.
        image.draft("L", (THUMBNAIL_SIZE * 4, THUMBNAIL_SIZE * 4))
        grey = _to_grey(image).resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BILINEAR)

    return ImageSignature(
        width=width,
        height=height,
        thumbnail=normalised_thumbnail(grey),
        stem=augmentation_stem(path),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _to_grey(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I"):
        # Pillow clips 16-bit samples above 255 when converting to "L", so scale by the maximum instead.
        pixels = np.asarray(image, dtype=np.float64)
        peak = pixels.max() or 1.0
        return Image.fromarray(np.round(pixels / peak * 255.0).astype(np.uint8))

    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent pixels are open beam, as in the scan decoder.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("L")
    return image.convert("L")


def normalised_thumbnail(grey: Image.Image) -> np.ndarray:
    """Subtract a blurred copy (which removes the layout every scan shares), then scale to zero mean and unit norm."""
    pixels = np.asarray(grey, dtype=np.float64)
    blurred = np.asarray(grey.filter(ImageFilter.GaussianBlur(grey.width / 8)), dtype=np.float64)
    detail = pixels - blurred
    detail -= detail.mean()
    norm = np.linalg.norm(detail)
    return detail / norm if norm > 0 else detail


def find_families(signatures: Sequence[ImageSignature], rules: FamilyRules = FamilyRules()) -> list[int]:
    """Link images by the rules and return a family number per image, numbered by first appearance."""
    count = len(signatures)
    parent = list(range(count))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    def link(first: int, second: int) -> None:
        parent[root(first)] = root(second)

    for first, second in _thumbnail_links(signatures, rules):
        link(first, second)

    for key in ("stem", "sha256") + (("size",) if rules.same_size else ()):
        seen: dict[object, int] = {}
        for index, signature in enumerate(signatures):
            value = (signature.width, signature.height) if key == "size" else getattr(signature, key)
            if value in seen:
                link(index, seen[value])
            else:
                seen[value] = index

    numbers: dict[int, int] = {}
    return [numbers.setdefault(root(index), len(numbers)) for index in range(count)]


def _thumbnail_links(signatures: Sequence[ImageSignature], rules: FamilyRules) -> list[tuple[int, int]]:
    if len(signatures) < 2:
        return []

    thumbnails = np.stack([signature.thumbnail for signature in signatures])
    flat = thumbnails.reshape(len(signatures), -1)
    similarity = flat @ flat.T
    for variant in (thumbnails[:, :, ::-1], thumbnails[:, ::-1, :], thumbnails[:, ::-1, ::-1]):
        similarity = np.maximum(similarity, flat @ variant.reshape(len(signatures), -1).T)

    widths = np.log([signature.width for signature in signatures])
    heights = np.log([signature.height for signature in signatures])
    close_size = (np.abs(widths[:, None] - widths[None, :]) <= rules.size_tolerance) & (
        np.abs(heights[:, None] - heights[None, :]) <= rules.size_tolerance
    )

    linked = np.triu((similarity >= rules.similarity) & close_size, k=1)
    return [(int(first), int(second)) for first, second in zip(*np.nonzero(linked))]
