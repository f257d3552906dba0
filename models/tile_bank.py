"""The labelled tiles that tile training draws its pairs from.

Tiles on an item form the positive class and tiles that touch no item the negative class.
Tiles that only graze an item are left out. Besides the tiles of the training scans, the
bank contains item tiles projected into its clean scans (threat image projection), drawn
anew every epoch. Each projected tile remembers the tile at the same place of the clean
scan it was projected into, so training can pair an item with its own background.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.imaging import DecodedScan, ScanReadError, load_scan
from models.inference import decode_target
from models.preprocess import PreprocessConfig
from models.tiling import ON_ITEM_FRACTION, cut_tiles, item_coverage
from models.tip import TipConfig, generate_item, project

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class LabelledScan:
    """A training or validation scan: its file, its label, and its item boxes in scan pixels (positives).

    ``material`` is the projected item's material ("metal", "organic") where the manifest
    records it, so evaluation can report detection per material.
    """

    path: Path
    positive: bool
    boxes: Sequence[Box] = ()
    material: str | None = None


@dataclass(frozen=True)
class ProjectedTiles:
    """Tiles on projected items, ``images`` (N, C, S, S), with ``source_tiles`` (N, 2).

    Row k of ``source_tiles`` is (source scan, tile number in that scan's tiling): the clean
    tile at the place of item tile k, before the item was projected.
    """

    images: torch.Tensor
    source_tiles: np.ndarray


@dataclass
class TileBank:
    """Labelled tiles: ``images`` (N, C, S, S) float16, ``labels`` (N,) 1 on an item and 0 clear.

    ``sources`` are the clean grey training scans that items are projected into, and
    ``source_starts`` the bank index of each one's first tile. Their projected item tiles
    are drawn anew each epoch and follow the fixed tiles in ``images``. For each of them,
    ``backgrounds`` contains the bank index of the clean tile at its place.
    """

    images: torch.Tensor
    labels: np.ndarray
    sources: list[DecodedScan] = field(default_factory=list)
    source_starts: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    fixed: int = 0
    backgrounds: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        self.fixed = len(self.images)
        if len(self.source_starts) != len(self.sources):
            raise ValueError("every source scan needs the bank index of its first tile")

    @property
    def positives(self) -> np.ndarray:
        return np.flatnonzero(self.labels == 1)

    @property
    def negatives(self) -> np.ndarray:
        return np.flatnonzero(self.labels == 0)

    def replace_projected(self, projected: ProjectedTiles) -> None:
        """Swap the previous epoch's projected item tiles for ``projected``."""
        self.images = join_tiles([self.images[: self.fixed], projected.images.to(torch.float16)])
        self.labels = np.concatenate([self.labels[: self.fixed], np.ones(len(projected.images), dtype=self.labels.dtype)])
        starts = np.asarray(self.source_starts, dtype=np.int64)
        self.backgrounds = starts[projected.source_tiles[:, 0]] + projected.source_tiles[:, 1]

    def background_of(self, tiles: np.ndarray) -> np.ndarray:
        """Return the bank index of each tile's clean background, or -1 for a tile that has none."""
        projected = tiles - self.fixed
        known = projected >= 0
        result = np.full(len(tiles), -1, dtype=np.int64)
        result[known] = self.backgrounds[projected[known]]
        return result


def build_tile_bank(
    scans: Sequence[LabelledScan], preprocess: PreprocessConfig, report: Callable[[str], None] = print,
) -> TileBank:
    """Decode and tile the scans and label every tile; keep the clean grey scans as projection sources."""
    geometry = preprocess.tiles
    images: list[torch.Tensor] = []
    labels: list[np.ndarray] = []
    sources: list[DecodedScan] = []
    source_starts: list[int] = []
    skipped: list[tuple[str, str]] = []
    count = 0

    for scan in scans:
        if scan.positive and not scan.boxes:
            skipped.append((str(scan.path), "positive scan without an item box"))
            continue
        try:
            decoded = load_scan(scan.path, target=decode_target(preprocess))
        except ScanReadError as error:
            skipped.append((str(scan.path), error.reason))
            continue

        start = count
        count += _add_tiles(images, labels, decoded, np.array(scan.boxes, dtype=np.int64).reshape(-1, 4), geometry)
        # Projection multiplies transmissions, so it needs a grey scan at its full size. A
        # clean scan keeps every tile, so its tile k sits at bank index start + k.
        if not scan.positive and decoded.is_grey and decoded.full_size is None:
            sources.append(decoded)
            source_starts.append(start)

    if not images:
        raise ValueError("no training scan could be tiled")
    bank = TileBank(images=join_tiles(images), labels=np.concatenate(labels), sources=sources, source_starts=source_starts,
                    skipped=skipped)
    report(f"tiles: {len(bank.positives)} on items, {len(bank.negatives)} clear, from {len(scans) - len(skipped)} scans; "
           f"{len(sources)} clean scans take projected items")
    return bank


def projected_item_tiles(
    sources: Sequence[DecodedScan], preprocess: PreprocessConfig, per_scan: int, rng: np.random.Generator,
    organic_share: float = 0.5,
) -> ProjectedTiles:
    """Project ``per_scan`` procedural items into each source scan; returns the tiles on those items.

    ``organic_share`` is the chance that an item is organic, the faint material that
    tile models miss most often.
    """
    tiles: list[torch.Tensor] = []
    places: list[np.ndarray] = []
    tip = TipConfig()
    for number, source in enumerate(sources):
        for _ in range(per_scan):
            try:
                item = generate_item(rng, organic_share=organic_share)[0]
                projection = project(source.pixels.astype(np.float64), item, rng, tip)
            except ValueError as error:
                # A scan without a cargo area large enough takes no item.
                logger.debug("no projected item: %s", error)
                break

            # The composed scan has the source's size, so both are cut into the same tiles.
            composed = DecodedScan(projection.composed.astype(np.float32), source.source_mode, source.bit_depth)
            cut = cut_tiles(composed, preprocess.tiles)
            on_item = np.flatnonzero(item_coverage(cut.boxes, np.array([projection.box])) >= ON_ITEM_FRACTION)
            tiles.append(cut.images[torch.from_numpy(on_item)].to(torch.float16))
            places.append(np.stack([np.full(len(on_item), number), on_item], axis=1))

    if not tiles:
        empty = torch.zeros((0, 1, preprocess.image_size, preprocess.image_size), dtype=torch.float16)
        return ProjectedTiles(images=empty, source_tiles=np.zeros((0, 2), dtype=np.int64))
    return ProjectedTiles(images=torch.cat(tiles), source_tiles=np.concatenate(places).astype(np.int64))


def join_tiles(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate tile batches; grey tiles are widened to three channels if any batch has three."""
    if len({part.shape[1] for part in parts}) > 1:
        parts = [part.expand(-1, 3, -1, -1) for part in parts]
    return torch.cat(parts)


def _add_tiles(images, labels, scan: DecodedScan, item_boxes: np.ndarray, geometry) -> int:
    # Returns the number of tiles kept, so callers can track where each scan's tiles start.
    tiles = cut_tiles(scan, geometry)
    coverage = item_coverage(tiles.boxes, item_boxes)
    tile_labels = np.where(coverage >= ON_ITEM_FRACTION, 1, np.where(coverage == 0, 0, -1))
    keep = tile_labels >= 0
    images.append(tiles.images[torch.from_numpy(keep)].to(torch.float16))
    labels.append(tile_labels[keep])
    return int(keep.sum())
