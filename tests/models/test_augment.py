"""Tests for models.augment.augment_batch: flips, rotations and their fill."""

from __future__ import annotations

import pytest
import torch

from models.augment import augment_batch


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(count: int = 8, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=_generator(seed))


@pytest.mark.parametrize("rotation", [0.0, 10.0])
def test_shape_kept(rotation):
    images = _images()
    assert augment_batch(images, _generator(), max_rotation_degrees=rotation).shape == images.shape


def test_dtype_kept():
    images = _images().double()
    assert augment_batch(images, _generator()).dtype == torch.float64


def test_input_not_modified():
    images = _images()
    original = images.clone()
    augment_batch(images, _generator())
    assert torch.equal(images, original)


@pytest.mark.parametrize("seed", range(3))
def test_no_rotation_flips_or_keeps(seed):
    images = _images(count=16)
    augmented = augment_batch(images, _generator(seed), max_rotation_degrees=0.0)
    unchanged = (augmented == images).flatten(1).all(dim=1)
    flipped = (augmented == images.flip(dims=[3])).flatten(1).all(dim=1)
    assert (unchanged | flipped).all()


def test_no_rotation_uses_both_outcomes():
    images = _images(count=16)
    augmented = augment_batch(images, _generator(), max_rotation_degrees=0.0)
    flipped = (augmented == images.flip(dims=[3])).flatten(1).all(dim=1)
    assert flipped.any()
    assert not flipped.all()


def _corners(images: torch.Tensor) -> torch.Tensor:
    """Return the four corner pixels of channel 0, shape (N, 4)."""
    return torch.stack(
        [images[:, 0, 0, 0], images[:, 0, 0, -1], images[:, 0, -1, 0], images[:, 0, -1, -1]], dim=1
    )


@pytest.mark.parametrize("fill", [1.0, 0.5])
def test_rotation_corners_take_fill(fill):
    # Black images: any value above 0 at a corner came from the fill outside the image.
    rotated = augment_batch(torch.zeros(16, 3, 32, 32), _generator(), max_rotation_degrees=30.0, fill=fill)
    corners = _corners(rotated)
    assert (corners > 0).all()
    assert torch.isclose(corners.max(), torch.tensor(fill))
    assert rotated.max() <= fill + 1e-6


def test_rotation_keeps_centre():
    rotated = augment_batch(torch.zeros(16, 3, 32, 32), _generator(), max_rotation_degrees=30.0, fill=1.0)
    assert torch.allclose(rotated[:, :, 14:18, 14:18], torch.zeros(16, 3, 4, 4), atol=1e-6)


def test_fill_image_unchanged_by_rotation():
    images = torch.full((4, 3, 32, 32), 0.5)
    rotated = augment_batch(images, _generator(), max_rotation_degrees=30.0, fill=0.5)
    assert torch.allclose(rotated, images, atol=1e-6)


def test_same_seed_same_output():
    images = _images()
    first = augment_batch(images, _generator(7))
    second = augment_batch(images, _generator(7))
    assert torch.equal(first, second)


def test_different_seed_differs():
    images = _images()
    assert not torch.equal(augment_batch(images, _generator(7)), augment_batch(images, _generator(8)))


def test_three_dim_input_raises():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        augment_batch(torch.zeros(3, 32, 32), _generator())
