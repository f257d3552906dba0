"""The tile bank: projected items keep their clean background, and training can pair them with it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.preprocess import PreprocessConfig
from models.synthetic import SceneConfig, render_scan, write_png16
from models.tile_bank import LabelledScan, ProjectedTiles, TileBank, build_tile_bank, projected_item_tiles
from models.tile_training import TileTrainConfig, _draw_pairs
from models.tiling import cut_tiles

# Linear intensity, so an item can only darken a tile.
TILES = PreprocessConfig(image_size=32, mode="tiles", tile_scan_height=64, tile_stride=16)
SCENE = SceneConfig(width=192, height=64)


@pytest.fixture
def bank(tmp_path: Path) -> TileBank:
    """One positive scan with its box, then two clean scans that take projected items."""
    rng = np.random.default_rng(5)
    scans = []
    for index in range(3):
        scan = render_scan(rng, with_item=index == 0, config=SCENE)
        path = tmp_path / f"scan_{index}.png"
        write_png16(path, scan.pixels)
        scans.append(LabelledScan(path, index == 0, [scan.item_box] if index == 0 else ()))

    bank = build_tile_bank(scans, TILES, report=lambda line: None)
    bank.replace_projected(projected_item_tiles(bank.sources, TILES, 2, np.random.default_rng(0)))
    return bank


def test_source_starts_index_each_clean_scans_tiles(bank):
    for source, start in zip(bank.sources, bank.source_starts, strict=True):
        tiles = cut_tiles(source, TILES.tiles).images.to(torch.float16)

        assert torch.equal(bank.images[start : start + len(tiles)], tiles)
        assert (bank.labels[start : start + len(tiles)] == 0).all()


def test_background_differs_only_by_item(bank):
    projected = np.arange(bank.fixed, len(bank.images))
    difference = bank.images[projected].float() - bank.images[bank.background_of(projected)].float()

    # Same place: the item only attenuates, so no pixel gets brighter, and every tile changed.
    assert len(projected) > 0
    assert difference.max() <= 0
    assert (difference.flatten(1).min(dim=1).values < -0.05).all()


def test_tiles_from_scan_boxes_have_no_background(bank):
    own_items = bank.positives[bank.positives < bank.fixed]

    assert len(own_items) > 0
    assert (bank.background_of(own_items) == -1).all()
    assert (bank.background_of(bank.negatives) == -1).all()


def test_share_one_pairs_every_projected_item(bank):
    config = TileTrainConfig(pairs_per_epoch=400, background_pairs=1.0)

    first, second, similar = _draw_pairs(bank, config, np.random.default_rng(1), hard=None)

    items, partners = first[similar == 0], second[similar == 0]
    projected = items >= bank.fixed
    assert projected.any()
    assert (~projected).any()
    assert (partners[projected] == bank.background_of(items[projected])).all()
    assert (bank.labels[partners] == 0).all()


def test_share_zero_draws_the_pairs_of_earlier_versions(bank):
    config = TileTrainConfig(pairs_per_epoch=400, background_pairs=0.0)

    # Before own-background pairs, the draw was this sequence of generator calls.
    rng = np.random.default_rng(1)
    clear = rng.choice(bank.negatives, 200)
    items = rng.choice(bank.positives, 200)
    similar_first, similar_second = rng.choice(bank.negatives, 200), rng.choice(bank.negatives, 200)
    order = rng.permutation(400)
    earlier_first = np.concatenate([similar_first, items])[order]
    earlier_second = np.concatenate([similar_second, clear])[order]

    first, second, similar = _draw_pairs(bank, config, np.random.default_rng(1), hard=None)
    with_backgrounds = _draw_pairs(bank, replace(config, background_pairs=0.5), np.random.default_rng(1), hard=None)

    assert np.array_equal(first, earlier_first)
    assert np.array_equal(second, earlier_second)
    assert np.array_equal(similar, np.concatenate([np.ones(200), np.zeros(200)])[order])
    assert not np.array_equal(second, with_backgrounds[1])


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_config_rejects_background_share_outside_unit_range(share):
    with pytest.raises(ValueError, match="background_pairs must be in"):
        TileTrainConfig(background_pairs=share)


def test_bank_rejects_sources_without_start_indices(bank):
    with pytest.raises(ValueError, match="bank index of its first tile"):
        TileBank(images=bank.images, labels=bank.labels, sources=bank.sources, source_starts=[])


def test_projection_without_sources_gives_an_empty_batch():
    projected = projected_item_tiles([], TILES, 2, np.random.default_rng(0))

    assert isinstance(projected, ProjectedTiles)
    assert projected.images.shape == (0, 1, 32, 32)
    assert projected.source_tiles.shape == (0, 2)
