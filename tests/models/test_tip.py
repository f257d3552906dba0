"""Threat image projection: the product of transmissions, item boxes, and the shared decode and encode."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models.imaging import load_scan
from models.tip import (
    VISIBLE_ABSORPTION,
    TipConfig,
    cargo_area,
    compose,
    crop_visible,
    generate_item,
    project,
    warp_item,
)
from models.tip_io import FULL_SCALE, decode_transmission, encode_transmission, quantise


def _container_scan(height: int = 80, width: int = 200) -> np.ndarray:
    """Open beam (0.98) around a container (transmission 0.4 to 0.8) spanning rows 20-69 and columns 30-179."""
    rng = np.random.default_rng(0)
    scan = np.full((height, width), 0.98)
    scan[20:70, 30:180] = rng.uniform(0.4, 0.8, (50, 150))
    return scan


def _changed_box(before: np.ndarray, after: np.ndarray) -> tuple[int, int, int, int]:
    rows, columns = np.nonzero(before != after)
    return int(columns.min()), int(rows.min()), int(columns.max()) + 1, int(rows.max()) + 1


def test_compose_is_product_of_transmissions():
    scan = _container_scan()
    item = np.linspace(0.1, 1.0, 12).reshape(3, 4)

    composed = compose(scan, item, top=30, left=50)

    expected = scan.copy()
    expected[30:33, 50:54] = scan[30:33, 50:54] * item
    np.testing.assert_array_equal(composed, expected)


def test_compose_leaves_scan_untouched():
    scan = _container_scan()
    before = scan.copy()
    compose(scan, np.full((2, 2), 0.5), top=25, left=40)
    np.testing.assert_array_equal(scan, before)


def test_compose_rejects_item_outside():
    with pytest.raises(ValueError, match="does not fit"):
        compose(_container_scan(), np.full((10, 10), 0.5), top=75, left=0)


def test_cargo_area_finds_container():
    assert cargo_area(_container_scan()) == (30, 20, 180, 70)


def test_cargo_area_open_beam_raises():
    with pytest.raises(ValueError, match="no cargo area"):
        cargo_area(np.full((20, 30), 0.99))


def test_projection_box_matches_changed_pixels():
    scan = _container_scan()
    item, _, _ = generate_item(np.random.default_rng(1))

    projection = project(scan, item, np.random.default_rng(2))

    assert _changed_box(scan, projection.composed) == projection.box


def test_projection_inside_cargo_area():
    scan = _container_scan()
    for seed in range(10):
        item, _, _ = generate_item(np.random.default_rng(seed))
        x0, y0, x1, y1 = project(scan, item, np.random.default_rng(seed)).box
        assert 30 <= x0 < x1 <= 180
        assert 20 <= y0 < y1 <= 70


def test_projection_equals_product_inside_box():
    scan = _container_scan()
    item, _, _ = generate_item(np.random.default_rng(3))
    projection = project(scan, item, np.random.default_rng(4))
    x0, y0, x1, y1 = projection.box

    ratio = projection.composed[y0:y1, x0:x1] / scan[y0:y1, x0:x1]

    assert ratio.max() <= 1.0
    assert ratio.min() < 1.0 - VISIBLE_ABSORPTION


def test_thickness_is_a_power_of_transmission():
    item = np.full((4, 4), 0.5)
    thick = warp_item(item, scale=1.0, angle_degrees=0.0, thickness=2.0)
    np.testing.assert_allclose(thick[2:-2, 2:-2], 0.25)


def test_warp_rotation_keeps_area():
    item = np.ones((40, 40))
    item[10:30, 5:35] = 0.2
    straight = (warp_item(item, 1.0, 0.0) < 0.5).sum()
    turned = (warp_item(item, 1.0, 90.0) < 0.5).sum()
    assert turned == pytest.approx(straight, rel=0.05)


def test_crop_visible_sets_faint_pixels_to_one():
    item = np.ones((5, 5))
    item[2, 2] = 0.5
    item[0, 0] = 1.0 - VISIBLE_ABSORPTION / 2
    np.testing.assert_array_equal(crop_visible(item), [[0.5]])


@pytest.mark.parametrize("seed", range(6))
def test_generated_items_absorb(seed):
    item, kind, material = generate_item(np.random.default_rng(seed))
    assert kind in ("block", "cylinder", "blob")
    assert material in ("metal", "organic")
    assert 0 < item.min() < 1 - VISIBLE_ABSORPTION
    assert item.max() == 1.0


def test_config_rejects_bad_scale():
    with pytest.raises(ValueError, match="scale"):
        TipConfig(scale=(0.5, 0.2))


@pytest.fixture
def source_scan(tmp_path):
    """An 8-bit grey JPEG of a container, as the cargo scanners write them."""
    pixels = (_container_scan() * 255).astype(np.uint8)
    path = tmp_path / "source.jpg"
    Image.fromarray(pixels).convert("RGB").save(path, quality=90)
    return path


def test_negative_is_decode_then_encode(source_scan, tmp_path):
    negative = tmp_path / "negative.png"

    encode_transmission(negative, decode_transmission(source_scan))

    expected = quantise(decode_transmission(source_scan))
    np.testing.assert_array_equal(np.asarray(Image.open(negative)), expected)


def test_negative_reads_back_as_source(source_scan, tmp_path):
    negative = tmp_path / "negative.png"
    encode_transmission(negative, decode_transmission(source_scan))

    # The decoder reads the 16-bit PNG back at the source's values, within one 16-bit step.
    difference = np.abs(load_scan(negative).pixels - load_scan(source_scan).pixels)
    assert difference.max() <= 1.0 / FULL_SCALE


def test_positive_and_negative_share_format(source_scan, tmp_path):
    scan = decode_transmission(source_scan)
    positive, negative = tmp_path / "positive.png", tmp_path / "negative.png"
    item, _, _ = generate_item(np.random.default_rng(5))

    encode_transmission(positive, project(scan, item, np.random.default_rng(6)).composed)
    encode_transmission(negative, scan)

    with Image.open(positive) as first, Image.open(negative) as second:
        assert (first.format, first.mode, first.size) == (second.format, second.mode, second.size)


def test_decode_shrinks_longer_side(source_scan):
    assert decode_transmission(source_scan, max_side=100).shape == (40, 100)


@pytest.mark.parametrize("share, organic", [(0.0, 0), (1.0, 200)])
def test_organic_share_sets_the_material(share, organic):
    rng = np.random.default_rng(7)
    materials = [generate_item(rng, size=16, organic_share=share)[2] for _ in range(200)]
    assert materials.count("organic") == organic


def test_default_share_draws_both_materials():
    rng = np.random.default_rng(7)
    materials = [generate_item(rng, size=16)[2] for _ in range(200)]
    assert 60 < materials.count("organic") < 140


def test_organic_share_out_of_range_rejected():
    with pytest.raises(ValueError, match="organic_share"):
        generate_item(np.random.default_rng(0), organic_share=1.5)
