"""Cut a scan into overlapping square tiles, and map tile boxes back to scan pixels.

A cargo scan is thousands of pixels wide while a concealed item covers a few percent of it,
so shrinking the whole scan to one network input all but erases the item. Tile mode scales
the scan to a fixed height instead (keeping its aspect ratio), cuts it into tiles of
``tile_size`` every ``stride`` pixels, and embeds every tile. The last row and column of
tiles are aligned with the bottom and right edges, so every scan pixel lies in some tile.
A scan narrower than one tile after scaling is padded with open beam on the right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.imaging import DecodedScan
from models.intensity import INTENSITIES, Intensity, apply_intensity

# A scan that makes more tiles than this (one about 350 times as wide as it is tall, at the
# default settings) is rejected with a reason instead of allocating an unbounded tile batch.
MAX_TILES_PER_SCAN = 20_000

_ROUNDING = 1e-6


@dataclass(frozen=True)
class TileGeometry:
    """Tile settings: scans are scaled to ``scan_height`` px, then cut into ``tile_size`` tiles every ``stride`` px."""

    scan_height: int = 448
    tile_size: int = 112
    stride: int = 56
    fill: float = 1.0
    intensity: Intensity = "linear"

    def __post_init__(self) -> None:
        if not 16 <= self.tile_size <= self.scan_height:
            raise ValueError(f"tile_size must be between 16 and scan_height ({self.scan_height}), got {self.tile_size}")
        if not 1 <= self.stride <= self.tile_size:
            raise ValueError(f"stride must be between 1 and tile_size ({self.tile_size}), got {self.stride}")
        if self.intensity not in INTENSITIES:
            raise ValueError(f"intensity must be one of {INTENSITIES}, got {self.intensity!r}")


@dataclass(frozen=True)
class ScanTiles:
    """The tiles of one scan.

    ``images`` is (T, C, S, S) float32 in [0, 1] with C 1 for grey scans and 3 for colour.
    ``boxes`` is (T, 4) int64: each tile's (x0, y0, x1, y1) in the scan's full-size pixels,
    ends exclusive, padding left out. ``grid`` is (rows, columns), tiles in row-major order.
    """

    images: torch.Tensor
    boxes: np.ndarray
    grid: tuple[int, int]
    scale: float


def tile_offsets(length: int, tile_size: int, stride: int) -> list[int]:
    """Return tile start positions along one axis: every ``stride`` px, plus one flush with the far edge."""
    if length <= tile_size:
        return [0]

    offsets = list(range(0, length - tile_size + 1, stride))
    if offsets[-1] + tile_size < length:
        offsets.append(length - tile_size)
    return offsets


def scaled_width(width: int, height: int, geometry: TileGeometry) -> int:
    """Return a ``width`` x ``height`` scan's width after scaling it to ``geometry.scan_height``."""
    return max(1, round(width * geometry.scan_height / height))


def tile_count(width: int, height: int, geometry: TileGeometry) -> int:
    """Return how many tiles a ``width`` x ``height`` scan is cut into."""
    columns = len(tile_offsets(scaled_width(width, height, geometry), geometry.tile_size, geometry.stride))
    rows = len(tile_offsets(geometry.scan_height, geometry.tile_size, geometry.stride))
    return rows * columns


