"""The learning-rate schedule of tile training."""

from __future__ import annotations

import pytest

from models.tile_training import TileTrainConfig, epoch_learning_rate


def test_cosine_decays_to_one_percent():
    config = TileTrainConfig(epochs=11, learning_rate=1e-3)
    rates = [epoch_learning_rate(config, epoch) for epoch in range(1, 12)]

    assert rates[0] == pytest.approx(1e-3)
    assert rates[5] == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert rates[-1] == pytest.approx(1e-5)
    assert all(later < earlier for earlier, later in zip(rates, rates[1:]))


def test_constant_keeps_the_rate():
    config = TileTrainConfig(epochs=5, learning_rate=3e-4, lr_schedule="constant")
    assert {epoch_learning_rate(config, epoch) for epoch in range(1, 6)} == {3e-4}


def test_single_epoch_uses_the_full_rate():
    assert epoch_learning_rate(TileTrainConfig(epochs=1, learning_rate=2e-3), 1) == pytest.approx(2e-3)


def test_unknown_schedule_rejected():
    with pytest.raises(ValueError, match="lr_schedule"):
        TileTrainConfig(lr_schedule="step")
