"""Tile mode end to end: training, enrollment of item tiles, screening with boxes, show and evaluate."""

from __future__ import annotations

import json
import re
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import select

from db import repository
from db.schema import Exemplar, Result
from models.checkpoint import load_checkpoint, save_checkpoint
from models.embedder import SiameseEmbedder
from models.inference import decode_one
from models.preprocess import PreprocessConfig
from models.scan_scoring import score_decoded
from models.synthetic import SceneConfig, render_scan, write_png16
from scheduler.enroll import enroll
from scheduler.evaluate import EvaluationError, run_evaluation
from scheduler.results import format_csv
from scheduler.show import ShowError, show_scan
from worker.pipeline import ScanJob, screen_batch
from worker.screener import build_screener
from worker.settings import Settings

TILES = PreprocessConfig(image_size=32, mode="tiles", tile_scan_height=64, tile_stride=16)
SCENE = SceneConfig(width=192, height=64)
# Rows start at 0, 16 and 32 and columns every 16 px up to 160: 3 x 11 tiles.
TILE_COUNT = 33


@pytest.fixture
def tile_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "tiles.pt"
    save_checkpoint(path, SiameseEmbedder().eval(), TILES, threshold=1e6, metadata={"purpose": "tests"})
    return path


@pytest.fixture
def boxed_scans(tmp_path: Path) -> dict[str, list]:
    """Synthetic scans in train and test splits, positives with their item boxes, and a manifest."""
    rng = np.random.default_rng(5)
    entries, boxes = [], {}
    for split, count in (("train", 3), ("test", 3)):
        for label in ("positive", "negative"):
            for index in range(count):
                scan = render_scan(rng, with_item=label == "positive", config=SCENE)
                path = tmp_path / "set" / split / f"{label}_{index}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_png16(path, scan.pixels)
                entry = {"path": str(path.relative_to(tmp_path / "set")), "label": label, "split": split}
                if scan.item_box is not None:
                    entry["box"] = list(scan.item_box)
                    entry["item"] = {"kind": "block", "material": "organic" if index % 2 else "metal"}
                    boxes[str(path)] = [scan.item_box]
                entries.append(entry)
    manifest = tmp_path / "set" / "manifest.json"
    manifest.write_text(json.dumps({"entries": entries}))
    return {"manifest": manifest, "boxes": boxes, "root": tmp_path / "set"}


def _paths(root: Path, split: str, label: str) -> list[Path]:
    return sorted((root / split).glob(f"{label}_*.png"))


def _enrolled(database, checkpoint, boxed_scans):
    root = boxed_scans["root"]
    return enroll(
        database.sessions, checkpoint, _paths(root, "train", "positive"), _paths(root, "train", "negative"),
        name="tiles", boxes=boxed_scans["boxes"],
    )


def _register_one(database, path: Path) -> int:
    with database.sessions.begin() as session:
        return repository.register_scans(session, [str(path)])[str(path)][0]


def _screen_one(database, path: Path) -> int:
    """Register one scan and screen it with the enrolled tile model; returns its scan id."""
    scan_id = _register_one(database, path)
    screener = build_screener(database.sessions, Settings(database_url="unused://"))
    screen_batch(screener, database.sessions, [ScanJob(scan_id=scan_id, uri=str(path))])
    screener.close()
    return scan_id


def test_enroll_stores_item_and_clear_tiles(sqlite_url, tile_checkpoint, boxed_scans):
    from db.database import open_database

    database = open_database(sqlite_url)
    result = _enrolled(database, tile_checkpoint, boxed_scans)

    with database.sessions() as session:
        uris = session.execute(select(Exemplar.label, Exemplar.uri)).tuples().all()
    assert result.positives >= 3
    assert result.negatives > result.positives
    assert all("#tile=" in uri for _, uri in uris)
    database.dispose()


def test_enroll_skips_positive_without_box(sqlite_url, tile_checkpoint, boxed_scans):
    from db.database import open_database

    database = open_database(sqlite_url)
    boxes = dict(boxed_scans["boxes"])
    unboxed = str(_paths(boxed_scans["root"], "train", "positive")[0])
    boxes.pop(unboxed)

    result = enroll(database.sessions, tile_checkpoint, _paths(boxed_scans["root"], "train", "positive"),
                    _paths(boxed_scans["root"], "train", "negative"), boxes=boxes)

    assert [path for path, _ in result.skipped] == [unboxed]
    assert "item box" in result.skipped[0][1]
    database.dispose()


