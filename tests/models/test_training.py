"""Tests for models.training.train_siamese: a tiny CPU run on synthetic scans."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import Checkpoint, file_sha256, load_checkpoint
from models.preprocess import PreprocessConfig
from models.synthetic import SceneConfig, render_scan, write_png16
from models.training import TrainConfig, TrainResult, load_training_images, train_siamese

SCENE = SceneConfig(width=96, height=48)
PREPROCESS = PreprocessConfig(image_size=32)
CONFIG = TrainConfig(epochs=2, pairs_per_epoch=16, batch_size=8, seed=0, weights="none")


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    """Six positive and six negative 96 x 48 synthetic scans."""
    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    positives, negatives = [], []
    for index in range(6):
        for with_item, paths in ((True, positives), (False, negatives)):
            path = folder / f"{'positive' if with_item else 'negative'}_{index}.png"
            write_png16(path, render_scan(rng, with_item, SCENE).pixels)
            paths.append(path)
    return positives, negatives


def _train(scans, out: Path, messages: list[str] | None = None) -> TrainResult:
    positives, negatives = scans
    report = messages.append if messages is not None else (lambda message: None)
    with torch.random.fork_rng():
        return train_siamese(positives, negatives, out, CONFIG, PREPROCESS, torch.device("cpu"), report=report)


@pytest.fixture(scope="module")
def run(scans, tmp_path_factory) -> tuple[TrainResult, list[str]]:
    messages: list[str] = []
    out = tmp_path_factory.mktemp("run") / "model.pt"
    return _train(scans, out, messages), messages


@pytest.fixture(scope="module")
def checkpoint(run) -> Checkpoint:
    result, _ = run
    return load_checkpoint(result.checkpoint)


# A training run took 8 to 19 s on a busy 2-core CPU, so the tests that need one are marked slow.
@pytest.mark.slow
class TestTinyRun:
    def test_checkpoint_written(self, run):
        result, _ = run
        assert result.checkpoint.is_file()

    def test_checkpoint_preprocess_matches(self, checkpoint):
        assert checkpoint.preprocess == PREPROCESS

    def test_checkpoint_threshold_matches(self, checkpoint):
        assert checkpoint.threshold == CONFIG.threshold

    def test_version_is_file_sha256(self, run):
        result, _ = run
        assert result.version == file_sha256(result.checkpoint)

    def test_checkpoint_version_matches(self, run, checkpoint):
        result, _ = run
        assert checkpoint.version == result.version

    def test_history_has_each_epoch(self, run):
        result, _ = run
        assert [stats.epoch for stats in result.history] == [1, 2]

    @pytest.mark.parametrize("epoch", [0, 1])
    def test_epoch_loss_finite(self, run, epoch):
        result, _ = run
        assert math.isfinite(result.history[epoch].loss)

    @pytest.mark.parametrize("epoch", [0, 1])
    def test_epoch_accuracy_in_unit_range(self, run, epoch):
        result, _ = run
        assert 0.0 <= result.history[epoch].pair_accuracy <= 1.0

    @pytest.mark.parametrize("epoch", [0, 1])
    def test_epoch_counts_cover_pairs(self, run, epoch):
        stats = run[0].history[epoch]
        total = stats.true_positive + stats.false_positive + stats.true_negative + stats.false_negative
        assert total == CONFIG.pairs_per_epoch

    def test_metadata_records_config(self, checkpoint):
        assert checkpoint.metadata["train_config"] == asdict(CONFIG)

    def test_metadata_records_history(self, run, checkpoint):
        result, _ = run
        assert checkpoint.metadata["history"] == [asdict(stats) for stats in result.history]

    def test_metadata_counts_images(self, checkpoint):
        assert checkpoint.metadata["training_images"] == {"positive": 6, "negative": 6}

    def test_no_files_skipped(self, run):
        result, _ = run
        assert result.skipped_files == []

    @pytest.mark.parametrize("epoch", [1, 2])
    def test_reports_each_epoch(self, run, epoch):
        _, messages = run
        assert any(message.startswith(f"epoch {epoch}/2") for message in messages)

    def test_same_seed_same_history(self, run, scans, tmp_path):
        first, _ = run
        second = _train(scans, tmp_path / "again.pt")
        assert [stats.loss for stats in second.history] == [stats.loss for stats in first.history]


def test_load_images_skips_unreadable(scans, tmp_path):
    positives, _ = scans
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    images, kept, skipped = load_training_images([positives[0], broken, positives[1]], PREPROCESS, workers=2)
    assert kept == [0, 2]
    assert skipped == [(str(broken), "empty file (0 bytes)")]
    assert images.shape == (2, 3, 32, 32)
    assert images.dtype == torch.float16


def test_load_images_none_readable(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    with pytest.raises(ValueError, match="no training image"):
        load_training_images([broken], PREPROCESS, workers=1)


@pytest.mark.parametrize("field", ["epochs", "pairs_per_epoch", "batch_size"])
def test_config_counts_positive(field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: 0})


@pytest.mark.parametrize("field", ["learning_rate", "margin", "threshold"])
def test_config_rates_positive(field):
    with pytest.raises(ValueError, match="must be positive"):
        TrainConfig(**{field: 0.0})
