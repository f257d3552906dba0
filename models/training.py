"""Siamese training with the contrastive loss, as in the CargoScan paper.

Defaults follow the paper: Adam, learning rate 1e-4, batch 32, 20 epochs of 1000 pairs (half
similar, half dissimilar, re-drawn every epoch), horizontal flips and +-10 degree rotations.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models.augment import augment_batch
from models.checkpoint import save_checkpoint
from models.embedder import build_embedder
from models.inference import decode_many
from models.loss import ContrastiveLoss, pair_distance
from models.pairs import sample_pairs
from models.preprocess import PreprocessConfig, normalize
from models.validation import BestEpoch, ValidationSet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run."""

    epochs: int = 20
    pairs_per_epoch: int = 1000
    batch_size: int = 32
    learning_rate: float = 1e-4
    margin: float = 0.5
    threshold: float = 0.5
    augment: bool = True
    max_rotation_degrees: float = 10.0
    seed: int = 0
    weights: str = "none"
    validation_pairs: int = 500
    select_by: str = "loss"
    patience: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "pairs_per_epoch", "batch_size", "validation_pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.margin <= 0 or self.threshold <= 0:
            raise ValueError("learning_rate, margin and threshold must be positive")
        if self.select_by not in ("loss", "accuracy"):
            raise ValueError(f"select_by must be 'loss' or 'accuracy', got {self.select_by!r}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be at least 1 epoch, got {self.patience}")


@dataclass
class EpochStats:
    """Mean loss and pair accuracy over one epoch's pairs, with its confusion counts."""

    epoch: int
    loss: float
    pair_accuracy: float
    true_positive: int
    false_positive: int
    true_negative: int
    false_negative: int
    validation_loss: float | None = None
    validation_pair_accuracy: float | None = None


@dataclass
class TrainResult:
    """Output of a training run: the checkpoint, its version, the per-epoch history and the kept epoch.

    ``best_epoch`` is the epoch whose weights the checkpoint holds: the best by validation
    loss or accuracy when a validation set was given, else the last one.
    """

    checkpoint: Path
    version: str
    weights_origin: str
    history: list[EpochStats] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    curves: Path | None = None


def load_training_images(
    paths: Sequence[Path], config: PreprocessConfig, workers: int | None = None
) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """Decode and resize every image once; returns (N, 3, S, S) float16, kept indices, and skipped files with reasons."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as executor:
        decoded = decode_many(paths, config, executor)

    kept = [index for index, item in enumerate(decoded) if item.image is not None]
    skipped = [(str(paths[index]), item.error or "") for index, item in enumerate(decoded) if item.image is None]
    for path, reason in skipped:
        logger.warning("skipping unreadable training image %s: %s", path, reason)

    if not kept:
        raise ValueError("no training image could be read")
    images = torch.stack([decoded[index].image for index in kept]).to(torch.float16)
    return images, kept, skipped


def train_siamese(
    positive_paths: Sequence[Path],
    negative_paths: Sequence[Path],
    out: Path,
    config: TrainConfig,
    preprocess: PreprocessConfig,
    device: torch.device,
    report: Callable[[str], None] = print,
    validation: ValidationData | None = None,
    curves: Path | None = None,
) -> TrainResult:
    """Train the embedder on labelled images and write a checkpoint to ``out``.

    With ``validation``, every epoch ends with the validation loss and pair accuracy, the
    checkpoint keeps the best epoch's weights (by ``config.select_by``), and training stops
    after ``config.patience`` epochs without improvement. ``curves`` names a PNG of the
    per-epoch loss and accuracy.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)

    embedder, origin = build_embedder(config.weights)
    report(f"starting weights: {origin.describe()}")
    embedder.to(device).train()

    paths = list(positive_paths) + list(negative_paths)
    labels_all = np.array([1] * len(positive_paths) + [0] * len(negative_paths))
    report(f"decoding {len(paths)} training images at {preprocess.image_size} px ({preprocess.resize_mode})")
    images, kept, skipped = load_training_images(paths, preprocess)
    labels = labels_all[kept]
    validation_set = _load_validation(validation, config, preprocess, report) if validation else None

    optimizer = torch.optim.Adam(embedder.parameters(), lr=config.learning_rate)
    criterion = ContrastiveLoss(margin=config.margin)
    history: list[EpochStats] = []
    tracker = BestEpoch(config.select_by, config.patience)

    for epoch in range(1, config.epochs + 1):
        pairs = sample_pairs(labels, config.pairs_per_epoch, rng)
        stats = _run_epoch(embedder, images, pairs, config, preprocess, criterion, optimizer, generator, device, epoch)
        if validation_set is not None:
            result = validation_set.evaluate(embedder, preprocess, criterion, config.threshold, device)
            stats.validation_loss = result.loss
            stats.validation_pair_accuracy = result.metrics.accuracy
        history.append(stats)
        report(_describe_epoch(stats, config.epochs))

        if tracker.update(stats, embedder):
            report(f"early stop: no validation {config.select_by} improvement for {config.patience} epochs")
            break

    if tracker.best_state is not None:
        embedder.load_state_dict(tracker.best_state)
        report(f"keeping epoch {tracker.best_epoch} (best validation {config.select_by})")
    best_epoch = tracker.best_epoch or history[-1].epoch

    embedder.eval()
    metadata: dict[str, Any] = {
        "backbone": "resnet18",
        "embedding_dim": 512,
        "weights_origin": origin.describe(),
        "train_config": asdict(config),
        "history": [asdict(item) for item in history],
        "training_images": {"positive": int(labels.sum()), "negative": int((labels == 0).sum())},
        "selection": {
            "rule": f"validation {config.select_by}" if validation_set is not None else "last epoch",
            "best_epoch": best_epoch,
            "stopped_early": tracker.stopped,
        },
    }
    if validation_set is not None:
        metadata["validation_images"] = {
            "positive": int(validation_set.labels.sum()), "negative": int((validation_set.labels == 0).sum())
        }
    version = save_checkpoint(out, embedder, preprocess, threshold=config.threshold, metadata=metadata)

    if curves is not None:
        from models.plots import plot_training_curves

        plot_training_curves(history, curves, best_epoch=best_epoch)
        report(f"wrote training curves to {curves}")
    return TrainResult(
        checkpoint=out, version=version, weights_origin=origin.describe(), history=history, skipped_files=skipped,
        best_epoch=best_epoch, stopped_early=tracker.stopped, curves=curves,
    )