def test_screening_stores_top_tile_box(database_url, tile_checkpoint, boxed_scans):
    from db.database import open_database

    database = open_database(database_url)
    _enrolled(database, tile_checkpoint, boxed_scans)
    paths = _paths(boxed_scans["root"], "test", "positive") + _paths(boxed_scans["root"], "test", "negative")
    with database.sessions.begin() as session:
        recorded = repository.register_scans(session, [str(path) for path in paths])
    jobs = [ScanJob(scan_id=recorded[str(path)][0], uri=str(path)) for path in paths]
    screener = build_screener(database.sessions, Settings(database_url="unused://", tile_batch_size=7))

    report = screen_batch(screener, database.sessions, jobs)
    screener.close()

    assert len(report.scored) == len(paths)
    assert report.tiles == len(paths) * TILE_COUNT
    with database.sessions() as session:
        rows = session.execute(select(Result)).scalars().all()
    assert len(rows) == len(paths)
    for row in rows:
        assert row.tile_count == TILE_COUNT
        assert 0 <= row.box_x0 < row.box_x1 <= SCENE.width
        assert 0 <= row.box_y0 < row.box_y1 <= SCENE.height

    with database.sessions() as session:
        listed = repository.list_results(session)
    csv_text = format_csv(listed)
    first = rows[0]
    assert "box" in csv_text.splitlines()[0].split(",")
    assert f"{first.box_x0},{first.box_y0},{first.box_x1},{first.box_y1}" in csv_text
    database.dispose()


def test_tile_chunks_do_not_change_scores(sqlite_url, tile_checkpoint, boxed_scans):
    from db.database import open_database

    database = open_database(sqlite_url)
    _enrolled(database, tile_checkpoint, boxed_scans)
    screener = build_screener(database.sessions, Settings(database_url="unused://"))
    decoded = [decode_one(path, TILES, 10**8) for path in _paths(boxed_scans["root"], "test", "positive")]

    small = score_decoded(screener.embedder, decoded, screener.exemplars, 1.0, TILES, screener.device, tile_batch_size=5)
    large = score_decoded(screener.embedder, decoded, screener.exemplars, 1.0, TILES, screener.device, tile_batch_size=1000)
    screener.close()

    assert np.allclose(small.verdicts.positive_distance, large.verdicts.positive_distance, atol=1e-4)
    assert np.array_equal(small.boxes, large.boxes)
    for position, tiles in enumerate(small.tiles):
        best = int(np.argmin(tiles.verdicts.positive_distance))
        assert small.verdicts.positive_distance[position] == tiles.verdicts.positive_distance[best]
        assert small.boxes[position].tolist() == tiles.boxes[best].tolist()
    database.dispose()


def test_show_draws_heat_map(sqlite_url, tile_checkpoint, boxed_scans, tmp_path):
    from db.database import open_database

    database = open_database(sqlite_url)
    _enrolled(database, tile_checkpoint, boxed_scans)
    scan_id = _screen_one(database, _paths(boxed_scans["root"], "test", "positive")[0])

    shown = show_scan(database, Settings(database_url="unused://"), scan_id, tmp_path / "out" / "scan.png")

    with Image.open(shown.out) as image:
        # The scan at its own size, then the legend strip below it.
        assert image.width == SCENE.width
        assert image.height > SCENE.height
    assert shown.tiles == TILE_COUNT
    assert shown.box is not None
    with database.sessions() as session:
        result = session.execute(select(Result).where(Result.scan_id == scan_id)).scalar_one()
    assert shown.score_rule == "nearest_positive"
    assert shown.score == pytest.approx(result.positive_distance)
    database.dispose()


def test_show_unscored_scan_rejected(sqlite_url, tile_checkpoint, boxed_scans, tmp_path):
    from db.database import open_database

    database = open_database(sqlite_url)
    _enrolled(database, tile_checkpoint, boxed_scans)
    scan_id = _register_one(database, _paths(boxed_scans["root"], "test", "positive")[0])
    settings = Settings(database_url="unused://")

    with pytest.raises(ShowError, match="no result yet"):
        show_scan(database, settings, scan_id, tmp_path / "scan.png")
    with pytest.raises(ShowError, match="not found"):
        show_scan(database, settings, scan_id + 100, tmp_path / "scan.png")
    assert not (tmp_path / "scan.png").exists()
    database.dispose()


