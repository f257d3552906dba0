"""Tile geometry: coverage of the whole scan, box mapping back to scan pixels, padding of narrow scans."""

from __future__ import annotations

import numpy as np
import pytest

from models.imaging import DecodedScan
from models.preprocess import PreprocessConfig
from models.tiling import (
    MAX_TILES_PER_SCAN,
    TileGeometry,
    box_overlap,
    cut_tiles,
    item_coverage,
    tile_count,
    tile_offsets,
    to_scan_box,
)


def _scan(width: int, height: int, full_size: tuple[int, int] | None = None) -> DecodedScan:
    pixels = np.random.default_rng(0).random((height, width), dtype=np.float32)
    return DecodedScan(pixels=pixels, source_mode="I;16", bit_depth=16, full_size=full_size)


@pytest.mark.parametrize(("length", "expected"), [(112, [0]), (100, [0]), (224, [0, 56, 112]), (250, [0, 56, 112, 138])])
def test_tile_offsets_reach_far_edge(length, expected):
    assert tile_offsets(length, 112, 56) == expected


@pytest.mark.parametrize(("width", "height"), [(1000, 300), (4099, 1187), (333, 97), (448, 448), (5000, 1024)])
def test_tiles_cover_every_scan_pixel(width, height):
    geometry = TileGeometry(scan_height=256, tile_size=64, stride=48)
    tiles = cut_tiles(_scan(width, height), geometry)

    covered = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in tiles.boxes:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert tiles.boxes[:, 2].max() == width
    assert tiles.boxes[:, 3].max() == height
    assert len(tiles.images) == tiles.grid[0] * tiles.grid[1] == tile_count(width, height, geometry)


def test_tile_pixels_match_their_box():
    # A bright square drawn at a known place must appear in exactly the tiles whose boxes hold it.
    width, height = 1200, 400
    pixels = np.zeros((height, width), dtype=np.float32)
    pixels[200:240, 900:940] = 1.0
    geometry = TileGeometry(scan_height=200, tile_size=50, stride=25)
    tiles = cut_tiles(DecodedScan(pixels, "L", 8), geometry)

    bright = tiles.images.amax(dim=(1, 2, 3)).numpy() > 0.5
    holds_square = box_overlap(tiles.boxes, np.array([[900, 200, 940, 240]]))[:, 0] > 0
    assert bright.any()
    assert np.array_equal(bright, holds_square)


@pytest.mark.parametrize("scale", [0.05, 0.37, 1.0, 2.5])
def test_box_maps_back_at_any_scale(scale):
    width, height = 4000, 1000
    box = (12.0 * scale, 30.0 * scale, 500.0 * scale, 640.0 * scale)

    x0, y0, x1, y1 = to_scan_box(box, scale, width, height)

    assert (x0, y0) == (12, 30)
    assert (x1, y1) == (500, 640)


def test_box_mapping_clips_to_scan():
    assert to_scan_box((-3.0, -1.0, 900.0, 900.0), 0.5, 1000, 800) == (0, 0, 1000, 800)


def test_draft_decoded_scan_maps_to_full_size():
    # A JPEG decoded at 1/4 scale still reports boxes in the file's full-size pixels.
    geometry = TileGeometry(scan_height=128, tile_size=64, stride=32)
    tiles = cut_tiles(_scan(1000, 250, full_size=(4000, 1000)), geometry)

    assert tiles.boxes[:, 2].max() == 4000
    assert tiles.boxes[:, 3].max() == 1000
    assert tiles.boxes[0].tolist() == [0, 0, 500, 500]


def test_scan_narrower_than_tile_is_padded():
    geometry = TileGeometry(scan_height=128, tile_size=64, stride=32)
    tiles = cut_tiles(_scan(10, 100), geometry)

    assert tiles.grid == (3, 1)
    assert tiles.images.shape == (3, 1, 64, 64)
    assert tiles.boxes[:, 2].tolist() == [10, 10, 10]
    assert float(tiles.images[:, :, :, 20:].min()) == 1.0


def test_tiny_scan_is_tiled_not_rejected():
    tiles = cut_tiles(_scan(1, 1), TileGeometry(scan_height=64, tile_size=64, stride=32))

    assert tiles.images.shape == (1, 1, 64, 64)
    assert tiles.boxes.tolist() == [[0, 0, 1, 1]]


def test_colour_scan_keeps_three_channels():
    pixels = np.random.default_rng(1).random((90, 300, 3), dtype=np.float32)
    tiles = cut_tiles(DecodedScan(pixels, "RGB", 8), TileGeometry(scan_height=64, tile_size=32, stride=32))

    assert tiles.images.shape[1:] == (3, 32, 32)


def test_too_many_tiles_rejected():
    geometry = TileGeometry(scan_height=64, tile_size=16, stride=1)
    width = MAX_TILES_PER_SCAN

    with pytest.raises(ValueError, match="more than the limit"):
        cut_tiles(_scan(width, 64), geometry)


@pytest.mark.parametrize(
    ("settings", "message"),
    [(dict(tile_size=8), "tile_size"), (dict(tile_size=512), "tile_size"), (dict(stride=0), "stride"), (dict(stride=200), "stride")],
)
def test_invalid_geometry_rejected(settings, message):
    with pytest.raises(ValueError, match=message):
        TileGeometry(**settings)


def test_item_coverage_uses_smaller_area():
    tiles = np.array([[0, 0, 100, 100], [100, 0, 200, 100], [300, 0, 400, 100]])
    item = np.array([[80, 10, 120, 50]])

    coverage = item_coverage(tiles, item)

    assert coverage.tolist() == [0.5, 0.5, 0.0]
    assert item_coverage(tiles, np.zeros((0, 4))).tolist() == [0.0, 0.0, 0.0]


def test_preprocess_tile_mode_round_trips():
    config = PreprocessConfig(image_size=64, mode="tiles", tile_scan_height=256, tile_stride=32)

    assert PreprocessConfig.from_dict(config.to_dict()) == config
    assert config.tiles == TileGeometry(scan_height=256, tile_size=64, stride=32)
    assert PreprocessConfig().tiles is None


def test_older_checkpoint_settings_mean_whole_scan():
    stored = {"image_size": 224, "resize_mode": "stretch", "fill": 1.0, "mean": [0.5] * 3, "std": [0.2] * 3}

    assert PreprocessConfig.from_dict(stored).mode == "whole"