@dataclass(frozen=True)
class ValidationData:
    """Validation images by label, with optional family ids (one per positive, then one per negative)."""

    positive_paths: Sequence[Path]
    negative_paths: Sequence[Path]
    families: Sequence[str] | None = None


def _load_validation(validation: ValidationData, config: TrainConfig, preprocess: PreprocessConfig, report) -> ValidationSet:
    paths = list(validation.positive_paths) + list(validation.negative_paths)
    labels = np.array([1] * len(validation.positive_paths) + [0] * len(validation.negative_paths))
    report(f"decoding {len(paths)} validation images")
    images, kept, _ = load_training_images(paths, preprocess)
    families = None if validation.families is None else [validation.families[index] for index in kept]

    # A seed apart from the training pairs' keeps the validation pairs fixed whatever the epoch count.
    return ValidationSet(images, labels[kept], config.validation_pairs, config.seed + 1_000_003, families)


def _describe_epoch(stats: EpochStats, epochs: int) -> str:
    line = (
        f"epoch {stats.epoch}/{epochs}: loss {stats.loss:.4f}, pair accuracy {stats.pair_accuracy:.3f} "
        f"(TP {stats.true_positive}, FP {stats.false_positive}, TN {stats.true_negative}, FN {stats.false_negative})"
    )
    if stats.validation_loss is not None:
        line += f"; validation loss {stats.validation_loss:.4f}, pair accuracy {stats.validation_pair_accuracy:.3f}"
    return line


def _run_epoch(embedder, images, pairs, config, preprocess, criterion, optimizer, generator, device, epoch) -> EpochStats:
    order_first = torch.from_numpy(pairs.first)
    order_second = torch.from_numpy(pairs.second)
    similar_all = torch.from_numpy(pairs.similar)
    total_loss = 0.0
    counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}

    batches = range(0, len(pairs), config.batch_size)
    for start in tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None):
        stop = min(start + config.batch_size, len(pairs))
        first = images[order_first[start:stop]].float()
        second = images[order_second[start:stop]].float()
        similar = similar_all[start:stop].to(device)

        if config.augment:
            first = augment_batch(first, generator, config.max_rotation_degrees, preprocess.fill)
            second = augment_batch(second, generator, config.max_rotation_degrees, preprocess.fill)

        # One forward pass over both sides keeps the two branches' batch-norm statistics shared.
        both = normalize(torch.cat([first, second]).to(device), preprocess)
        embeddings = embedder(both)
        first_embedding, second_embedding = embeddings.split(stop - start)
        loss = criterion(first_embedding, second_embedding, similar)

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        total_loss += float(loss.detach()) * (stop - start)
        predicted = pair_distance(first_embedding.detach(), second_embedding.detach()) <= config.threshold
        actual = similar.bool()
        counts["tp"] += int((predicted & actual).sum())
        counts["fp"] += int((predicted & ~actual).sum())
        counts["tn"] += int((~predicted & ~actual).sum())
        counts["fn"] += int((~predicted & actual).sum())

    correct = counts["tp"] + counts["tn"]
    return EpochStats(
        epoch=epoch,
        loss=total_loss / len(pairs),
        pair_accuracy=correct / len(pairs),
        true_positive=counts["tp"],
        false_positive=counts["fp"],
        true_negative=counts["tn"],
        false_negative=counts["fn"],
    )
