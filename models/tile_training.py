"""Siamese training on tiles, with projected items and hard-negative mining.

Tiles on an item form the positive class and tiles that touch no item the negative class.
Tiles that only graze an item are left out. Items come from the training scans' boxes,
and more are projected into the clean training scans (threat image projection), so every
training background also yields positives at new places. From the second epoch on, half
of the dissimilar pairs take their clean tile from the ones the current network places
closest to item tiles (hard negatives). After each epoch the validation scans are scored
as in screening, by their best tile, and the epoch with the best ROC AUC is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.augment import augment_batch
from models.checkpoint import save_checkpoint
from models.embedder import build_embedder
from models.imaging import DecodedScan, ScanReadError, load_scan
from models.inference import decode_target, embed_images
from models.loss import ContrastiveLoss
from models.metrics import SingleClassError, screening_metrics
from models.preprocess import PreprocessConfig, normalize
from models.tiling import ON_ITEM_FRACTION, cut_tiles, item_coverage
from models.tip import TipConfig, generate_item, project

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class TileTrainConfig:
    """Hyperparameters of one tile training run."""

    epochs: int = 10
    pairs_per_epoch: int = 2000
    batch_size: int = 32
    learning_rate: float = 1e-3
    margin: float = 1.0
    threshold: float = 0.5
    projections_per_scan: int = 2
    hard_negative_fraction: float = 0.5
    mining_pool: int = 4000
    validation_exemplars: int = 512
    patience: int | None = None
    seed: int = 0
    weights: str = "none"

    def __post_init__(self) -> None:
        for name in ("epochs", "pairs_per_epoch", "batch_size", "mining_pool", "validation_exemplars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.margin <= 0 or self.threshold <= 0:
            raise ValueError("learning_rate, margin and threshold must be positive")
        if self.projections_per_scan < 0:
            raise ValueError(f"projections_per_scan must be 0 or more, got {self.projections_per_scan}")
        if not 0 <= self.hard_negative_fraction <= 1:
            raise ValueError(f"hard_negative_fraction must be in [0, 1], got {self.hard_negative_fraction}")


@dataclass(frozen=True)
class LabelledScan:
    """A training or validation scan: its file, its label, and its item boxes in scan pixels (positives)."""

    path: Path
    positive: bool
    boxes: Sequence[Box] = ()


@dataclass
class TileBank:
    """Labelled tiles: ``images`` (N, C, S, S) float16, ``labels`` (N,) 1 on an item and 0 clear."""

    images: torch.Tensor
    labels: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def positives(self) -> np.ndarray:
        return np.flatnonzero(self.labels == 1)

    @property
    def negatives(self) -> np.ndarray:
        return np.flatnonzero(self.labels == 0)


@dataclass
class TileEpoch:
    epoch: int
    loss: float
    hard_negatives: int
    validation_auc: float | None = None


@dataclass
class TileTrainResult:
    checkpoint: Path
    version: str
    history: list[TileEpoch]
    best_epoch: int
    positive_tiles: int
    negative_tiles: int
    skipped: list[tuple[str, str]]


def build_tile_bank(
    scans: Sequence[LabelledScan], preprocess: PreprocessConfig, projections_per_scan: int, rng: np.random.Generator,
    report: Callable[[str], None] = print,
) -> TileBank:
    """Decode and tile the scans, label every tile, and add tiles of items projected into the clean scans."""
    geometry = preprocess.tiles
    images: list[torch.Tensor] = []
    labels: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    tip = TipConfig()

    for scan in scans:
        if scan.positive and not scan.boxes:
            skipped.append((str(scan.path), "positive scan without an item box"))
            continue
        try:
            decoded = load_scan(scan.path, target=decode_target(preprocess))
        except ScanReadError as error:
            skipped.append((str(scan.path), error.reason))
            continue

        _add_tiles(images, labels, decoded, np.array(scan.boxes, dtype=np.int64).reshape(-1, 4), geometry)
        if scan.positive or projections_per_scan == 0:
            continue
        if not decoded.is_grey or decoded.full_size is not None:
            skipped.append((str(scan.path), "no projected items: projection needs a grey scan decoded at full size"))
            continue
        for _ in range(projections_per_scan):
            try:
                projection = project(decoded.pixels.astype(np.float64), generate_item(rng)[0], rng, tip)
            except ValueError as error:
                skipped.append((str(scan.path), f"no projected item: {error}"))
                break
            composed = DecodedScan(projection.composed.astype(np.float32), decoded.source_mode, decoded.bit_depth)
            _add_tiles(images, labels, composed, np.array([projection.box]), geometry)

    if not images:
        raise ValueError("no training scan could be tiled")
    bank = TileBank(images=torch.cat(images), labels=np.concatenate(labels), skipped=skipped)
    report(f"tiles: {len(bank.positives)} on items, {len(bank.negatives)} clear, from {len(scans) - len(skipped)} scans")
    if len(bank.positives) < 2 or len(bank.negatives) < 2:
        raise ValueError("training needs at least two tiles on items and two clear tiles")
    return bank


def _add_tiles(images, labels, scan: DecodedScan, item_boxes: np.ndarray, geometry) -> None:
    tiles = cut_tiles(scan, geometry)
    coverage = item_coverage(tiles.boxes, item_boxes)
    tile_labels = np.where(coverage >= ON_ITEM_FRACTION, 1, np.where(coverage == 0, 0, -1))
    keep = tile_labels >= 0
    images.append(tiles.images[torch.from_numpy(keep)].to(torch.float16))
    labels.append(tile_labels[keep])


def train_tiles(
    train_scans: Sequence[LabelledScan],
    out: Path,
    config: TileTrainConfig,
    preprocess: PreprocessConfig,
    device: torch.device,
    validation_scans: Sequence[LabelledScan] = (),
    report: Callable[[str], None] = print,
) -> TileTrainResult:
    """Train the embedder on tiles of the training scans and write a tile-mode checkpoint to ``out``."""
    if preprocess.tiles is None:
        raise ValueError("tile training needs a preprocessing config in tile mode")

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    embedder, origin = build_embedder(config.weights)
    embedder.to(device)
    report(f"starting weights: {origin.describe()}")

    bank = build_tile_bank(train_scans, preprocess, config.projections_per_scan, rng, report)
    validation = _validation_tiles(validation_scans, preprocess, report) if validation_scans else None
    optimizer = torch.optim.Adam(embedder.parameters(), lr=config.learning_rate)
    criterion = ContrastiveLoss(margin=config.margin)
    history: list[TileEpoch] = []
    best_auc, best_state, best_epoch, stale = -1.0, None, 0, 0

    for epoch in range(1, config.epochs + 1):
        hard = _mine_hard_negatives(embedder, bank, config, preprocess, device, rng) if epoch > 1 else None
        first, second, similar = _draw_pairs(bank, config, rng, hard)
        loss = _run_epoch(embedder, bank, first, second, similar, config, preprocess, criterion, optimizer, generator, device)
        stats = TileEpoch(epoch=epoch, loss=loss, hard_negatives=0 if hard is None else len(hard))

        if validation is not None:
            stats.validation_auc = _validation_auc(embedder, bank, validation, config, preprocess, device, rng)
            if stats.validation_auc > best_auc:
                best_auc, best_epoch, stale = stats.validation_auc, epoch, 0
                best_state = {key: value.detach().clone() for key, value in embedder.state_dict().items()}
            else:
                stale += 1
        history.append(stats)
        report(_describe(stats, config.epochs))
        if config.patience is not None and stale >= config.patience:
            report(f"early stop: no validation AUC improvement for {config.patience} epochs")
            break

    if best_state is not None:
        embedder.load_state_dict(best_state)
        report(f"keeping epoch {best_epoch} (best validation ROC AUC {best_auc:.3f})")
    best_epoch = best_epoch or history[-1].epoch

    embedder.eval()
    metadata = {
        "backbone": "resnet18",
        "embedding_dim": 512,
        "weights_origin": origin.describe(),
        "train_config": asdict(config),
        "training": "tiles: contrastive pairs with projected items and hard-negative mining",
        "history": [asdict(item) for item in history],
        "training_tiles": {"on_item": int(len(bank.positives)), "clear": int(len(bank.negatives))},
        "selection": {"rule": "validation ROC AUC" if validation is not None else "last epoch", "best_epoch": best_epoch},
    }
    version = save_checkpoint(out, embedder, preprocess, threshold=config.threshold, metadata=metadata)
    return TileTrainResult(
        checkpoint=out, version=version, history=history, best_epoch=best_epoch, positive_tiles=int(len(bank.positives)),
        negative_tiles=int(len(bank.negatives)), skipped=bank.skipped,
    )


def _draw_pairs(bank: TileBank, config: TileTrainConfig, rng: np.random.Generator, hard: np.ndarray | None):
    # A quarter item-item and a quarter clear-clear similar pairs, and half item-clear
    # dissimilar ones, so both classes are pulled together and pushed apart equally.
    positives, negatives = bank.positives, bank.negatives
    count = config.pairs_per_epoch
    quarter = count // 4
    dissimilar = count - 2 * quarter

    clear = rng.choice(negatives, dissimilar)
    if hard is not None and len(hard):
        use_hard = rng.random(dissimilar) < config.hard_negative_fraction
        clear[use_hard] = rng.choice(hard, int(use_hard.sum()))

    first = np.concatenate([rng.choice(positives, quarter), rng.choice(negatives, quarter), rng.choice(positives, dissimilar)])
    second = np.concatenate([rng.choice(positives, quarter), rng.choice(negatives, quarter), clear])
    similar = np.concatenate([np.ones(2 * quarter), np.zeros(dissimilar)]).astype(np.float32)
    order = rng.permutation(count)
    return first[order], second[order], similar[order]


def _run_epoch(embedder, bank, first, second, similar, config, preprocess, criterion, optimizer, generator, device) -> float:
    embedder.train()
    total = 0.0
    for start in range(0, len(first), config.batch_size):
        stop = min(start + config.batch_size, len(first))
        left = _augmented(bank.images[first[start:stop]], generator, preprocess)
        right = _augmented(bank.images[second[start:stop]], generator, preprocess)

        # One forward pass over both sides keeps the two branches' batch-norm statistics shared.
        embeddings = embedder(normalize(torch.cat([left, right]).to(device), preprocess))
        left_embedding, right_embedding = embeddings.split(stop - start)
        loss = criterion(left_embedding, right_embedding, torch.from_numpy(similar[start:stop]).to(device))

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * (stop - start)
    return total / len(first)


def _augmented(tiles: torch.Tensor, generator: torch.Generator, preprocess: PreprocessConfig) -> torch.Tensor:
    tiles = tiles.float()
    if tiles.shape[1] == 1:
        tiles = tiles.expand(-1, 3, -1, -1)
    # Vertical flips as well as the horizontal ones: an item lies in a container at any orientation.
    flip = torch.rand(len(tiles), generator=generator) < 0.5
    tiles = torch.where(flip[:, None, None, None], tiles.flip(-2), tiles)
    return augment_batch(tiles.contiguous(), generator, 10.0, preprocess.fill)


def _embed(embedder, tiles: torch.Tensor, preprocess: PreprocessConfig, device, batch_size: int = 256) -> torch.Tensor:
    embedder.eval()
    parts = []
    for start in range(0, len(tiles), batch_size):
        chunk = tiles[start : start + batch_size].float()
        if chunk.shape[1] == 1:
            chunk = chunk.expand(-1, 3, -1, -1).contiguous()
        parts.append(embed_images(embedder, chunk, preprocess, device))
    return torch.cat(parts)


def _mine_hard_negatives(embedder, bank, config, preprocess, device, rng) -> np.ndarray:
    pool = rng.choice(bank.negatives, min(config.mining_pool, len(bank.negatives)), replace=False)
    anchors = rng.choice(bank.positives, min(256, len(bank.positives)), replace=False)
    clear = _embed(embedder, bank.images[pool], preprocess, device)
    items = _embed(embedder, bank.images[anchors], preprocess, device)
    nearest = torch.cdist(clear, items).min(dim=1).values.numpy()

    # The tenth of the pool nearest to any item tile, at least 32 tiles.
    keep = max(32, len(pool) // 10)
    return pool[np.argsort(nearest)[:keep]]


@dataclass(frozen=True)
class _ValidationTiles:
    tiles: torch.Tensor
    scan_of_tile: np.ndarray
    labels: np.ndarray


def _validation_tiles(scans: Sequence[LabelledScan], preprocess: PreprocessConfig, report) -> _ValidationTiles | None:
    tiles, owners, labels = [], [], []
    for scan in scans:
        try:
            decoded = load_scan(scan.path, target=decode_target(preprocess))
        except ScanReadError as error:
            report(f"skipping validation scan {scan.path}: {error.reason}")
            continue
        cut = cut_tiles(decoded, preprocess.tiles)
        tiles.append(cut.images.to(torch.float16))
        owners.append(np.full(len(cut.images), len(labels)))
        labels.append(1 if scan.positive else 0)

    labels = np.array(labels)
    if (labels == 1).sum() < 1 or (labels == 0).sum() < 1:
        report("validation skipped: it needs scans of both classes")
        return None
    report(f"validation: {int(labels.sum())} positive and {int((labels == 0).sum())} negative scans")
    return _ValidationTiles(tiles=torch.cat(tiles), scan_of_tile=np.concatenate(owners), labels=labels)


def _validation_auc(embedder, bank, validation: _ValidationTiles, config, preprocess, device, rng) -> float:
    # The same item tiles every epoch, so the AUC changes only with the network.
    fixed = np.random.default_rng(config.seed + 1)
    exemplars = fixed.choice(bank.positives, min(config.validation_exemplars, len(bank.positives)), replace=False)
    items = _embed(embedder, bank.images[exemplars], preprocess, device)
    tiles = _embed(embedder, validation.tiles, preprocess, device)
    nearest = torch.cdist(tiles, items).min(dim=1).values.numpy()

    # A scan is as suspicious as its best tile, exactly as in screening.
    best = np.full(len(validation.labels), np.inf)
    np.minimum.at(best, validation.scan_of_tile, nearest)
    try:
        return screening_metrics(-best, validation.labels).auc
    except SingleClassError:
        return float("nan")


def _describe(stats: TileEpoch, epochs: int) -> str:
    line = f"epoch {stats.epoch}/{epochs}: loss {stats.loss:.4f}, {stats.hard_negatives} hard negatives"
    if stats.validation_auc is not None:
        line += f", validation per-scan ROC AUC {stats.validation_auc:.3f}"
    return line
