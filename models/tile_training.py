"""Siamese training on tiles, with projected items and hard-negative mining.

Pairs are drawn from a tile bank (``models.tile_bank``): item tiles from the training
scans' boxes and from items projected afresh into the clean training scans every epoch,
and clear tiles. From the second epoch on, the clear tiles the current network handles
worst are mined as hard negatives (see OBJECTIVES). Part of the item pairs can set a
projected item against its own background, the clean tile at the same place, so the
network must see the item itself rather than the cargo around it. After each epoch the
validation scans are scored as in screening, by their most suspicious tile, and the
epoch with the best ROC AUC is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from models.augment import augment_batch
from models.checkpoint import save_checkpoint
from models.embedder import build_embedder
from models.imaging import ScanReadError, load_scan
from models.inference import decode_target
from models.loss import ContrastiveLoss
from models.exemplars import SCORE_RULES
from models.metrics import SingleClassError, screening_metrics
from models.preprocess import PreprocessConfig, normalize
from models.scan_scoring import embed_tile_images
from models.tile_bank import LabelledScan, TileBank, build_tile_bank, join_tiles, projected_item_tiles
from models.tiling import cut_tiles

# ``novelty`` pulls clear tiles together and pushes item tiles away from them. ``item`` also
# pulls item tiles together, so items form a cluster of their own. Each has a default score
# rule: the distance to the nearest clear tile for ``novelty``, and for ``item`` the margin
# between the nearest clear and the nearest item tile.
OBJECTIVES = ("novelty", "item")
LR_SCHEDULES = ("cosine", "constant")

# The cosine schedule ends at this fraction of the starting rate rather than at zero, so the
# last epochs still move the weights.
_COSINE_FLOOR = 0.01
DEFAULT_SCORE_RULES = {"novelty": "novelty", "item": "margin"}


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
    validation_exemplars: int = 2048
    patience: int | None = None
    seed: int = 0
    weights: str = "none"
    objective: str = "novelty"
    score_rule: str | None = None
    lr_schedule: str = "cosine"
    organic_share: float = 0.5
    # Half the item pairs against their own background ranked the paired TIP test scans best:
    # ROC AUC 0.978, against 0.934 with none and 0.956 with all (docs/evaluation.md).
    background_pairs: float = 0.5

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.score_rule is None:
            object.__setattr__(self, "score_rule", DEFAULT_SCORE_RULES[self.objective])
        if self.score_rule not in SCORE_RULES:
            raise ValueError(f"score_rule must be one of {SCORE_RULES}, got {self.score_rule!r}")
        for name in ("epochs", "pairs_per_epoch", "batch_size", "mining_pool", "validation_exemplars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.margin <= 0 or self.threshold <= 0:
            raise ValueError("learning_rate, margin and threshold must be positive")
        if self.projections_per_scan < 0:
            raise ValueError(f"projections_per_scan must be 0 or more, got {self.projections_per_scan}")
        if not 0 <= self.hard_negative_fraction <= 1:
            raise ValueError(f"hard_negative_fraction must be in [0, 1], got {self.hard_negative_fraction}")
        if not 0.0 <= self.organic_share <= 1.0:
            raise ValueError(f"organic_share must be in [0, 1], got {self.organic_share}")
        if not 0.0 <= self.background_pairs <= 1.0:
            raise ValueError(f"background_pairs must be in [0, 1], got {self.background_pairs}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")


def epoch_learning_rate(config: TileTrainConfig, epoch: int) -> float:
    """Return the learning rate of ``epoch`` (1-based) under ``config``'s schedule.

    ``cosine`` decays from ``learning_rate`` to 1% of it over ``epochs``, so the last
    epochs refine the weights instead of moving them at the full rate.
    """
    if config.lr_schedule == "constant" or config.epochs == 1:
        return config.learning_rate

    progress = (epoch - 1) / (config.epochs - 1)
    floor = config.learning_rate * _COSINE_FLOOR
    return floor + (config.learning_rate - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class TileEpoch:
    epoch: int
    loss: float
    hard_negatives: int
    learning_rate: float
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

    bank = build_tile_bank(train_scans, preprocess, report)
    validation = _validation_tiles(validation_scans, preprocess, report) if validation_scans else None
    optimizer = torch.optim.Adam(embedder.parameters(), lr=config.learning_rate)
    criterion = ContrastiveLoss(margin=config.margin)
    history: list[TileEpoch] = []
    best_auc, best_state, best_epoch, stale = -1.0, None, 0, 0

    for epoch in range(1, config.epochs + 1):
        # Fresh items at fresh places every epoch, so the network cannot learn the few it saw.
        if config.projections_per_scan and bank.sources:
            bank.replace_projected(
                projected_item_tiles(bank.sources, preprocess, config.projections_per_scan, rng, config.organic_share)
            )
        if len(bank.positives) < 2 or len(bank.negatives) < 2:
            raise ValueError("training needs at least two tiles on items and two clear tiles")

        learning_rate = epoch_learning_rate(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate

        hard = _mine_hard_negatives(embedder, bank, config, preprocess, device, rng) if epoch > 1 else None
        first, second, similar = _draw_pairs(bank, config, rng, hard)
        loss = _run_epoch(embedder, bank, first, second, similar, config, preprocess, criterion, optimizer, generator, device)
        stats = TileEpoch(epoch=epoch, loss=loss, hard_negatives=0 if hard is None else len(hard), learning_rate=learning_rate)

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
        "training": f"tiles, {config.objective} objective: contrastive pairs with projected items and hard-negative mining",
        "score_rule": config.score_rule,
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
    positives, negatives = bank.positives, bank.negatives
    count = config.pairs_per_epoch
    half = count // 2
    dissimilar = count - half

    # Dissimilar pairs: an item tile against a clear one. For the item objective the clear
    # tile is a mined hard negative (the clear tiles nearest to items) part of the time.
    clear = rng.choice(negatives, dissimilar)
    if config.objective == "item" and hard is not None and len(hard):
        use_hard = rng.random(dissimilar) < config.hard_negative_fraction
        clear[use_hard] = rng.choice(hard, int(use_hard.sum()))
    dissimilar_first, dissimilar_second = rng.choice(positives, dissimilar), clear
    if config.background_pairs > 0:
        _use_backgrounds(bank, dissimilar_first, dissimilar_second, config.background_pairs, rng)

    if config.objective == "item":
        # Half the similar pairs item-item, half clear-clear.
        quarter = half // 2
        similar_first = np.concatenate([rng.choice(positives, quarter), rng.choice(negatives, half - quarter)])
        similar_second = np.concatenate([rng.choice(positives, quarter), rng.choice(negatives, half - quarter)])
    else:
        # Clear-clear only, and part of the time the first tile is a mined hard one (the
        # clear tiles farthest from the rest), which would otherwise raise false alarms.
        similar_first = rng.choice(negatives, half)
        if hard is not None and len(hard):
            use_hard = rng.random(half) < config.hard_negative_fraction
            similar_first[use_hard] = rng.choice(hard, int(use_hard.sum()))
        similar_second = rng.choice(negatives, half)

    first = np.concatenate([similar_first, dissimilar_first])
    second = np.concatenate([similar_second, dissimilar_second])
    similar = np.concatenate([np.ones(half), np.zeros(dissimilar)]).astype(np.float32)
    order = rng.permutation(count)
    return first[order], second[order], similar[order]


def _use_backgrounds(bank: TileBank, items: np.ndarray, clear: np.ndarray, share: float, rng: np.random.Generator) -> None:
    # A random clear tile differs from an item tile in its cargo as well as in the item, and
    # a faint organic item is the smaller difference. Against its own background only the
    # item differs. Items from the scans' own boxes have no clean twin and keep their partner.
    backgrounds = bank.background_of(items)
    swap = (rng.random(len(items)) < share) & (backgrounds >= 0)
    clear[swap] = backgrounds[swap]


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


def _embed(embedder, tiles: torch.Tensor, preprocess: PreprocessConfig, device) -> torch.Tensor:
    # Mining and validation use the running batch-norm statistics, as screening does.
    embedder.eval()
    return embed_tile_images(embedder, tiles, preprocess, device)


def _mine_hard_negatives(embedder, bank, config, preprocess, device, rng) -> np.ndarray:
    pool = rng.choice(bank.negatives, min(config.mining_pool, len(bank.negatives)), replace=False)
    clear = _embed(embedder, bank.images[pool], preprocess, device)
    if config.objective == "item":
        anchors = _embed(embedder, bank.images[rng.choice(bank.positives, min(256, len(bank.positives)), replace=False)], preprocess, device)
        # Hard: the clear tiles nearest to any item tile.
        hardness = -torch.cdist(clear, anchors).min(dim=1).values.numpy()
    else:
        anchors = clear[torch.from_numpy(rng.choice(len(pool), min(1024, len(pool)), replace=False))]
        distances = torch.cdist(clear, anchors)
        # Hard: the clear tiles farthest from their nearest other clear tile (zero is the tile itself).
        distances[distances < 1e-6] = float("inf")
        hardness = distances.min(dim=1).values.numpy()

    # The hardest tenth of the pool, at least 32 tiles.
    keep = max(32, len(pool) // 10)
    return pool[np.argsort(-hardness)[:keep]]


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
    return _ValidationTiles(tiles=join_tiles(tiles), scan_of_tile=np.concatenate(owners), labels=labels)


def _validation_auc(embedder, bank, validation: _ValidationTiles, config, preprocess, device, rng) -> float:
    # The same exemplar tiles every epoch (item tiles from the scans' own boxes rather than
    # the fresh projections), so the AUC changes only with the network.
    fixed = np.random.default_rng(config.seed + 1)
    positives = bank.positives
    items = positives[positives < bank.fixed] if (positives < bank.fixed).any() else positives
    count = config.validation_exemplars
    item_tiles = _embed(embedder, bank.images[fixed.choice(items, min(count, len(items)), replace=False)], preprocess, device)
    clear_tiles = _embed(embedder, bank.images[fixed.choice(bank.negatives, min(count, len(bank.negatives)), replace=False)],
                         preprocess, device)

    tiles = _embed(embedder, validation.tiles, preprocess, device)
    to_item = torch.cdist(tiles, item_tiles).min(dim=1).values.numpy().astype(np.float64)
    to_clear = torch.cdist(tiles, clear_tiles).min(dim=1).values.numpy().astype(np.float64)
    suspicion = {"nearest_positive": -to_item, "novelty": to_clear, "margin": to_clear - to_item}[config.score_rule]

    # A scan is as suspicious as its most suspicious tile, exactly as in screening.
    best = np.full(len(validation.labels), -np.inf)
    np.maximum.at(best, validation.scan_of_tile, suspicion)
    try:
        return screening_metrics(best, validation.labels).auc
    except SingleClassError:
        return float("nan")


def _describe(stats: TileEpoch, epochs: int) -> str:
    line = (f"epoch {stats.epoch}/{epochs}: learning rate {stats.learning_rate:.2e}, loss {stats.loss:.4f}, "
            f"{stats.hard_negatives} hard negatives")
    if stats.validation_auc is not None:
        line += f", validation per-scan ROC AUC {stats.validation_auc:.3f}"
    return line
