"""Tests for models.pairs.sample_pairs: balance, labels and per-epoch redrawing."""

from __future__ import annotations

import numpy as np
import pytest

from models.pairs import PairSet, sample_pairs

# Five positives (indices 0-4) and seven negatives (5-11), deliberately unbalanced.
LABELS = np.array([1] * 5 + [0] * 7)


def _pairs(count: int = 200, seed: int = 0, labels: np.ndarray = LABELS) -> PairSet:
    return sample_pairs(labels, count, np.random.default_rng(seed))


def _kinds(pairs: PairSet, labels: np.ndarray = LABELS) -> tuple[np.ndarray, np.ndarray]:
    return labels[pairs.first], labels[pairs.second]


@pytest.mark.parametrize("count", [2, 3, 11, 200])
def test_length(count):
    pairs = _pairs(count)
    assert len(pairs) == count
    assert pairs.first.shape == pairs.second.shape == pairs.similar.shape == (count,)


@pytest.mark.parametrize("count", [2, 3, 11, 200])
def test_half_similar(count):
    assert int(_pairs(count).similar.sum()) == count // 2


def test_labels_match_images():
    pairs = _pairs()
    first, second = _kinds(pairs)
    np.testing.assert_array_equal(pairs.similar, (first == second).astype(np.int64))


def test_similar_split_between_classes():
    pairs = _pairs(200)
    first, _ = _kinds(pairs)
    similar = pairs.similar == 1
    positive_positive = int((similar & (first == 1)).sum())
    negative_negative = int((similar & (first == 0)).sum())
    assert positive_positive == 50
    assert negative_negative == 50


def test_dissimilar_one_of_each():
    pairs = _pairs()
    first, second = _kinds(pairs)
    dissimilar = pairs.similar == 0
    assert (first[dissimilar] + second[dissimilar] == 1).all()


def test_positive_on_both_sides():
    # Sides are swapped at random, so a positive is not always the first image.
    pairs = _pairs()
    first, _ = _kinds(pairs)
    dissimilar = pairs.similar == 0
    assert (first[dissimilar] == 1).any()
    assert (first[dissimilar] == 0).any()


@pytest.mark.parametrize("seed", range(5))
def test_no_image_paired_with_itself(seed):
    pairs = _pairs(seed=seed)
    assert (pairs.first != pairs.second).all()


def test_two_per_class_never_self_paired():
    labels = np.array([1, 0, 1, 0])
    pairs = _pairs(100, labels=labels)
    assert (pairs.first != pairs.second).all()


def test_indices_in_range():
    pairs = _pairs()
    assert pairs.first.min() >= 0
    assert pairs.second.min() >= 0
    assert pairs.first.max() < len(LABELS)
    assert pairs.second.max() < len(LABELS)


def test_every_image_used():
    pairs = _pairs(400)
    used = np.union1d(pairs.first, pairs.second)
    np.testing.assert_array_equal(used, np.arange(len(LABELS)))


def test_interleaved_labels():
    labels = np.array([0, 1, 0, 0, 1, 1, 0, 1])
    pairs = _pairs(100, labels=labels)
    first, second = labels[pairs.first], labels[pairs.second]
    np.testing.assert_array_equal(pairs.similar, (first == second).astype(np.int64))


def test_redrawn_each_call():
    rng = np.random.default_rng(0)
    epoch_one = sample_pairs(LABELS, 50, rng)
    epoch_two = sample_pairs(LABELS, 50, rng)
    assert not np.array_equal(epoch_one.first, epoch_two.first)


def test_same_seed_same_pairs():
    first_draw, second_draw = _pairs(seed=7), _pairs(seed=7)
    np.testing.assert_array_equal(first_draw.first, second_draw.first)
    np.testing.assert_array_equal(first_draw.second, second_draw.second)
    np.testing.assert_array_equal(first_draw.similar, second_draw.similar)


@pytest.mark.parametrize(
    "labels",
    [[1, 0, 0, 0], [1, 1, 0], [0, 0, 0, 0], [1, 1, 1], []],
    ids=["one-positive", "one-negative", "no-positive", "no-negative", "empty"],
)
def test_too_few_images_raises(labels):
    with pytest.raises(ValueError, match="at least 2 positive and 2 negative"):
        sample_pairs(np.array(labels), 10, np.random.default_rng(0))


@pytest.mark.parametrize("count", [0, 1])
def test_too_few_pairs_raises(count):
    with pytest.raises(ValueError, match="at least 2 pairs"):
        sample_pairs(LABELS, count, np.random.default_rng(0))


def test_two_dimensional_labels_raise():
    with pytest.raises(ValueError, match="1-d"):
        sample_pairs(LABELS.reshape(3, 4), 10, np.random.default_rng(0))
