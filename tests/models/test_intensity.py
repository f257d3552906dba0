"""Log-transmission input: range, order, and its use in both scan modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.imaging import DecodedScan
from models.intensity import LOG_FLOOR, apply_intensity
from models.preprocess import PreprocessConfig, to_unit_tensor
from models.tiling import TileGeometry, cut_tiles


def test_log_keeps_open_beam_and_floor():
    values = torch.tensor([1.0, LOG_FLOOR, 0.0])

    mapped = apply_intensity(values, "log")

    assert mapped[0] == pytest.approx(1.0)
    assert mapped[1] == pytest.approx(0.0, abs=1e-6)
    assert mapped[2] == pytest.approx(0.0, abs=1e-6)


def test_log_preserves_order():
    values = torch.linspace(0.0, 1.0, 101)

    mapped = apply_intensity(values, "log")

    assert bool((mapped[1:] >= mapped[:-1]).all())


def test_log_shows_item_behind_dense_cargo():
    # Halving the transmission is one equal step in log input whether the cargo is light or dense.
    light, dense = torch.tensor([0.8, 0.4]), torch.tensor([0.01, 0.005])

    light_step = float(apply_intensity(light, "log").diff().abs()[0])
    dense_step = float(apply_intensity(dense, "log").diff().abs()[0])

    assert light_step == pytest.approx(dense_step, rel=1e-4)
    assert float(dense.diff().abs()[0]) < float(light.diff().abs()[0]) / 50


def test_linear_leaves_values_alone():
    values = torch.rand(10)

    assert torch.equal(apply_intensity(values, "linear"), values)


def test_unknown_intensity_rejected():
    with pytest.raises(ValueError, match="intensity"):
        apply_intensity(torch.ones(2), "gamma")
    with pytest.raises(ValueError, match="intensity"):
        PreprocessConfig(intensity="gamma")
    with pytest.raises(ValueError, match="intensity"):
        TileGeometry(intensity="gamma")


def test_whole_scan_mode_applies_log():
    scan = DecodedScan(pixels=np.full((40, 40), 0.01, dtype=np.float32), source_mode="I;16", bit_depth=16)

    linear = to_unit_tensor(scan, PreprocessConfig(image_size=32))
    logged = to_unit_tensor(scan, PreprocessConfig(image_size=32, intensity="log"))

    assert float(linear.mean()) == pytest.approx(0.01, abs=1e-4)
    assert float(logged.mean()) == pytest.approx(float(apply_intensity(torch.tensor(0.01), "log")), abs=1e-4)


def test_tile_mode_applies_log_but_pads_open_beam():
    scan = DecodedScan(pixels=np.full((64, 8), 0.01, dtype=np.float32), source_mode="I;16", bit_depth=16)

    tiles = cut_tiles(scan, TileGeometry(scan_height=64, tile_size=32, stride=32, intensity="log"))

    assert float(tiles.images[0, 0, 0, 0]) == pytest.approx(float(apply_intensity(torch.tensor(0.01), "log")), abs=1e-4)
    assert float(tiles.images[0, 0, 0, -1]) == 1.0