def _evaluate_args(boxed_scans, model: Path, out: Path | None, whole_model: Path | None = None) -> Namespace:
    return Namespace(
        model=model, manifest=boxed_scans["manifest"], split="test", exemplar_split="train", annotations=None,
        max_clear_exemplars=1000, seed=0, out=out, positive=None, negative=None, whole_model=whole_model,
        validation_split="none", exemplar_positive=None, exemplar_negative=None, pairs=40, threshold=None, far=0.05,
    )


def test_evaluate_reports_localisation(tile_checkpoint, boxed_scans, tmp_path):
    out = tmp_path / "report"

    results = run_evaluation(_evaluate_args(boxed_scans, tile_checkpoint, out), torch.device("cpu"), report=lambda line: None)

    assert results["mode"] == "tiles"
    assert set(results["screening"]) == {"nearest_positive", "novelty", "margin"}
    assert results["localisation"]["positives_with_box"] == 3
    assert 0.0 <= results["localisation"]["on_item_of_positives"] <= 1.0
    assert set(results["by_material"]) == {"metal", "organic"}
    assert results["by_material"]["metal"]["positives"] == 2
    assert results["by_material"]["organic"]["positives"] == 1
    detected = sum(counts["detected_at_1_percent"] for counts in results["by_material"].values())
    assert detected == results["localisation"]["detected_at_1_percent"]
    assert (out / "metrics.json").is_file()
    assert results["examples"]
    assert all(Path(example["png"]).is_file() for example in results["examples"])


def test_evaluate_tiles_needs_manifest(tile_checkpoint, boxed_scans):
    args = _evaluate_args(boxed_scans, tile_checkpoint, None)
    args.manifest = None

    with pytest.raises(EvaluationError, match="needs --manifest"):
        run_evaluation(args, torch.device("cpu"), report=lambda line: None)


def test_train_tiles_writes_tile_checkpoint(boxed_scans, tmp_path):
    from models.tile_training import TileTrainConfig, train_tiles
    from scheduler.tile_sets import labelled_scans

    training = labelled_scans(boxed_scans["manifest"], "train")
    validation = labelled_scans(boxed_scans["manifest"], "test")
    config = TileTrainConfig(epochs=2, pairs_per_epoch=16, batch_size=8, mining_pool=64, projections_per_scan=1,
                             background_pairs=0.5)

    result = train_tiles(training, tmp_path / "trained.pt", config, TILES, torch.device("cpu"), validation, report=lambda line: None)

    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint.preprocess == TILES
    assert [epoch.epoch for epoch in result.history] == [1, 2]
    assert result.history[1].hard_negatives > 0
    assert all(epoch.validation_auc is not None for epoch in result.history)
    assert result.positive_tiles > 0
    assert result.history[1].learning_rate < result.history[0].learning_rate
    assert checkpoint.metadata["train_config"]["background_pairs"] == 0.5


def test_manifest_items_give_scan_materials(boxed_scans):
    from scheduler.tile_sets import labelled_scans

    scans = labelled_scans(boxed_scans["manifest"], "train")

    assert sorted(scan.material for scan in scans if scan.positive) == ["metal", "metal", "organic"]
    assert all(scan.material is None for scan in scans if not scan.positive)


def test_train_tiles_needs_boxes(boxed_scans, tmp_path):
    from models.tile_training import LabelledScan, TileTrainConfig, train_tiles

    scans = [LabelledScan(path=path, positive=True) for path in _paths(boxed_scans["root"], "train", "positive")]

    with pytest.raises(ValueError, match="could be tiled|two tiles"):
        train_tiles(scans, tmp_path / "x.pt", TileTrainConfig(epochs=1), TILES, torch.device("cpu"), report=lambda line: None)


