"""Model registry, exemplar-only rescoring from stored embeddings, and verdict diffs."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from db import registry, repository
from db.embeddings import load_embeddings
from db.rescore import changed_verdicts, rescore_progress
from db.schema import Result
from models.scanfiles import list_scan_files
from scheduler.enroll import enroll
from scheduler.rescore import RescoreError, rescore_archive
from scheduler.screen import screen_folder
from worker.settings import Settings


def _settings(database, **overrides) -> Settings:
    url = database.engine.url.render_as_string(hide_password=False)
    return Settings(database_url=url, metrics_port=0, **overrides)


def _results(database, exemplar_set_id: int) -> dict[int, Result]:
    with database.sessions() as session:
        rows = session.execute(select(Result).where(Result.exemplar_set_id == exemplar_set_id)).scalars().all()
    return {row.scan_id: row for row in rows}


@pytest.fixture
def screened(enrolled_database, scan_folder):
    """The enrolled database after screening the scan folder in-process with exemplar set 1."""
    screen_folder(enrolled_database, _settings(enrolled_database), scan_folder)
    return enrolled_database


def _second_set(database, checkpoint, tmp_path) -> int:
    """Enroll a second exemplar set with the same model, from other images."""
    from tests.conftest import TINY_SCENE
    from models.synthetic import render_scan, write_png16

    rng = np.random.default_rng(99)
    folders = {}
    for label in ("positive", "negative"):
        folder = tmp_path / "second" / label
        folder.mkdir(parents=True)
        for index in range(2):
            write_png16(folder / f"{index}.png", render_scan(rng, label == "positive", TINY_SCENE).pixels)
        folders[label] = list_scan_files(folder)
    return enroll(database.sessions, checkpoint, folders["positive"], folders["negative"], name="second").exemplar_set_id


def test_screening_stores_embeddings(screened):
    with screened.sessions() as session:
        version_id = registry.active_selection(session).model_version_id
        stored = load_embeddings(session, version_id, list(range(1, 20)))

    assert len(stored) == 8
    assert all(vector.shape == (512,) for vector in stored.values())


def test_active_selection_defaults_to_newest(screened, tiny_checkpoint, tmp_path):
    second = _second_set(screened, tiny_checkpoint, tmp_path)

    with screened.sessions() as session:
        assert registry.active_selection(session).exemplar_set_id == second


def test_activate_pins_exemplar_set(screened, tiny_checkpoint, tmp_path):
    second = _second_set(screened, tiny_checkpoint, tmp_path)
    with screened.sessions.begin() as session:
        version = registry.find_model_version(session, registry.active_selection(session).model_sha256[:8])
        registry.activate(session, version.id, exemplar_set_id=1)

    with screened.sessions() as session:
        assert registry.active_selection(session).exemplar_set_id == 1
        assert second != 1


def test_activate_rejects_foreign_set(screened):
    with screened.sessions.begin() as session:
        other = repository.get_or_create_model_version(session, "f" * 64, "other.pt", "/other.pt", {}, 0.5, {})
        with pytest.raises(registry.RegistryError, match="another model version"):
            registry.activate(session, other.id, exemplar_set_id=1)


def test_find_model_version_errors(screened):
    with screened.sessions() as session:
        with pytest.raises(registry.RegistryError, match="too short"):
            registry.find_model_version(session, "abc")
        with pytest.raises(registry.RegistryError, match="no model version"):
            registry.find_model_version(session, "0000000000")


def test_exemplar_only_rescore_without_network(screened, tiny_checkpoint, tmp_path, monkeypatch):
    second = _second_set(screened, tiny_checkpoint, tmp_path)

    def no_network(*_args, **_kwargs):
        raise AssertionError("the network must not be loaded for an exemplar-only rescore")

    monkeypatch.setattr("worker.screener.load_checkpoint", no_network)
    monkeypatch.setattr("scheduler.rescore._screen_task", no_network)
    tiny_checkpoint.unlink()

    summary = rescore_archive(screened, _settings(screened), progress=False)

    assert summary.candidates == 8
    assert summary.scored_from_embeddings == 8
    assert summary.sent == 0
    results = _results(screened, second)
    assert len(results) == 8
    _check_against_brute_force(screened, second, results)


def _check_against_brute_force(database, exemplar_set_id, results):
    with database.sessions() as session:
        selection = registry.selection_for_exemplar_set(session, exemplar_set_id)
        exemplars = repository.load_exemplars(session, exemplar_set_id)
        stored = load_embeddings(session, selection.model_version_id, list(results))

    positives = [(e.id, np.frombuffer(e.embedding, dtype="<f4")) for e in exemplars if e.label == "positive"]
    for scan_id, result in results.items():
        distances = {exemplar_id: float(np.linalg.norm(stored[scan_id] - vector)) for exemplar_id, vector in positives}
        nearest = min(distances, key=distances.get)
        assert result.positive_exemplar_id == nearest
        assert result.positive_distance == pytest.approx(distances[nearest], rel=1e-5)


def test_rescore_rerun_sends_nothing_twice(screened, tiny_checkpoint, tmp_path):
    _second_set(screened, tiny_checkpoint, tmp_path)

    first = rescore_archive(screened, _settings(screened), progress=False)
    second = rescore_archive(screened, _settings(screened), progress=False)

    assert first.candidates == 8
    assert second.candidates == 0
    with screened.sessions() as session:
        total = session.execute(select(func.count()).select_from(Result)).scalar_one()
    assert total == 16


def test_rescore_progress_counts(screened, tiny_checkpoint, tmp_path):
    second = _second_set(screened, tiny_checkpoint, tmp_path)
    with screened.sessions() as session:
        version_id = registry.active_selection(session).model_version_id
        before = rescore_progress(session, version_id, second)

    rescore_archive(screened, _settings(screened), progress=False)

    with screened.sessions() as session:
        after = rescore_progress(session, version_id, second)
    assert (before.screened, before.done, before.not_sent) == (8, 0, 8)
    assert (after.done, after.not_sent, after.eta_seconds) == (8, 0, 0.0)


def test_rescore_needs_exemplars(sqlite_url):
    from db.database import open_database

    database = open_database(sqlite_url)
    with pytest.raises(RescoreError, match="enroll"):
        rescore_archive(database, Settings(database_url=sqlite_url), progress=False)
    database.dispose()


def test_diff_lists_changed_verdicts(screened, tiny_checkpoint, tmp_path):
    first_results = _results(screened, 1)
    middle = float(np.median([row.positive_distance for row in first_results.values()]))
    second = _second_set(screened, tiny_checkpoint, tmp_path)
    rescore_archive(screened, _settings(screened, threshold=middle), progress=False)

    with screened.sessions() as session:
        version_id = registry.active_selection(session).model_version_id
        changes = changed_verdicts(session, (version_id, 1), (version_id, second))

    second_results = _results(screened, second)
    expected = {scan_id for scan_id in first_results if first_results[scan_id].flagged != second_results[scan_id].flagged}
    assert {change.scan_id for change in changes} == expected
    assert len(expected) > 0
    for change in changes:
        assert change.change == ("newly flagged" if second_results[change.scan_id].flagged else "newly cleared")


def test_registry_commands(screened, tiny_checkpoint, tmp_path, capsys):
    from scheduler.cli import main

    url = screened.engine.url.render_as_string(hide_password=False)
    second = _second_set(screened, tiny_checkpoint, tmp_path)
    with screened.sessions() as session:
        sha = registry.active_selection(session).model_sha256

    assert main(["--db", url, "models", "list"]) == 0
    assert f"no model version activated: workers use the newest exemplar set ({second})" in capsys.readouterr().out
    assert main(["--db", url, "models", "activate", sha[:10], "--exemplar-set", "1"]) == 0
    assert "exemplar set 1" in capsys.readouterr().out
    assert main(["--db", url, "models", "list"]) == 0
    assert "active (set 1)" in capsys.readouterr().out
    assert main(["--db", url, "rescore", "--status"]) == 0
    assert "8 of 8 screened scans" in capsys.readouterr().out
    assert main(["--db", url, "models", "activate", sha[:10], "--exemplar-set", str(second)]) == 0
    assert main(["--db", url, "rescore"]) == 0
    assert "8 scored from stored embeddings, 0 sent" in capsys.readouterr().out
    assert main(["--db", url, "diff", "set:1", f"set:{second}", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("scan_id,change")
    assert main(["--db", url, "models", "activate", "ffffffffff"]) == 2
    assert "no model version" in capsys.readouterr().err
