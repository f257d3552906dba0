"""Tests for models.synthetic: rendered scans and their 16-bit PNG files."""

from __future__ import annotations

import numpy as np
import pytest

from models.imaging import load_scan
from models.synthetic import FULL_SCALE, SceneConfig, render_dataset, render_scan, write_png16

SCENE = SceneConfig(width=96, height=48)


@pytest.mark.parametrize("with_item", [True, False], ids=["positive", "negative"])
def test_render_dtype_and_shape(with_item):
    scan = render_scan(np.random.default_rng(0), with_item, SCENE)
    assert scan.pixels.dtype == np.uint16
    assert scan.pixels.shape == (48, 96)


def test_render_default_size():
    scan = render_scan(np.random.default_rng(0), False)
    assert scan.pixels.shape == (SceneConfig().height, SceneConfig().width)


def test_negative_has_no_box():
    assert render_scan(np.random.default_rng(0), False, SCENE).item_box is None


@pytest.mark.parametrize("seed", range(4))
def test_positive_box_inside_image(seed):
    x0, y0, x1, y1 = render_scan(np.random.default_rng(seed), True, SCENE).item_box
    assert 0 <= x0 < x1 <= SCENE.width
    assert 0 <= y0 < y1 <= SCENE.height


@pytest.mark.parametrize("seed", range(4))
def test_positive_item_is_dark(seed):
    # The item attenuates at least exp(-2.5) on top of the goods, so its box transmits far
    # less than the scan as a whole.
    scan = render_scan(np.random.default_rng(seed), True, SCENE)
    x0, y0, x1, y1 = scan.item_box
    box_mean = scan.pixels[y0:y1, x0:x1].astype(np.float64).mean()
    assert box_mean < 0.5 * scan.pixels.mean()


def test_render_uses_sixteen_bit_range():
    pixels = render_scan(np.random.default_rng(0), False, SCENE).pixels
    assert int(pixels.max()) > 255 * 16


def test_render_reproducible():
    first = render_scan(np.random.default_rng(9), True, SCENE)
    second = render_scan(np.random.default_rng(9), True, SCENE)
    np.testing.assert_array_equal(first.pixels, second.pixels)


def test_png16_roundtrip(tmp_path):
    pixels = render_scan(np.random.default_rng(0), True, SCENE).pixels
    path = tmp_path / "scan.png"
    write_png16(path, pixels)
    scan = load_scan(path)
    assert scan.source_mode.startswith("I;16")
    assert scan.bit_depth == 16
    np.testing.assert_allclose(scan.pixels, pixels / FULL_SCALE, atol=1e-6)


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((8, 8), dtype=np.uint8), np.zeros((8, 8), dtype=np.float32), np.zeros((8, 8, 3), dtype=np.uint16)],
    ids=["uint8", "float32", "three-dim"],
)
def test_png16_bad_input_raises(tmp_path, pixels):
    with pytest.raises(ValueError, match="uint16"):
        write_png16(tmp_path / "bad.png", pixels)


def test_render_dataset_layout(tmp_path):
    written = render_dataset(tmp_path, positives=2, negatives=3, seed=1, config=SCENE)
    assert len(written["positive"]) == 2
    assert len(written["negative"]) == 3
    assert sorted(path.name for path in (tmp_path / "negative").iterdir()) == [path.name for path in written["negative"]]
