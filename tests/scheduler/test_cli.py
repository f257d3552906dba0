"""The cargoscan command line, run in-process on small synthetic scans."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from db.migrate import head_revision
from scheduler.cli import main


def _train(folders: tuple[Path, Path], checkpoint: Path) -> int:
    positive, negative = folders
    return main([
        "train", "--positive", str(positive), "--negative", str(negative), "--out", str(checkpoint),
        "--weights", "none", "--image-size", "32", "--epochs", "1", "--pairs-per-epoch", "8", "--batch-size", "4",
    ])


@pytest.fixture
def trained(tmp_path, exemplar_folders) -> Path:
    checkpoint = tmp_path / "model.pt"
    assert _train(exemplar_folders, checkpoint) == 0
    return checkpoint


def test_train_reports_weights(tmp_path, exemplar_folders, capsys):
    status = _train(exemplar_folders, tmp_path / "model.pt")

    output = capsys.readouterr().out
    assert status == 0
    assert (tmp_path / "model.pt").is_file()
    assert "random initialisation" in output
    assert "epoch 1/1" in output
    assert "model version (sha256)" in output


def test_enroll_screen_results(trained, exemplar_folders, scan_folder, sqlite_url, capsys):
    positive, negative = exemplar_folders
    (scan_folder / "broken.png").write_bytes(b"not a png")

    assert main(["--db", sqlite_url, "enroll", "--model", str(trained), "--positive", str(positive), "--negative", str(negative)]) == 0
    assert main(["--db", sqlite_url, "screen", str(scan_folder), "--threshold", "1e6"]) == 0
    output = capsys.readouterr().out
    assert "scanned 9, scored 8, flagged 8, failed 1" in output
    assert "(the checkpoint's; 'cargoscan calibrate' sets one" in output

    assert main(["--db", sqlite_url, "results", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 9
    assert rows[-1]["status"] == "failed"
    assert "not a readable image" in rows[-1]["failure_reason"]

    assert main(["--db", sqlite_url, "results", "--format", "json", "--flagged-only"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 8

    assert main(["--db", sqlite_url, "results"]) == 0
    assert "scan_id" in capsys.readouterr().out


def test_screen_twice_keeps_one_result(trained, exemplar_folders, scan_folder, sqlite_url, capsys):
    positive, negative = exemplar_folders
    main(["--db", sqlite_url, "enroll", "--model", str(trained), "--positive", str(positive), "--negative", str(negative)])

    main(["--db", sqlite_url, "screen", str(scan_folder)])
    main(["--db", sqlite_url, "screen", str(scan_folder)])
    capsys.readouterr()
    main(["--db", sqlite_url, "results", "--format", "json"])

    assert len(json.loads(capsys.readouterr().out)) == 8


def test_evaluate_prints_confusion(trained, exemplar_folders, capsys):
    positive, negative = exemplar_folders

    status = main(["evaluate", "--model", str(trained), "--positive", str(positive), "--negative", str(negative), "--pairs", "20"])

    output = capsys.readouterr().out
    assert status == 0
    assert "pair accuracy" in output
    assert "TP" in output
    assert "FN" in output


def test_screen_without_exemplars_fails(scan_folder, sqlite_url, capsys):
    status = main(["--db", sqlite_url, "screen", str(scan_folder)])

    assert status == 2
    assert "run 'cargoscan enroll' first" in capsys.readouterr().err


def test_train_missing_folder_fails(tmp_path, capsys):
    status = main(["train", "--positive", str(tmp_path / "nope"), "--negative", str(tmp_path), "--out", str(tmp_path / "m.pt")])

    assert status == 2
    assert "scan folder not found" in capsys.readouterr().err


def test_enroll_rejects_bad_checkpoint(tmp_path, exemplar_folders, sqlite_url, capsys):
    positive, _ = exemplar_folders
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"definitely not a torch file")

    status = main(["--db", sqlite_url, "enroll", "--model", str(bogus), "--positive", str(positive)])

    assert status == 2
    assert "not a readable torch file" in capsys.readouterr().err


def test_unreachable_database_fails(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"

    status = main(["--db", url, "db", "upgrade"])

    assert status == 2
    assert "cannot open database" in capsys.readouterr().err


def test_results_rejects_missing_sqlite_file(tmp_path, capsys):
    status = main(["results", "--db", f"sqlite:///{tmp_path / 'typo.db'}"])

    assert status == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "typo.db").exists()


def test_db_option_after_command(sqlite_url, capsys):
    assert main(["db", "upgrade", "--db", sqlite_url]) == 0
    assert main(["results", "--db", sqlite_url]) == 0
    assert "no scans recorded" in capsys.readouterr().out


def test_db_upgrade_reports_revision(sqlite_url, capsys):
    assert main(["--db", sqlite_url, "db", "upgrade"]) == 0
    assert f"revision {head_revision()}" in capsys.readouterr().out


def test_invalid_setting_reported_in_one_line(sqlite_url, monkeypatch, capsys):
    monkeypatch.setenv("CARGOSCAN_MAX_BATCH_SIZE", "many")

    assert main(["--db", sqlite_url, "results"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: invalid setting CARGOSCAN_MAX_BATCH_SIZE:")
    assert "'many'" in error
    assert "Traceback" not in error
