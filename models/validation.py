"""Validation during training: fixed held-out pairs, embedded in eval mode after every epoch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.embedder import SiameseEmbedder
from models.evaluation import PairMetrics, draw_pairs, pair_metrics
from models.inference import embed_images
from models.loss import ContrastiveLoss, pair_distance
from models.pairs import PairSet
from models.preprocess import PreprocessConfig


@dataclass(frozen=True)
class ValidationResult:
    """Mean contrastive loss and pair metrics over the validation pairs."""

    loss: float
    metrics: PairMetrics


class ValidationSet:
    """Decoded validation images with pairs drawn once, so every epoch scores the same pairs.

    ``images`` is (N, 3, S, S) unit images, ``labels`` (N,) with 1 for positives. Pairs of
    two images from one family are redrawn, because near-duplicates would make a similar
    pair trivially close.
    """

    def __init__(
        self, images: torch.Tensor, labels: np.ndarray, pair_count: int, seed: int, families: Sequence[str] | None = None
    ) -> None:
        self.images = images
        self.labels = np.asarray(labels)
        self.pairs: PairSet = draw_pairs(self.labels, pair_count, seed, families)

    @torch.no_grad()
    def evaluate(
        self, embedder: SiameseEmbedder, preprocess: PreprocessConfig, criterion: ContrastiveLoss, threshold: float,
        device: torch.device, batch_size: int = 64,
    ) -> ValidationResult:
        """Embed every image in eval mode, then score the fixed pairs; restores the embedder's mode."""
        was_training = embedder.training
        embedder.eval()
        try:
            embeddings = torch.cat([
                embed_images(embedder, self.images[start : start + batch_size].float(), preprocess, device)
                for start in range(0, len(self.images), batch_size)
            ])
        finally:
            embedder.train(was_training)

        first = embeddings[torch.from_numpy(self.pairs.first)]
        second = embeddings[torch.from_numpy(self.pairs.second)]
        similar = torch.from_numpy(self.pairs.similar)
        loss = float(criterion(first, second, similar))
        distances = pair_distance(first, second).numpy()
        return ValidationResult(loss=loss, metrics=pair_metrics(distances, self.pairs.similar, threshold))


class BestEpoch:
    """Track the best epoch by validation loss (lower) or accuracy (higher) and count epochs without improvement."""

    def __init__(self, select_by: str, patience: int | None) -> None:
        self.select_by = select_by
        self.patience = patience
        self.best_epoch = 0
        self.best_value: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stale = 0
        self.stopped = False

    def update(self, stats, embedder: torch.nn.Module) -> bool:
        """Record an epoch's ``EpochStats``, copying the weights when it is the best so far; returns True to stop early."""
        if stats.validation_loss is None:
            return False

        # Accuracy is negated so that lower is better for both rules.
        value = stats.validation_loss if self.select_by == "loss" else -float(stats.validation_pair_accuracy)
        if self.best_value is None or value < self.best_value:
            self.best_value = value
            self.best_epoch = stats.epoch
            self.best_state = {key: tensor.detach().cpu().clone() for key, tensor in embedder.state_dict().items()}
            self.stale = 0
            return False

        self.stale += 1
        self.stopped = self.patience is not None and self.stale >= self.patience
        return self.stopped
