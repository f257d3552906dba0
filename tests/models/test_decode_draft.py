"""JPEG draft decoding in models.imaging.load_scan: reduced only where it is safe.

Every image is written into tmp_path by the test that reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.imaging import DecodeTarget, load_scan
from models.inference import decode_one, decode_target
from models.preprocess import PreprocessConfig, to_unit_tensor

ORIENTATION_TAG = 0x0112


def _smooth(width: int, height: int, channels: int = 1) -> np.ndarray:
    """A smooth 8-bit test pattern, so DCT-domain scaling and full decoding agree closely."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = 127.5 + 60 * np.sin(x / width * 7.0) + 60 * np.cos(y / height * 5.0)
    layers = [np.clip(base + 10 * index, 0, 255) for index in range(channels)]
    array = np.stack(layers, axis=-1) if channels > 1 else layers[0]
    return array.round().astype(np.uint8)


def _jpeg(path: Path, width: int, height: int, channels: int = 1, **options) -> Path:
    Image.fromarray(_smooth(width, height, channels)).save(path, quality=95, **options)
    return path


def test_large_jpeg_reduced_to_twice_target(tmp_path):
    path = _jpeg(tmp_path / "wide.jpg", 2000, 1000)
    scan = load_scan(path, target=DecodeTarget(size=224))
    assert scan.pixels.shape == (500, 1000)
    assert scan.width == 2000
    assert scan.height == 1000


def test_reduction_never_below_twice_target(tmp_path):
    for width, height in [(4000, 4000), (1800, 900), (3600, 1000), (899, 5000)]:
        path = _jpeg(tmp_path / f"{width}x{height}.jpg", width, height)
        pixels = load_scan(path, target=DecodeTarget(size=224)).pixels
        assert min(pixels.shape[:2]) >= 448, (width, height, pixels.shape)


@pytest.mark.parametrize("oversampling", [1, 2, 4])
def test_reduction_keeps_the_oversampling(tmp_path, oversampling):
    for width, height in [(4000, 4000), (1800, 900), (3600, 1000), (1200, 600)]:
        path = _jpeg(tmp_path / f"{width}x{height}.jpg", width, height)
        pixels = load_scan(path, target=DecodeTarget(size=224, oversampling=oversampling)).pixels
        # A side already below the floor is decoded in full, never made smaller.
        floor = min(224 * oversampling, height)
        assert min(pixels.shape[:2]) >= floor, (width, height, pixels.shape)


def test_oversampling_one_reduces_further(tmp_path):
    path = _jpeg(tmp_path / "wide.jpg", 2000, 1000)
    assert load_scan(path, target=DecodeTarget(size=224, oversampling=1)).pixels.shape == (250, 500)


def test_eighth_scale_for_very_large_jpeg(tmp_path):
    path = _jpeg(tmp_path / "huge.jpg", 4000, 4000)
    assert load_scan(path, target=DecodeTarget(size=224)).pixels.shape == (500, 500)


def test_letterbox_keeps_longer_side(tmp_path):
    path = _jpeg(tmp_path / "long.jpg", 4000, 1000)
    scan = load_scan(path, target=DecodeTarget(size=224, keep_aspect=True))
    assert scan.pixels.shape == (125, 500)
    assert (scan.width, scan.height) == (4000, 1000)


def test_small_jpeg_untouched(tmp_path):
    path = _jpeg(tmp_path / "small.jpg", 800, 600, channels=3)
    drafted = load_scan(path, target=DecodeTarget(size=224))
    full = load_scan(path)
    assert drafted.full_size is None
    np.testing.assert_array_equal(drafted.pixels, full.pixels)


def test_sixteen_bit_png_untouched(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 2000).round().astype(np.uint16), (1000, 1))
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    drafted = load_scan(path, target=DecodeTarget(size=224))
    full = load_scan(path)
    assert drafted.bit_depth == 16
    assert drafted.full_size is None
    np.testing.assert_array_equal(drafted.pixels, full.pixels)


