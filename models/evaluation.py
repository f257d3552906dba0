"""Pair metrics of the CargoScan paper, computed on held-out images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.loss import pair_distance
from models.pairs import PairSet, sample_pairs


@dataclass(frozen=True)
class PairMetrics:
    """Confusion counts with "similar" as the positive class, and the rates derived from them."""

    true_positive: int
    false_positive: int
    true_negative: int
    false_negative: int

    @property
    def total(self) -> int:
        return self.true_positive + self.false_positive + self.true_negative + self.false_negative

    @property
    def accuracy(self) -> float:
        return (self.true_positive + self.true_negative) / self.total if self.total else float("nan")

    @property
    def precision(self) -> float:
        predicted = self.true_positive + self.false_positive
        return self.true_positive / predicted if predicted else float("nan")

    @property
    def recall(self) -> float:
        actual = self.true_positive + self.false_negative
        return self.true_positive / actual if actual else float("nan")

    @property
    def f1(self) -> float:
        precision, recall = self.precision, self.recall
        if np.isnan(precision) or np.isnan(recall) or precision + recall == 0:
            return float("nan")
        return 2 * precision * recall / (precision + recall)


def pair_metrics(distances: np.ndarray, similar: np.ndarray, threshold: float) -> PairMetrics:
    """Count outcomes when a pair is predicted similar at distance <= ``threshold``; both arrays (P,)."""
    distances = np.asarray(distances, dtype=np.float64)
    similar = np.asarray(similar).astype(bool)
    if distances.shape != similar.shape or distances.ndim != 1:
        raise ValueError(f"expected two arrays of shape (P,), got {distances.shape} and {similar.shape}")

    predicted = distances <= threshold
    return PairMetrics(
        true_positive=int((predicted & similar).sum()),
        false_positive=int((predicted & ~similar).sum()),
        true_negative=int((~predicted & ~similar).sum()),
        false_negative=int((~predicted & similar).sum()),
    )


def held_out_pairs(embeddings: torch.Tensor, labels: np.ndarray, count: int, seed: int) -> tuple[PairSet, np.ndarray]:
    """Draw balanced pairs among (N, D) embeddings of held-out images; returns the pairs and their distances."""
    pairs = sample_pairs(labels, count, np.random.default_rng(seed))
    first = embeddings[torch.from_numpy(pairs.first)]
    second = embeddings[torch.from_numpy(pairs.second)]
    return pairs, pair_distance(first, second).numpy()
