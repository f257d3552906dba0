"""Tests for models.loss: the contrastive loss against a plain-Python reference."""

from __future__ import annotations

import math

import pytest
import torch

from models.loss import DEFAULT_MARGIN, ContrastiveLoss, pair_distance


def _reference_loss(first: torch.Tensor, second: torch.Tensor, similar: torch.Tensor, margin: float) -> float:
    """Compute y * D^2 + (1 - y) * max(0, m - D)^2, averaged, one pair at a time."""
    total = 0.0
    for a, b, y in zip(first.tolist(), second.tolist(), similar.tolist()):
        distance = math.sqrt(sum((x - z) ** 2 for x, z in zip(a, b)))
        total += y * distance**2 + (1 - y) * max(0.0, margin - distance) ** 2
    return total / len(first)


def _random_pairs(dtype: torch.dtype, count: int = 32, dim: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    first = torch.randn(count, dim, generator=generator, dtype=dtype)

    # Offsets of random length put pair distances between 0 and about 2, so dissimilar
    # pairs fall both inside and beyond the margins under test.
    scale = torch.rand(count, 1, generator=generator, dtype=dtype) * 0.4
    second = first + torch.randn(count, dim, generator=generator, dtype=dtype) * scale
    similar = torch.randint(0, 2, (count,), generator=generator)
    return first, second, similar


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("margin", [0.5, 1.0])
def test_matches_reference(margin, dtype):
    first, second, similar = _random_pairs(dtype)
    loss = ContrastiveLoss(margin=margin)(first, second, similar)
    expected = _reference_loss(first, second, similar, margin)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    assert loss.item() == pytest.approx(expected, rel=tolerance)


@pytest.mark.parametrize("margin", [0.5, 1.0])
def test_random_pairs_use_both_push_branches(margin):
    # The reference comparison above only means something if some dissimilar pairs lie
    # inside the margin and some beyond it.
    first, second, similar = _random_pairs(torch.float64)
    distance = pair_distance(first, second)[similar == 0]
    assert (distance < margin).any()
    assert (distance > margin).any()


def test_output_dtype_follows_input():
    first, second, similar = _random_pairs(torch.float64)
    assert ContrastiveLoss()(first, second, similar).dtype == torch.float64


def test_default_margin():
    assert ContrastiveLoss().margin == DEFAULT_MARGIN == 0.5


@pytest.mark.parametrize("label_dtype", [torch.bool, torch.int64, torch.float32])
def test_label_dtype_irrelevant(label_dtype):
    first, second, similar = _random_pairs(torch.float32)
    expected = ContrastiveLoss()(first, second, similar.float())
    assert ContrastiveLoss()(first, second, similar.to(label_dtype)).item() == pytest.approx(expected.item())


def test_identical_similar_pair_zero():
    point = torch.randn(1, 8)
    assert ContrastiveLoss()(point, point.clone(), torch.ones(1)).item() == 0.0


def test_dissimilar_beyond_margin_zero():
    first = torch.zeros(1, 4)
    second = torch.tensor([[0.6, 0.0, 0.0, 0.0]])
    assert ContrastiveLoss(margin=0.5)(first, second, torch.zeros(1)).item() == 0.0


def test_dissimilar_inside_margin_positive():
    first = torch.zeros(1, 4)
    second = torch.tensor([[0.3, 0.0, 0.0, 0.0]])
    loss = ContrastiveLoss(margin=0.5)(first, second, torch.zeros(1))
    assert loss.item() == pytest.approx(0.2**2)


def test_similar_pair_is_squared_distance():
    first = torch.zeros(1, 4)
    second = torch.tensor([[0.0, 3.0, 4.0, 0.0]])
    assert ContrastiveLoss()(first, second, torch.ones(1)).item() == pytest.approx(25.0)


@pytest.mark.parametrize("label", [0, 1], ids=["dissimilar", "similar"])
def test_identical_pair_gradient_finite(label):
    first = torch.randn(2, 8, requires_grad=True)
    second = first.detach().clone().requires_grad_(True)
    loss = ContrastiveLoss()(first, second, torch.full((2,), label))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(first.grad).all()
    assert torch.isfinite(second.grad).all()


def test_gradient_pulls_similar_together():
    first = torch.zeros(1, 2, requires_grad=True)
    second = torch.tensor([[1.0, 0.0]])
    ContrastiveLoss()(first, second, torch.ones(1)).backward()
    # Descending the gradient moves the first point towards the second.
    assert first.grad[0, 0] < 0


@pytest.mark.parametrize(
    ("first_shape", "second_shape", "labels_shape"),
    [
        pytest.param((4, 8), (4, 7), (4,), id="dim-mismatch"),
        pytest.param((4, 8), (3, 8), (4,), id="count-mismatch"),
        pytest.param((4, 8, 1), (4, 8, 1), (4,), id="three-dim"),
        pytest.param((8,), (8,), (1,), id="one-dim"),
        pytest.param((4, 8), (4, 8), (3,), id="short-labels"),
        pytest.param((4, 8), (4, 8), (4, 1), id="column-labels"),
    ],
)
def test_shape_errors(first_shape, second_shape, labels_shape):
    with pytest.raises(ValueError, match="expected"):
        ContrastiveLoss()(torch.zeros(first_shape), torch.zeros(second_shape), torch.zeros(labels_shape))


def test_empty_batch_raises():
    with pytest.raises(ValueError, match="empty batch"):
        ContrastiveLoss()(torch.zeros(0, 8), torch.zeros(0, 8), torch.zeros(0))


@pytest.mark.parametrize("margin", [0.0, -0.5])
def test_bad_margin_raises(margin):
    with pytest.raises(ValueError, match="margin"):
        ContrastiveLoss(margin=margin)


def test_pair_distance_rows():
    first = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    second = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    distance = pair_distance(first, second)
    assert distance.shape == (2,)
    assert distance[0].item() == pytest.approx(5.0)
    assert distance[1].item() == pytest.approx(0.0, abs=1e-5)