def cut_tiles(scan: DecodedScan, geometry: TileGeometry) -> ScanTiles:
    """Scale a decoded scan to the tile height and cut it into tiles; raises ValueError past MAX_TILES_PER_SCAN."""
    count = tile_count(scan.width, scan.height, geometry)
    if count > MAX_TILES_PER_SCAN:
        raise ValueError(
            f"a {scan.width} x {scan.height} px scan makes {count} tiles, more than the limit of {MAX_TILES_PER_SCAN}; "
            "split the scan or use a larger stride"
        )

    image = _channels_first(scan.pixels)
    width = scaled_width(scan.width, scan.height, geometry)
    # Resizing averages transmissions, as a coarser detector would, before any logarithm.
    scaled = apply_intensity(_resize(image, geometry.scan_height, width), geometry.intensity)
    if width < geometry.tile_size:
        canvas = torch.full((scaled.shape[0], geometry.scan_height, geometry.tile_size), geometry.fill)
        canvas[:, :, :width] = scaled
        scaled = canvas

    rows = tile_offsets(geometry.scan_height, geometry.tile_size, geometry.stride)
    columns = tile_offsets(width, geometry.tile_size, geometry.stride)
    size = geometry.tile_size
    tiles = torch.stack([scaled[:, top : top + size, left : left + size] for top in rows for left in columns])

    scale = geometry.scan_height / scan.height
    scaled_boxes = [(left, top, min(left + size, width), top + size) for top in rows for left in columns]
    boxes = np.array([to_scan_box(box, scale, scan.width, scan.height) for box in scaled_boxes], dtype=np.int64)
    return ScanTiles(images=tiles.contiguous(), boxes=boxes, grid=(len(rows), len(columns)), scale=scale)


def to_scan_box(box: tuple[float, float, float, float], scale: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Map a box from scaled pixels to the scan's pixels, widened to whole pixels and clipped to the scan."""
    x0, y0, x1, y1 = box
    # The tolerance keeps a coordinate that is whole up to rounding (12 * 0.37 / 0.37) on its pixel.
    return (
        max(0, math.floor(x0 / scale + _ROUNDING)),
        max(0, math.floor(y0 / scale + _ROUNDING)),
        min(width, math.ceil(x1 / scale - _ROUNDING)),
        min(height, math.ceil(y1 / scale - _ROUNDING)),
    )


def box_overlap(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Return the intersection area of every box in (N, 4) ``first`` with every box in (M, 4) ``second``; (N, M)."""
    first = np.asarray(first, dtype=np.int64).reshape(-1, 4)
    second = np.asarray(second, dtype=np.int64).reshape(-1, 4)
    width = np.minimum(first[:, None, 2], second[None, :, 2]) - np.maximum(first[:, None, 0], second[None, :, 0])
    height = np.minimum(first[:, None, 3], second[None, :, 3]) - np.maximum(first[:, None, 1], second[None, :, 1])
    return np.clip(width, 0, None) * np.clip(height, 0, None)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Return the area of each (x0, y0, x1, y1) box in (N, 4) ``boxes``."""
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _channels_first(pixels: np.ndarray) -> torch.Tensor:
    if pixels.ndim == 2:
        return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)
    raise ValueError(f"expected pixels of shape (H, W) or (H, W, 3), got {tuple(pixels.shape)}")


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if image.shape[-2:] == (height, width):
        return image.clone()
    # Antialiasing matters when shrinking a 4000 px scan eightfold: without it thin item
    # edges alias into noise.
    resized = F.interpolate(image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False)[0]
    return resized.clamp_(0.0, 1.0)


# A tile counts as on an item when they share at least half of the smaller of the two
# areas: the item fills much of the tile, or the tile contains much of the item.
ON_ITEM_FRACTION = 0.5


def item_coverage(tile_boxes: np.ndarray, item_boxes: np.ndarray) -> np.ndarray:
    """Return, per tile, the largest overlap with any item as a fraction of the smaller area; (T,), 0 without items."""
    tile_boxes = np.asarray(tile_boxes, dtype=np.int64).reshape(-1, 4)
    item_boxes = np.asarray(item_boxes, dtype=np.int64).reshape(-1, 4)
    if len(item_boxes) == 0:
        return np.zeros(len(tile_boxes))

    overlap = box_overlap(tile_boxes, item_boxes)
    smaller = np.minimum(box_area(tile_boxes)[:, None], box_area(item_boxes)[None, :])
    return (overlap / np.maximum(smaller, 1)).max(axis=1)
