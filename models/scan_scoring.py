"""Embed decoded scans and score them against an exemplar set, in whole-scan or tile mode.

In whole-scan mode each scan is one network input. In tile mode every tile of every scan in
the batch is embedded, in fixed-size chunks that mix tiles of several scans so every
forward pass gets a full batch. A scan is as suspicious as its most suspicious tile under the
model's score rule (see :data:`models.exemplars.SCORE_RULES`), and that tile's box marks
where the item is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.embedder import SiameseEmbedder
from models.exemplars import ExemplarSet, Verdicts, score, suspicion
from models.inference import Decoded, InferenceOptions, embed_images
from models.preprocess import PreprocessConfig

DEFAULT_TILE_BATCH_SIZE = 256


@dataclass(frozen=True)
class TileVerdicts:
    """The verdicts on every tile of one scan, with the tiles' boxes and grid (rows, columns)."""

    verdicts: Verdicts
    boxes: np.ndarray
    grid: tuple[int, int]


@dataclass(frozen=True)
class ScanVerdicts:
    """Per scan: the verdict, and in whole-scan mode the (N, D) embeddings.

    In tile mode ``boxes`` is (N, 4), the best tile of each scan in scan pixels,
    ``tile_counts`` is (N,), and ``tiles`` contains every tile's verdict per scan.
    """

    verdicts: Verdicts
    embeddings: np.ndarray | None = None
    boxes: np.ndarray | None = None
    tile_counts: np.ndarray | None = None
    tiles: list[TileVerdicts] | None = None


def score_decoded(
    embedder: SiameseEmbedder,
    decoded: Sequence[Decoded],
    exemplars: ExemplarSet,
    threshold: float,
    config: PreprocessConfig,
    device: torch.device,
    options: InferenceOptions | None = None,
    tile_batch_size: int = DEFAULT_TILE_BATCH_SIZE,
    rule: str = "nearest_positive",
) -> ScanVerdicts:
    """Embed and score successfully decoded scans by ``rule``; every item of ``decoded`` must be ``ok``."""
    if any(not item.ok for item in decoded):
        raise ValueError("score_decoded takes only scans that decoded; filter out the failed ones first")

    if config.tiles is None:
        images = torch.stack([item.image for item in decoded])
        embeddings = embed_images(embedder, images, config, device, options)
        return ScanVerdicts(verdicts=score(embeddings, exemplars, threshold, rule), embeddings=embeddings.numpy())

    tile_embeddings = embed_tiles(embedder, decoded, config, device, options, tile_batch_size)
    return _best_tiles(decoded, score(tile_embeddings, exemplars, threshold, rule), rule)


def embed_tiles(
    embedder: SiameseEmbedder,
    decoded: Sequence[Decoded],
    config: PreprocessConfig,
    device: torch.device,
    options: InferenceOptions | None = None,
    tile_batch_size: int = DEFAULT_TILE_BATCH_SIZE,
) -> torch.Tensor:
    """Embed every tile of the decoded scans in order; returns (total tiles, D) float32."""
    if tile_batch_size < 1:
        raise ValueError(f"tile_batch_size must be at least 1, got {tile_batch_size}")

    chunks = [embed_images(embedder, chunk, config, device, options) for chunk in _tile_chunks(decoded, tile_batch_size)]
    return torch.cat(chunks)


def embed_tile_images(
    embedder: SiameseEmbedder,
    tiles: torch.Tensor,
    config: PreprocessConfig,
    device: torch.device,
    options: InferenceOptions | None = None,
    tile_batch_size: int = DEFAULT_TILE_BATCH_SIZE,
) -> torch.Tensor:
    """Embed (N, C, S, S) unit tiles of any float type, C 1 or 3, in chunks; returns (N, D) float32."""
    parts = [
        embed_images(embedder, _three_channels(tiles[start : start + tile_batch_size].float()), config, device, options)
        for start in range(0, len(tiles), tile_batch_size)
    ]
    return torch.cat(parts) if parts else torch.zeros((0, 512))


def _tile_chunks(decoded: Sequence[Decoded], size: int) -> Iterator[torch.Tensor]:
    # Chunks are built one at a time, so a batch of wide scans never keeps every tile as a
    # three-channel float copy in memory at once.
    pending: list[torch.Tensor] = []
    count = 0
    for item in decoded:
        images = item.tiles.images
        start = 0
        while start < len(images):
            take = min(size - count, len(images) - start)
            # Grey scans have one channel and colour scans three, so each piece is widened
            # before pieces of different scans are joined.
            pending.append(_three_channels(images[start : start + take]))
            count += take
            start += take
            if count == size:
                yield torch.cat(pending)
                pending, count = [], 0
    if pending:
        yield torch.cat(pending)


def _three_channels(tiles: torch.Tensor) -> torch.Tensor:
    return tiles.expand(-1, 3, -1, -1).contiguous() if tiles.shape[1] == 1 else tiles


def _best_tiles(decoded: Sequence[Decoded], tile_verdicts: Verdicts, rule: str) -> ScanVerdicts:
    per_scan: list[TileVerdicts] = []
    best_rows: list[int] = []
    best_boxes: list[np.ndarray] = []
    start = 0
    for item in decoded:
        stop = start + len(item.tiles.boxes)
        verdicts = _slice(tile_verdicts, start, stop)
        per_scan.append(TileVerdicts(verdicts=verdicts, boxes=item.tiles.boxes, grid=item.tiles.grid))

        best = int(np.argmax(suspicion(verdicts, rule)))
        best_rows.append(start + best)
        best_boxes.append(item.tiles.boxes[best])
        start = stop

    return ScanVerdicts(
        verdicts=_take(tile_verdicts, np.array(best_rows, dtype=np.int64)),
        boxes=np.stack(best_boxes),
        tile_counts=np.array([len(item.tiles.boxes) for item in decoded], dtype=np.int64),
        tiles=per_scan,
    )


def _slice(verdicts: Verdicts, start: int, stop: int) -> Verdicts:
    return _take(verdicts, np.arange(start, stop))


def _take(verdicts: Verdicts, rows: np.ndarray) -> Verdicts:
    return Verdicts(
        positive_distance=verdicts.positive_distance[rows],
        positive_id=verdicts.positive_id[rows],
        negative_distance=None if verdicts.negative_distance is None else verdicts.negative_distance[rows],
        negative_id=None if verdicts.negative_id is None else verdicts.negative_id[rows],
        flagged=verdicts.flagged[rows],
    )