def test_novelty_model_boxes_most_novel_tile(sqlite_url, boxed_scans, tmp_path):
    from db.database import open_database
    from models.exemplars import suspicion

    torch.manual_seed(1)
    checkpoint = tmp_path / "novelty.pt"
    save_checkpoint(checkpoint, SiameseEmbedder().eval(), TILES, threshold=1e-3, metadata={"score_rule": "novelty"})
    database = open_database(sqlite_url)
    _enrolled(database, checkpoint, boxed_scans)
    path = _paths(boxed_scans["root"], "test", "positive")[0]
    _screen_one(database, path)
    screener = build_screener(database.sessions, Settings(database_url="unused://"))

    tiles = score_decoded(screener.embedder, [decode_one(path, TILES, 10**8)], screener.exemplars, 1e-3, TILES,
                          screener.device, rule="novelty").tiles[0]
    screener.close()

    assert screener.score_rule == "novelty"
    with database.sessions() as session:
        row = session.execute(select(Result)).scalar_one()
    best = int(np.argmax(suspicion(tiles.verdicts, "novelty")))
    assert [row.box_x0, row.box_y0, row.box_x1, row.box_y1] == tiles.boxes[best].tolist()
    assert row.flagged
    database.dispose()


def test_unknown_score_rule_rejected(sqlite_url, boxed_scans, tmp_path):
    from db.database import open_database
    from worker.screener import ScreenerSetupError

    checkpoint = tmp_path / "odd.pt"
    save_checkpoint(checkpoint, SiameseEmbedder().eval(), TILES, threshold=1.0, metadata={"score_rule": "vote"})
    database = open_database(sqlite_url)
    with pytest.raises(ScreenerSetupError, match="unknown score rule"):
        _enrolled(database, checkpoint, boxed_scans)
        build_screener(database.sessions, Settings(database_url="unused://"))
    database.dispose()


@pytest.mark.parametrize("rule, threshold, accepted", [
    ("margin", -0.1, True),
    ("margin", 0.0, True),
    ("novelty", -0.1, False),
    ("nearest_positive", 0.0, False),
])
def test_threshold_sign_follows_score_rule(sqlite_url, boxed_scans, tmp_path, rule, threshold, accepted):
    from db.database import open_database
    from worker.screener import ScreenerSetupError

    checkpoint = tmp_path / f"{rule}.pt"
    save_checkpoint(checkpoint, SiameseEmbedder().eval(), TILES, threshold=0.5, metadata={"score_rule": rule})
    database = open_database(sqlite_url)
    _enrolled(database, checkpoint, boxed_scans)
    settings = Settings(database_url="unused://", threshold=threshold)

    if accepted:
        screener = build_screener(database.sessions, settings)
        screener.close()
        assert screener.threshold == threshold
    else:
        with pytest.raises(ScreenerSetupError, match="must be positive"):
            build_screener(database.sessions, settings)
    database.dispose()


def test_screen_command_takes_negative_margin_threshold(sqlite_url, boxed_scans, tmp_path, capsys):
    from db.database import open_database
    from scheduler.cli import main

    checkpoint = tmp_path / "margin.pt"
    save_checkpoint(checkpoint, SiameseEmbedder().eval(), TILES, threshold=0.5, metadata={"score_rule": "margin"})
    database = open_database(sqlite_url)
    _enrolled(database, checkpoint, boxed_scans)
    database.dispose()
    queue = boxed_scans["root"] / "test"

    assert main(["--db", sqlite_url, "screen", str(queue), "--threshold=-1e6"]) == 0
    assert "flagged 6" in capsys.readouterr().out


def test_calibrate_tile_model_by_its_rule(sqlite_url, boxed_scans, tmp_path):
    from db.database import open_database
    from db.schema import ModelVersion
    from scheduler.calibrate import calibrate_model
    from scheduler.labelled import from_manifest

    torch.manual_seed(2)
    checkpoint = tmp_path / "novelty.pt"
    save_checkpoint(checkpoint, SiameseEmbedder().eval(), TILES, threshold=1e-3, metadata={"score_rule": "novelty"})
    database = open_database(sqlite_url)
    _enrolled(database, checkpoint, boxed_scans)

    result = calibrate_model(database.sessions, checkpoint, from_manifest(boxed_scans["manifest"], "test"), 0.0,
                             torch.device("cpu"))

    assert result.calibration.negatives == 3
    assert result.calibration.achieved_false_alarm == 0.0
    with database.sessions() as session:
        stored = session.execute(select(ModelVersion.threshold)).scalar_one()
    assert stored == pytest.approx(result.calibration.threshold)
    screener = build_screener(database.sessions, Settings(database_url="unused://"))
    decoded = [decode_one(path, TILES, 10**8) for path in _paths(boxed_scans["root"], "test", "negative")]
    verdicts = score_decoded(screener.embedder, decoded, screener.exemplars, screener.threshold, TILES, screener.device,
                             rule=screener.score_rule).verdicts
    screener.close()
    assert not verdicts.flagged.any()
    database.dispose()