def test_sixteen_bit_tiff_untouched(tmp_path):
    ramp = np.tile(np.linspace(0, 4095, 1000).round().astype(np.uint16), (1000, 1))
    path = tmp_path / "ramp12.tif"
    Image.fromarray(ramp).save(path)
    drafted = load_scan(path, target=DecodeTarget(size=224))
    full = load_scan(path)
    assert drafted.bit_depth == 12
    np.testing.assert_array_equal(drafted.pixels, full.pixels)


def test_rotated_jpeg_reports_oriented_size(tmp_path):
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6
    path = _jpeg(tmp_path / "rotated.jpg", 2000, 1000, exif=exif)
    scan = load_scan(path, target=DecodeTarget(size=224))
    assert scan.pixels.shape == (1000, 500)
    assert (scan.width, scan.height) == (1000, 2000)


@pytest.mark.parametrize("oversampling", [1, 2])
def test_drafted_input_close_to_full_decode(tmp_path, oversampling):
    # The network input from a drafted decode differs from the full decode only by the
    # DCT-domain scaling, which on a smooth image is a small fraction of the range.
    path = _jpeg(tmp_path / "colour.jpg", 1920, 1080, channels=3)
    config = PreprocessConfig(image_size=224, decode_oversampling=oversampling)
    drafted = to_unit_tensor(load_scan(path, target=decode_target(config)), config)
    full = to_unit_tensor(load_scan(path), config)
    assert float((drafted - full).abs().mean()) < 0.01
    assert float((drafted - full).abs().max()) < 0.1


def test_decode_target_follows_config():
    assert decode_target(PreprocessConfig(image_size=128)) == DecodeTarget(size=128, keep_aspect=False, oversampling=1)
    letterbox = PreprocessConfig(image_size=96, resize_mode="letterbox", decode_oversampling=2)
    assert decode_target(letterbox) == DecodeTarget(size=96, keep_aspect=True, oversampling=2)
    tiles = PreprocessConfig(image_size=64, mode="tiles", tile_scan_height=256, tile_stride=32, decode_oversampling=2)
    assert decode_target(tiles) == DecodeTarget(size=256, keep_aspect=False, oversampling=2)


def test_old_checkpoint_keeps_oversampling_two():
    # Models saved before the setting existed were trained on scans decoded at 2x.
    stored = PreprocessConfig(image_size=128).to_dict()
    del stored["decode_oversampling"]
    assert PreprocessConfig.from_dict(stored).decode_oversampling == 2
    assert PreprocessConfig.from_dict(PreprocessConfig(image_size=128).to_dict()).decode_oversampling == 1


@pytest.mark.parametrize("oversampling", [0, 9])
def test_oversampling_out_of_range_rejected(oversampling):
    with pytest.raises(ValueError, match="decode_oversampling"):
        PreprocessConfig(decode_oversampling=oversampling)


@pytest.mark.parametrize("resize_mode", ["stretch", "letterbox"])
def test_decode_one_reports_file_size(tmp_path, resize_mode):
    path = _jpeg(tmp_path / "scan.jpg", 2400, 1200)
    config = PreprocessConfig(image_size=64, resize_mode=resize_mode)
    decoded = decode_one(path, config, max_image_pixels=10**8)
    assert decoded.error is None
    assert decoded.image.shape == (3, 64, 64)
    assert decoded.image.dtype == torch.float32
    assert (decoded.width, decoded.height) == (2400, 1200)


def test_pixel_limit_uses_file_size(tmp_path):
    # The limit applies to the size in the header, whatever the decoded size would be.
    path = _jpeg(tmp_path / "big.jpg", 2000, 2000)
    decoded = decode_one(path, PreprocessConfig(image_size=32), max_image_pixels=1_000_000)
    assert decoded.image is None
    assert "over the limit" in decoded.error
