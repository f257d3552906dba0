"""Balanced pair sampling for Siamese training, drawn anew every epoch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairSet:
    """Indices into one image list: ``first[i]`` and ``second[i]`` form pair i, ``similar[i]`` its label."""

    first: np.ndarray
    second: np.ndarray
    similar: np.ndarray

    def __len__(self) -> int:
        return int(self.first.shape[0])


def sample_pairs(labels: np.ndarray, count: int, rng: np.random.Generator) -> PairSet:
    """Draw ``count`` pairs: half similar (positive-positive or negative-negative), half dissimilar.

    ``labels`` contains 1 for positives and 0 for negatives. Similar pairs split evenly between
    the two classes, and the two images of a pair are always different images.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"expected a 1-d label array, got shape {labels.shape}")
    if count < 2:
        raise ValueError(f"expected at least 2 pairs, got {count}")

    positives = np.flatnonzero(labels == 1)
    negatives = np.flatnonzero(labels == 0)
    if len(positives) < 2 or len(negatives) < 2:
        raise ValueError(
            f"pair sampling needs at least 2 positive and 2 negative images, got {len(positives)} and {len(negatives)}"
        )

    similar_count = count // 2
    dissimilar_count = count - similar_count
    positive_pairs = similar_count // 2
    negative_pairs = similar_count - positive_pairs

    first_parts = []
    second_parts = []
    for pool, size in ((positives, positive_pairs), (negatives, negative_pairs)):
        first, second = _distinct_pairs(pool, size, rng)
        first_parts.append(first)
        second_parts.append(second)

    first_parts.append(rng.choice(positives, size=dissimilar_count))
    second_parts.append(rng.choice(negatives, size=dissimilar_count))

    first = np.concatenate(first_parts)
    second = np.concatenate(second_parts)
    similar = np.concatenate([np.ones(similar_count, dtype=np.int64), np.zeros(dissimilar_count, dtype=np.int64)])

    # Shuffle, and randomly swap the two sides so a positive is not always the first image.
    order = rng.permutation(count)
    first, second, similar = first[order], second[order], similar[order]
    swap = rng.random(count) < 0.5
    first, second = np.where(swap, second, first), np.where(swap, first, second)
    return PairSet(first=first, second=second, similar=similar)


def _distinct_pairs(pool: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    first = rng.choice(pool, size=size)

    # Draw the partner from the pool minus the first image by offsetting its position.
    positions = np.searchsorted(pool, first)
    offsets = rng.integers(1, len(pool), size=size)
    second = pool[(positions + offsets) % len(pool)]
    return first, second