def test_show_command_prints_box(sqlite_url, tile_checkpoint, boxed_scans, tmp_path, capsys):
    from db.database import open_database
    from scheduler.cli import main

    database = open_database(sqlite_url)
    _enrolled(database, tile_checkpoint, boxed_scans)
    scan_id = _screen_one(database, _paths(boxed_scans["root"], "test", "negative")[0])
    database.dispose()

    assert main(["--db", sqlite_url, "show", str(scan_id), "--out", str(tmp_path / "shown.png")]) == 0
    output = capsys.readouterr().out
    assert f"of {TILE_COUNT} tiles" in output
    assert re.search(r": (flagged|clear), nearest_positive score", output)
    assert (tmp_path / "shown.png").is_file()
    assert main(["--db", sqlite_url, "show", str(scan_id + 50), "--out", str(tmp_path / "none.png")]) == 2
    assert "not found" in capsys.readouterr().err


def test_evaluate_tiles_beside_whole_scan(tile_checkpoint, tiny_checkpoint, boxed_scans):
    lines = []
    args = _evaluate_args(boxed_scans, tile_checkpoint, None, whole_model=tiny_checkpoint)

    results = run_evaluation(args, torch.device("cpu"), report=lines.append)

    assert results["whole_scan"]["model"] == str(tiny_checkpoint)
    assert 0.0 <= results["whole_scan"]["screening"]["auc"] <= 1.0
    assert any(line.startswith("whole scan") for line in lines)
    assert any(line.startswith("tiles") for line in lines)


def test_whole_model_must_be_whole_scan(tile_checkpoint, boxed_scans):
    args = _evaluate_args(boxed_scans, tile_checkpoint, None, whole_model=tile_checkpoint)

    with pytest.raises(EvaluationError, match="takes a whole-scan checkpoint"):
        run_evaluation(args, torch.device("cpu"), report=lambda line: None)


def test_grey_and_colour_scans_share_chunks(tile_checkpoint, boxed_scans, tmp_path):
    from models.scan_scoring import embed_tiles

    grey = _paths(boxed_scans["root"], "test", "negative")[0]
    colour = tmp_path / "colour.png"
    with Image.open(grey) as image:
        pixels = np.asarray(image, dtype=np.float64) / 65535.0
    rgb = np.stack([pixels, pixels * 0.5, pixels * 0.8], axis=2)
    Image.fromarray(np.uint8(rgb * 255)).save(colour)
    decoded = [decode_one(path, TILES, 10**8) for path in (grey, colour, grey)]
    checkpoint = load_checkpoint(tile_checkpoint)

    embeddings = embed_tiles(checkpoint.embedder, decoded, TILES, torch.device("cpu"), tile_batch_size=20)

    assert decoded[0].tiles.images.shape[1] == 1
    assert decoded[1].tiles.images.shape[1] == 3
    assert embeddings.shape == (3 * TILE_COUNT, 512)
    assert torch.allclose(embeddings[:TILE_COUNT], embeddings[2 * TILE_COUNT :], atol=1e-4)


def test_tile_bank_joins_grey_and_colour(boxed_scans, tmp_path):
    from models.tile_bank import LabelledScan, build_tile_bank, projected_item_tiles

    grey = _paths(boxed_scans["root"], "train", "negative")[0]
    colour = tmp_path / "colour.png"
    with Image.open(grey) as image:
        pixels = np.asarray(image, dtype=np.float64) / 65535.0
    Image.fromarray(np.uint8(np.stack([pixels, pixels * 0.5, pixels], axis=2) * 255)).save(colour)

    bank = build_tile_bank([LabelledScan(grey, False), LabelledScan(colour, False)], TILES, report=lambda line: None)
    bank.replace_projected(projected_item_tiles(bank.sources, TILES, 2, np.random.default_rng(0)))

    assert bank.images.shape[1] == 3
    assert len(bank.sources) == 1
    assert len(bank.positives) > 0
