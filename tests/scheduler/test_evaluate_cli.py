"""split, train with validation, evaluate, calibrate and tip through the command line, on synthetic scans."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.splits import read_manifest
from models.synthetic import SceneConfig, render_dataset
from scheduler.cli import main

SCENE = SceneConfig(width=96, height=48)
TRAIN_OPTIONS = ["--weights", "none", "--image-size", "32", "--epochs", "2", "--pairs-per-epoch", "16", "--batch-size", "8",
                 "--validation-pairs", "16", "--device", "cpu"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Ten positive and ten negative synthetic scans, split into a manifest outside the data folder."""
    root = tmp_path_factory.mktemp("evaluate")
    render_dataset(root / "data", positives=10, negatives=10, seed=4, config=SCENE)
    assert main(["split", "--positive", str(root / "data" / "positive"), "--negative", str(root / "data" / "negative"),
                 "--out", str(root / "manifest.json"), "--fractions", "0.6,0.2,0.2"]) == 0
    return root


def _train(dataset: Path, out: Path) -> int:
    return main(["train", "--manifest", str(dataset / "manifest.json"), "--out", str(out), *TRAIN_OPTIONS])


def _evaluate(dataset: Path, model: Path, out: Path, *extra: str) -> int:
    return main(["evaluate", "--model", str(model), "--manifest", str(dataset / "manifest.json"), "--pairs", "20",
                 "--out", str(out), "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def trained(dataset) -> Path:
    model = dataset / "model.pt"
    assert _train(dataset, model) == 0
    return model


def test_split_writes_all_splits(dataset):
    splits = {entry.split for entry in read_manifest(dataset / "manifest.json")}
    assert splits == {"train", "validation", "test"}


def test_split_summary_printed(tmp_path, dataset, capsys):
    out = tmp_path / "again.csv"
    main(["split", "--positive", str(dataset / "data" / "positive"), "--negative", str(dataset / "data" / "negative"),
          "--out", str(out)])
    output = capsys.readouterr().out
    assert "20 images in 20 families" in output
    assert "test:" in output


@pytest.mark.slow
def test_train_reports_validation(dataset, tmp_path, capsys):
    assert _train(dataset, tmp_path / "m.pt") == 0
    output = capsys.readouterr().out
    assert "validation loss" in output
    assert "best validation loss" in output


@pytest.mark.slow
def test_train_writes_curves(trained):
    curves = trained.with_name("model-curves.png")
    with Image.open(curves) as image:
        assert image.format == "PNG"


@pytest.mark.slow
def test_checkpoint_records_selection(trained):
    from models.checkpoint import load_checkpoint

    selection = load_checkpoint(trained).metadata["selection"]
    assert selection["rule"] == "validation loss"
    assert selection["best_epoch"] in (1, 2)


@pytest.mark.slow
def test_evaluate_writes_report(dataset, trained, tmp_path, capsys):
    out = tmp_path / "report"

    assert _evaluate(dataset, trained, out) == 0

    output = capsys.readouterr().out
    assert "pair accuracy" in output
    assert "size-only baseline" in output
    for name in ("report.md", "metrics.json", "confusion.png", "roc.png", "distances.png"):
        assert (out / name).is_file(), name


@pytest.mark.slow
def test_report_lists_metrics(dataset, trained, tmp_path):
    out = tmp_path / "report"
    _evaluate(dataset, trained, out)

    metrics = json.loads((out / "metrics.json").read_text())
    report = (out / "report.md").read_text()
    assert set(metrics["screening"]) == {"nearest_positive", "margin"}
    assert "auc" in metrics["baseline"]
    assert "calibrated" in metrics["thresholds"]
    assert "| pair accuracy |" in report
    assert "size-only baseline" in report


@pytest.mark.slow
def test_same_seed_same_metrics(dataset, tmp_path):
    """Two CPU runs from one seed on the same data give identical weights and metrics."""
    import torch

    from models.checkpoint import load_checkpoint

    reports, weights = [], []
    for run in ("first", "second"):
        model = tmp_path / f"{run}.pt"
        assert _train(dataset, model) == 0
        assert _evaluate(dataset, model, tmp_path / run) == 0
        metrics = json.loads((tmp_path / run / "metrics.json").read_text())
        # The file hash differs between identical runs: torch.save names the archive's inner
        # folder after the (temporary) file it writes, so only the content is compared.
        metrics["model"].pop("path")
        metrics["model"].pop("version")
        reports.append(metrics)
        weights.append(load_checkpoint(model).embedder.state_dict())

    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    assert reports[0] == reports[1]


@pytest.mark.slow
def test_single_class_test_split_fails_clearly(dataset, trained, tmp_path, capsys):
    entries = json.loads((dataset / "manifest.json").read_text())
    entries["entries"] = [entry for entry in entries["entries"] if not (entry["split"] == "test" and entry["label"] == "negative")]
    manifest = dataset / "positives-only.json"
    manifest.write_text(json.dumps(entries))

    status = main(["evaluate", "--model", str(trained), "--manifest", str(manifest), "--device", "cpu"])

    assert status == 2
    assert "at least 2 positive and 2 negative" in capsys.readouterr().err


def test_evaluate_needs_a_test_set(tmp_path, tiny_checkpoint, capsys):
    status = main(["evaluate", "--model", str(tiny_checkpoint)])

    assert status == 2
    assert "--manifest FILE --split NAME" in capsys.readouterr().err


def test_evaluate_missing_split_names_present(dataset, tiny_checkpoint, capsys):
    status = main(["evaluate", "--model", str(tiny_checkpoint), "--manifest", str(dataset / "manifest.json"), "--split", "holdout"])

    assert status == 2
    assert "splits present: test, train, validation" in capsys.readouterr().err


@pytest.mark.slow
def test_calibrate_stores_threshold(dataset, trained, sqlite_url, capsys):
    manifest = str(dataset / "manifest.json")
    assert main(["--db", sqlite_url, "enroll", "--model", str(trained), "--manifest", manifest, "--split", "train"]) == 0

    assert main(["--db", sqlite_url, "calibrate", "--model", str(trained), "--manifest", manifest, "--far", "0.25"]) == 0

    captured = capsys.readouterr()
    output = captured.out
    assert "stored on model version" in output
    from db.database import open_database
    from db.schema import ModelVersion

    database = open_database(sqlite_url)
    with database.sessions() as session:
        threshold = session.query(ModelVersion).one().threshold
    database.dispose()
    assert f"threshold {threshold:.4f}" in output
    assert "are too few for a 25.0% target. Below 4 negatives" in captured.err

    assert main(["--db", sqlite_url, "calibrate", "--model", str(trained), "--manifest", manifest, "--far", "0.01"]) == 0
    assert "are too few for a 1.0% target. Below 100 negatives" in capsys.readouterr().err

    assert main(["--db", sqlite_url, "enroll", "--model", str(trained), "--manifest", manifest, "--split", "train"]) == 0
    assert "(calibrated in this database)" in capsys.readouterr().out


def test_calibrate_without_exemplars_fails(dataset, tiny_checkpoint, sqlite_url, capsys):
    status = main(["--db", sqlite_url, "calibrate", "--model", str(tiny_checkpoint), "--manifest", str(dataset / "manifest.json")])

    assert status == 2
    assert "run 'cargoscan enroll'" in capsys.readouterr().err


def test_tip_builds_labelled_set(tmp_path, capsys):
    clean = tmp_path / "clean"
    rendered = render_dataset(clean, positives=0, negatives=8, seed=2, config=SceneConfig(width=160, height=64))
    assert len(rendered["negative"]) == 8

    assert main(["tip", "--scans", str(clean), "--out", str(tmp_path / "tip"), "--fractions", "0.5,0.25,0.25"]) == 0

    entries = read_manifest(tmp_path / "tip" / "manifest.json")
    positives = [entry for entry in entries if entry.label == "positive"]
    negatives = [entry for entry in entries if entry.label == "negative"]
    assert len(positives) == 4
    assert len(negatives) == 4
    assert {entry.extra["source"] for entry in positives}.isdisjoint(entry.extra["source"] for entry in negatives)
    for entry in positives:
        x0, y0, x1, y1 = entry.extra["box"]
        with Image.open(entry.path) as image:
            assert 0 <= x0 < x1 <= image.width
            assert 0 <= y0 < y1 <= image.height


def test_paired_tip_writes_both_classes(tmp_path):
    clean = tmp_path / "clean"
    render_dataset(clean, positives=0, negatives=6, seed=4, config=SceneConfig(width=160, height=64))
    arguments = ["tip", "--scans", str(clean), "--out", str(tmp_path / "tip"), "--fractions", "0.5,0.25,0.25", "--paired"]
    assert main(arguments) == 0

    entries = read_manifest(tmp_path / "tip" / "manifest.json")
    by_source: dict[str, list] = {}
    for entry in entries:
        by_source.setdefault(entry.extra["source"], []).append(entry)
    assert len(by_source) == 6
    for pair in by_source.values():
        assert sorted(entry.label for entry in pair) == ["negative", "positive"]
        assert len({entry.split for entry in pair}) == 1
        assert len({entry.family for entry in pair}) == 1
        assert "box" in next(entry for entry in pair if entry.label == "positive").extra


def test_tip_splits_by_source_scan(tmp_path):
    clean = tmp_path / "clean"
    render_dataset(clean, positives=0, negatives=8, seed=3, config=SceneConfig(width=160, height=64))
    main(["tip", "--scans", str(clean), "--out", str(tmp_path / "tip"), "--fractions", "0.5,0.25,0.25"])

    entries = read_manifest(tmp_path / "tip" / "manifest.json")
    for split in ("train", "validation", "test"):
        labels = sorted(entry.label for entry in entries if entry.split == split)
        assert labels.count("positive") >= 1, split
        assert labels.count("negative") >= 1, split


def test_tip_negative_matches_source(tmp_path):
    from models.tip_io import decode_transmission, quantise

    clean = tmp_path / "clean"
    render_dataset(clean, positives=0, negatives=4, seed=5, config=SceneConfig(width=160, height=64))
    main(["tip", "--scans", str(clean), "--out", str(tmp_path / "tip"), "--fractions", "0.5,0.25,0.25"])

    for entry in read_manifest(tmp_path / "tip" / "manifest.json"):
        if entry.label == "negative":
            expected = quantise(decode_transmission(entry.extra["source"], 1024))
            np.testing.assert_array_equal(np.asarray(Image.open(entry.path)), expected)
