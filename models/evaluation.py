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


def draw_pairs(labels: np.ndarray, count: int, seed: int, families=None) -> PairSet:
    """Draw balanced pairs with a fixed seed; with ``families``, no pair joins two images of one family.

    Near-duplicates (mirrored or augmented copies) embed close together, so a similar pair
    of two copies would count as an easy success. Such a pair gets a new partner from the
    same label, drawn from another family. It keeps its partner only when the label has no
    other family.
    """
    rng = np.random.default_rng(seed)
    pairs = sample_pairs(labels, count, rng)
    if families is None:
        return pairs

    families = np.asarray([str(family) for family in families])
    labels = np.asarray(labels)
    if families.shape != labels.shape:
        raise ValueError(f"expected one family per image, got {families.shape} for labels {labels.shape}")

    second = pairs.second.copy()
    for index in np.flatnonzero(families[pairs.first] == families[second]):
        candidates = np.flatnonzero((labels == labels[second[index]]) & (families != families[pairs.first[index]]))
        if len(candidates):
            second[index] = rng.choice(candidates)
    return PairSet(first=pairs.first, second=second, similar=pairs.similar)


def held_out_pairs(
    embeddings: torch.Tensor, labels: np.ndarray, count: int, seed: int, families=None
) -> tuple[PairSet, np.ndarray]:
    """Draw balanced pairs among (N, D) embeddings of held-out images; returns the pairs and their distances."""
    pairs = draw_pairs(labels, count, seed, families)
    first = embeddings[torch.from_numpy(pairs.first)]
    second = embeddings[torch.from_numpy(pairs.second)]
    return pairs, pair_distance(first, second).numpy()


def accuracy_threshold(distances: np.ndarray, similar: np.ndarray) -> float:
    """Return the distance threshold that maximises pair accuracy on (P,) distances and labels.

    Candidates lie midway between consecutive distinct distances (and beyond both ends), so
    the result never sits on a pair's distance. Of equally accurate thresholds the smallest
    is returned.
    """
    distances = np.asarray(distances, dtype=np.float64)
    similar = np.asarray(similar).astype(bool)
    if distances.ndim != 1 or distances.shape != similar.shape or len(distances) == 0:
        raise ValueError(f"expected two non-empty arrays of shape (P,), got {distances.shape} and {similar.shape}")

    values = np.unique(distances)
    candidates = np.concatenate([[values[0] / 2], (values[:-1] + values[1:]) / 2, [values[-1] * 2 + 1e-6]])
    order = np.argsort(distances)
    sorted_distances, sorted_similar = distances[order], similar[order]

    # Pairs at or below a candidate are predicted similar: correct for similar ones, wrong for the rest.
    below = np.searchsorted(sorted_distances, candidates, side="right")
    similar_below = np.concatenate([[0], np.cumsum(sorted_similar)])[below]
    dissimilar_above = (~similar).sum() - (below - similar_below)
    correct = similar_below + dissimilar_above
    return float(candidates[int(np.argmax(correct))])
