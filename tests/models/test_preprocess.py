"""Tests for models.preprocess: resizing, channel layout, normalisation and the settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.imaging import DecodedScan
from models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessConfig,
    normalize,
    preprocess,
    to_unit_tensor,
)


def _scan(pixels: np.ndarray) -> DecodedScan:
    return DecodedScan(pixels=pixels.astype(np.float32), source_mode="L", bit_depth=8)


def _noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize("shape", [(40, 100), (100, 40), (40, 100, 3)], ids=["grey-wide", "grey-tall", "colour"])
@pytest.mark.parametrize("resize_mode", ["stretch", "letterbox"])
def test_output_shape_and_dtype(shape, resize_mode):
    config = PreprocessConfig(image_size=32, resize_mode=resize_mode)
    tensor = preprocess(_scan(_noise(shape)), config)
    assert tensor.shape == (3, 32, 32)
    assert tensor.dtype == torch.float32


def test_unit_tensor_in_unit_range():
    tensor = to_unit_tensor(_scan(_noise((50, 70))), PreprocessConfig(image_size=32))
    assert tensor.min() >= 0.0
    assert tensor.max() <= 1.0


def test_grey_replicated_to_three_channels():
    tensor = to_unit_tensor(_scan(_noise((50, 70))), PreprocessConfig(image_size=32))
    assert torch.equal(tensor[0], tensor[1])
    assert torch.equal(tensor[0], tensor[2])


def test_colour_channels_kept_apart():
    pixels = np.zeros((32, 32, 3), dtype=np.float32)
    pixels[..., 0] = 0.2
    pixels[..., 1] = 0.5
    pixels[..., 2] = 0.9
    tensor = to_unit_tensor(_scan(pixels), PreprocessConfig(image_size=32))
    assert tensor[0].mean().item() == pytest.approx(0.2)
    assert tensor[1].mean().item() == pytest.approx(0.5)
    assert tensor[2].mean().item() == pytest.approx(0.9)


def test_same_size_is_unchanged():
    pixels = _noise((32, 32))
    tensor = to_unit_tensor(_scan(pixels), PreprocessConfig(image_size=32))
    assert torch.equal(tensor[0], torch.from_numpy(pixels))


@pytest.mark.parametrize("channel", [0, 1, 2])
def test_normalize_constant_uses_imagenet_stats(channel):
    value = 0.6
    tensor = preprocess(_scan(np.full((20, 20), value)), PreprocessConfig(image_size=16))
    expected = (value - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
    assert torch.allclose(tensor[channel], torch.full((16, 16), expected), atol=1e-5)


def test_default_stats_are_imagenet():
    config = PreprocessConfig()
    assert config.mean == (0.485, 0.456, 0.406)
    assert config.std == (0.229, 0.224, 0.225)


def test_normalize_batch_matches_single():
    config = PreprocessConfig(image_size=16)
    batch = torch.rand(4, 3, 16, 16)
    normalised = normalize(batch, config)
    assert torch.allclose(normalised[2], normalize(batch[2], config))


def test_normalize_returns_new_tensor():
    batch = torch.rand(3, 16, 16)
    original = batch.clone()
    normalize(batch, PreprocessConfig(image_size=16))
    assert torch.equal(batch, original)


@pytest.mark.parametrize("shape", [(16, 16), (1, 16, 16), (2, 1, 16, 16), (1, 2, 3, 16, 16)])
def test_normalize_bad_shape_raises(shape):
    with pytest.raises(ValueError, match="expected"):
        normalize(torch.zeros(shape), PreprocessConfig(image_size=16))


# --- letterbox and stretch --------------------------------------------------------------


def test_letterbox_pads_with_fill():
    # A 16 x 64 black scan letterboxed to 32 px becomes an 8-row band, so rows 0-11 and
    # 20-31 are padding.
    config = PreprocessConfig(image_size=32, resize_mode="letterbox", fill=0.75)
    tensor = to_unit_tensor(_scan(np.zeros((16, 64))), config)
    assert torch.all(tensor[:, :12, :] == 0.75)
    assert torch.all(tensor[:, 20:, :] == 0.75)


def test_letterbox_keeps_content_band():
    config = PreprocessConfig(image_size=32, resize_mode="letterbox", fill=0.75)
    tensor = to_unit_tensor(_scan(np.zeros((16, 64))), config)
    assert torch.allclose(tensor[:, 12:20, :], torch.zeros(3, 8, 32))


def test_letterbox_tall_pads_columns():
    config = PreprocessConfig(image_size=32, resize_mode="letterbox", fill=1.0)
    tensor = to_unit_tensor(_scan(np.zeros((64, 16))), config)
    assert torch.all(tensor[:, :, :12] == 1.0)
    assert torch.all(tensor[:, :, 20:] == 1.0)


def test_letterbox_keeps_aspect_of_content():
    # A scan 3 times wider than high keeps that ratio inside the square.
    config = PreprocessConfig(image_size=48, resize_mode="letterbox", fill=1.0)
    tensor = to_unit_tensor(_scan(np.zeros((20, 60))), config)
    content_rows = int((tensor[0] < 0.5).any(dim=1).sum())
    content_columns = int((tensor[0] < 0.5).any(dim=0).sum())
    assert content_columns == 48
    assert content_rows == 16


def test_stretch_fills_square():
    config = PreprocessConfig(image_size=32, resize_mode="stretch", fill=0.75)
    tensor = to_unit_tensor(_scan(np.zeros((16, 64))), config)
    assert torch.allclose(tensor, torch.zeros(3, 32, 32))


# --- settings -------------------------------------------------------------------------------


def test_config_dict_roundtrip():
    config = PreprocessConfig(image_size=64, resize_mode="letterbox", fill=0.5, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    assert PreprocessConfig.from_dict(config.to_dict()) == config


def test_config_dict_lists_for_json():
    values = PreprocessConfig().to_dict()
    assert values["mean"] == list(IMAGENET_MEAN)
    assert values["std"] == list(IMAGENET_STD)


def test_config_from_partial_dict():
    # Missing keys take the class defaults, except the decode setting older checkpoints lack.
    expected = PreprocessConfig(image_size=64, decode_oversampling=2)
    assert PreprocessConfig.from_dict({"image_size": 64}) == expected


def test_config_unknown_key_named():
    with pytest.raises(ValueError, match="interpolation"):
        PreprocessConfig.from_dict({"image_size": 64, "interpolation": "nearest"})


@pytest.mark.parametrize("image_size", [0, 8, 15, 4097])
def test_config_bad_image_size(image_size):
    with pytest.raises(ValueError, match="image_size"):
        PreprocessConfig(image_size=image_size)


@pytest.mark.parametrize("image_size", [16, 4096])
def test_config_image_size_limits_accepted(image_size):
    assert PreprocessConfig(image_size=image_size).image_size == image_size


def test_config_bad_resize_mode():
    with pytest.raises(ValueError, match="resize_mode"):
        PreprocessConfig(resize_mode="crop")


@pytest.mark.parametrize(
    "options",
    [{"mean": (0.5, 0.5)}, {"std": (0.2, 0.2)}, {"std": (0.2, 0.0, 0.2)}],
    ids=["short-mean", "short-std", "zero-std"],
)
def test_config_bad_stats(options):
    with pytest.raises(ValueError, match="std"):
        PreprocessConfig(**options)


@pytest.mark.parametrize("shape", [(8, 8, 4), (8, 8, 1), (8,), (2, 8, 8, 3)])
def test_bad_pixel_shape_raises(shape):
    with pytest.raises(ValueError, match="expected pixels"):
        to_unit_tensor(_scan(np.zeros(shape)), PreprocessConfig(image_size=16))
