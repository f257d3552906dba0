"""Threat image projection (TIP): insert an item into a clean scan by multiplying transmissions.

By the Beer-Lambert law a scan's transmission is T = exp(-sum(mu * t)) along each ray, so
an item placed in the beam multiplies the scan's transmission by its own:
``composed = scan * item``, computed in linear transmission space (float, 1.0 = open
beam). The item goes at a random position inside the cargo area, with random scale,
rotation and material thickness (a thickness factor k turns the item's transmission t into
t**k). Items come from isolated item images or from :func:`generate_item`.

Everything here is numpy on (H, W) float arrays; reading and writing files happens in
:mod:`models.tip_io`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# An item pixel counts as part of the item (and inside its box) when it absorbs more than this.
VISIBLE_ABSORPTION = 1e-3

ITEM_KINDS = ("block", "cylinder", "blob")
# Attenuation mu * t across the item, dimensionless: dense metal blocks most of the beam,
# organic material much less.
MATERIAL_ATTENUATION = {"metal": (1.5, 4.0), "organic": (0.3, 1.0)}


@dataclass(frozen=True)
class TipConfig:
    """Random ranges of one projection.

    ``scale`` is the item's longer side as a fraction of the cargo area's height.
    ``thickness`` is the exponent range applied to the item's transmission. Cargo rows and
    columns are those whose mean transmission is below ``1 - open_beam_margin`` times the
    open-beam level (the scan's 99.5th percentile).
    """

    scale: tuple[float, float] = (0.2, 0.5)
    rotation_degrees: float = 180.0
    thickness: tuple[float, float] = (0.5, 2.0)
    open_beam_margin: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        if not 0 < self.thickness[0] <= self.thickness[1]:
            raise ValueError(f"thickness must satisfy 0 < low <= high, got {self.thickness}")
        if not 0 < self.open_beam_margin < 1:
            raise ValueError(f"open_beam_margin must be in (0, 1), got {self.open_beam_margin}")


@dataclass(frozen=True)
class Projection:
    """A composed scan with the item's box (x0, y0, x1, y1, ends exclusive, in scan pixels) and how it was drawn."""

    composed: np.ndarray
    box: tuple[int, int, int, int]
    scale: float
    angle_degrees: float
    thickness: float


def cargo_area(scan: np.ndarray, open_beam_margin: float = 0.05) -> tuple[int, int, int, int]:
    """Find the cargo area (x0, y0, x1, y1, ends exclusive) of an (H, W) transmission scan.

    Rows and columns whose mean transmission falls below the open-beam level by more than
    ``open_beam_margin`` are cargo. The area spans the longest run of such rows and of such
    columns. Raises ValueError when the scan is open beam everywhere.
    """
    _check_scan(scan)
    level = (1.0 - open_beam_margin) * float(np.percentile(scan, 99.5))
    rows = _longest_run(scan.mean(axis=1) < level)
    columns = _longest_run(scan.mean(axis=0) < level)
    if rows is None or columns is None:
        raise ValueError("no cargo area: every row or every column is at the open-beam level")
    return columns[0], rows[0], columns[1], rows[1]


def generate_item(rng: np.random.Generator, size: int = 96, organic_share: float = 0.5) -> tuple[np.ndarray, str, str]:
    """Draw a procedural item: a block, cylinder or irregular blob of metal or organic material.

    ``organic_share`` is the chance of organic material. Returns the item's (size, size)
    transmission image (1.0 where the item is absent), its kind and its material.
    """
    if not 0.0 <= organic_share <= 1.0:
        raise ValueError(f"organic_share must be in [0, 1], got {organic_share}")

    kind = ITEM_KINDS[int(rng.integers(len(ITEM_KINDS)))]
    # Organic from the top of the unit interval, so the default draws what it always drew.
    material = "organic" if rng.random() >= 1.0 - organic_share else "metal"
    attenuation = rng.uniform(*MATERIAL_ATTENUATION[material])
    y, x = np.mgrid[0:size, 0:size] / (size - 1) * 2.0 - 1.0

    if kind == "block":
        half_width, half_height = rng.uniform(0.3, 0.95), rng.uniform(0.2, 0.95)
        thickness = ((np.abs(x) <= half_width) & (np.abs(y) <= half_height)).astype(np.float64)
    elif kind == "cylinder":
        # Seen side-on, the path length through a cylinder follows a circular chord across its width.
        radius, half_length = rng.uniform(0.2, 0.6), rng.uniform(0.4, 0.95)
        thickness = np.sqrt(np.clip(1.0 - (x / radius) ** 2, 0.0, 1.0)) * (np.abs(y) <= half_length)
    else:
        thickness = _blob(rng, x, y)

    return np.exp(-attenuation * thickness), kind, material


def warp_item(item: np.ndarray, scale: float, angle_degrees: float, thickness: float = 1.0) -> np.ndarray:
    """Scale, rotate and thicken an (h, w) item transmission; returns the warped item cropped to its visible pixels.

    Pixels outside the source become 1.0 (no absorption). Sampling is bilinear.
    """
    _check_scan(item)
    if scale <= 0 or thickness <= 0:
        raise ValueError(f"scale and thickness must be positive, got {scale} and {thickness}")

    thick = np.power(item, thickness)
    height, width = thick.shape
    angle = math.radians(angle_degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    out_width = int(math.ceil(scale * (abs(width * cos) + abs(height * sin)))) + 2
    out_height = int(math.ceil(scale * (abs(width * sin) + abs(height * cos)))) + 2

    # Inverse mapping: each output pixel centre rotates back and scales down into the source.
    y, x = np.mgrid[0:out_height, 0:out_width].astype(np.float64)
    x -= (out_width - 1) / 2.0
    y -= (out_height - 1) / 2.0
    source_x = (cos * x + sin * y) / scale + (width - 1) / 2.0
    source_y = (-sin * x + cos * y) / scale + (height - 1) / 2.0
    warped = _bilinear(thick, source_x, source_y, fill=1.0)
    return crop_visible(warped)


def crop_visible(item: np.ndarray) -> np.ndarray:
    """Crop an item transmission to the bounding box of the pixels that absorb more than VISIBLE_ABSORPTION."""
    visible = item < 1.0 - VISIBLE_ABSORPTION
    if not visible.any():
        raise ValueError("the item absorbs nothing visible (all pixels within 1e-3 of full transmission)")
    rows = np.flatnonzero(visible.any(axis=1))
    columns = np.flatnonzero(visible.any(axis=0))
    cropped = item[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1].copy()

    # Pixels that absorb too little to count as the item become exactly 1, so the box contains every changed pixel.
    cropped[cropped >= 1.0 - VISIBLE_ABSORPTION] = 1.0
    return cropped


def compose(scan: np.ndarray, item: np.ndarray, top: int, left: int) -> np.ndarray:
    """Multiply the item's transmission into a copy of the scan at (top, left); the item must fit inside."""
    _check_scan(scan)
    _check_scan(item)
    height, width = item.shape
    if top < 0 or left < 0 or top + height > scan.shape[0] or left + width > scan.shape[1]:
        raise ValueError(f"item of {width} x {height} px at ({left}, {top}) does not fit a {scan.shape[1]} x {scan.shape[0]} scan")

    composed = np.array(scan, dtype=np.float64, copy=True)
    composed[top : top + height, left : left + width] *= item
    return composed


def project(scan: np.ndarray, item: np.ndarray, rng: np.random.Generator, config: TipConfig = TipConfig()) -> Projection:
    """Project one item into a scan at a random position, scale, rotation and thickness inside its cargo area."""
    x0, y0, x1, y1 = cargo_area(scan, config.open_beam_margin)
    scale_fraction = rng.uniform(*config.scale)
    angle = rng.uniform(-config.rotation_degrees, config.rotation_degrees)
    thickness = rng.uniform(*config.thickness)

    # The longer side of the item spans scale_fraction of the cargo height; shrink it until it fits the area.
    factor = scale_fraction * (y1 - y0) / max(item.shape)
    for _ in range(20):
        warped = warp_item(item, factor, angle, thickness)
        if warped.shape[0] <= y1 - y0 and warped.shape[1] <= x1 - x0:
            break
        factor *= 0.8
    else:
        raise ValueError(f"the item does not fit the cargo area of {x1 - x0} x {y1 - y0} px")

    top = int(rng.integers(y0, y1 - warped.shape[0] + 1))
    left = int(rng.integers(x0, x1 - warped.shape[1] + 1))
    composed = compose(scan, warped, top, left)
    box = (left, top, left + warped.shape[1], top + warped.shape[0])
    return Projection(composed=composed, box=box, scale=factor, angle_degrees=angle, thickness=thickness)


def _blob(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # A sum of random Gaussian bumps, thresholded: an irregular, smooth-edged lump.
    field = np.zeros_like(x)
    for _ in range(int(rng.integers(3, 7))):
        centre = rng.uniform(-0.5, 0.5, size=2)
        width = rng.uniform(0.15, 0.4)
        field += np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * width**2))
    mask = field > 0.5 * field.max()
    texture = 0.8 + 0.2 * rng.random(x.shape)
    return mask * texture


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray, fill: float) -> np.ndarray:
    height, width = image.shape
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = x - x0
    fy = y - y0

    def sample(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        inside = (rows >= 0) & (rows < height) & (columns >= 0) & (columns < width)
        values = np.full(rows.shape, fill, dtype=np.float64)
        values[inside] = image[rows[inside], columns[inside]]
        return values

    top = sample(y0, x0) * (1 - fx) + sample(y0, x0 + 1) * fx
    bottom = sample(y0 + 1, x0) * (1 - fx) + sample(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def _longest_run(mask: np.ndarray) -> tuple[int, int] | None:
    best: tuple[int, int] | None = None
    start = None
    for index, value in enumerate(np.append(mask, False)):
        if value and start is None:
            start = index
        elif not value and start is not None:
            if best is None or index - start > best[1] - best[0]:
                best = (start, index)
            start = None
    return best


def _check_scan(array: np.ndarray) -> None:
    if not isinstance(array, np.ndarray) or array.ndim != 2 or array.size == 0:
        raise ValueError(f"expected a non-empty (H, W) transmission array, got {getattr(array, 'shape', type(array))}")
    if np.isnan(array).any() or array.min() < 0 or array.max() > 1:
        raise ValueError("transmission values must lie in [0, 1]")
