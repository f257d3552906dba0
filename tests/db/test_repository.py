"""Schema, migrations and writes on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import inspect, select

from db import repository
from db.database import open_database
from db.engine import normalize_url, redact_url
from db.migrate import current_revision, head_revision
from db.schema import SCAN_DONE, SCAN_FAILED, SCAN_QUEUED, Result, Scan


@pytest.fixture
def database(database_url):
    opened = open_database(database_url)
    yield opened
    opened.dispose()


def _exemplar_set(database, training: dict | None = None, sha256: str = "a" * 64):
    vector = np.zeros(512, dtype="<f4").tobytes()
    with database.sessions.begin() as session:
        version = repository.get_or_create_model_version(
            session, sha256, "m.pt", "/models/m.pt", {"image_size": 224}, 0.5, training or {},
        )
        exemplar_set = repository.create_exemplar_set(
            session, version.id, "set",
            [repository.ExemplarRow("positive", "/p.png", vector), repository.ExemplarRow("negative", "/n.png", vector)],
        )
        exemplars = repository.load_exemplars(session, exemplar_set.id)
        return version.id, exemplar_set.id, exemplars[0].id, exemplars[1].id


def _scored(scan_id: int, positive_id: int, negative_id: int, distance: float = 0.3) -> repository.ScoredScan:
    return repository.ScoredScan(scan_id, distance, positive_id, 0.9, negative_id, distance <= 0.5, 640, 480)


def test_migrations_create_schema(database):
    tables = set(inspect(database.engine).get_table_names())

    assert {"model_versions", "exemplar_sets", "exemplars", "scans", "results", "alembic_version"} <= tables
    assert current_revision(database.engine) == head_revision()


def test_migrations_rerun_is_harmless(database, database_url):
    again = open_database(database_url)

    assert current_revision(again.engine) == head_revision()
    again.dispose()


def test_model_version_registered_once(database):
    with database.sessions.begin() as session:
        first = repository.get_or_create_model_version(session, "b" * 64, "m.pt", "/m.pt", {}, 0.5, {})
        second = repository.get_or_create_model_version(session, "b" * 64, "other.pt", "/other.pt", {}, 0.7, {})

    assert first.id == second.id
    assert second.name == "m.pt"


def test_exemplar_set_needs_positive(database):
    with database.sessions.begin() as session:
        version = repository.get_or_create_model_version(session, "c" * 64, "m.pt", "/m.pt", {}, 0.5, {})
        with pytest.raises(ValueError, match="at least one positive"):
            repository.create_exemplar_set(session, version.id, "set", [repository.ExemplarRow("negative", "/n.png", b"")])


def test_register_scans_is_idempotent(database):
    with database.sessions.begin() as session:
        first = repository.register_scans(session, ["/a.png", "/b.png", "/a.png"])
    with database.sessions.begin() as session:
        second = repository.register_scans(session, ["/b.png", "/c.png"])

    assert len(first) == 2
    assert all(new for _, new in first.values())
    assert second["/b.png"] == (first["/b.png"][0], False)
    assert second["/c.png"][1] is True


def test_write_batch_upserts_one_row(database):
    model_id, set_id, positive_id, negative_id = _exemplar_set(database)
    with database.sessions.begin() as session:
        scan_id = repository.register_scans(session, ["/scan.png"])["/scan.png"][0]

    for distance in (0.3, 0.8):
        with database.sessions.begin() as session:
            repository.write_batch(session, model_id, set_id, 0.5, [_scored(scan_id, positive_id, negative_id, distance)], [])

    with database.sessions() as session:
        rows = session.execute(select(Result)).scalars().all()
        scan = session.get(Scan, scan_id)
    assert len(rows) == 1
    assert rows[0].positive_distance == pytest.approx(0.8)
    assert rows[0].flagged is False
    assert scan.status == SCAN_DONE
    assert (scan.width, scan.height) == (640, 480)


def test_write_batch_records_failures(database):
    model_id, set_id, positive_id, negative_id = _exemplar_set(database)
    with database.sessions.begin() as session:
        ids = repository.register_scans(session, ["/ok.png", "/bad.png", "/worse.png"])

    with database.sessions.begin() as session:
        repository.write_batch(
            session, model_id, set_id, 0.5,
            [_scored(ids["/ok.png"][0], positive_id, negative_id)],
            [repository.FailedScan(ids["/bad.png"][0], "empty file (0 bytes)"), repository.FailedScan(ids["/worse.png"][0], "file not found")],
        )

    with database.sessions() as session:
        bad = session.get(Scan, ids["/bad.png"][0])
        worse = session.get(Scan, ids["/worse.png"][0])
    assert (bad.status, bad.failure_reason) == (SCAN_FAILED, "empty file (0 bytes)")
    assert (worse.status, worse.failure_reason) == (SCAN_FAILED, "file not found")


def test_requeue_clears_failure(database):
    with database.sessions.begin() as session:
        scan_id = repository.register_scans(session, ["/x.png"])["/x.png"][0]
        session.get(Scan, scan_id).status = SCAN_FAILED
    with database.sessions.begin() as session:
        repository.requeue_scans(session, [scan_id])

    with database.sessions() as session:
        scan = session.get(Scan, scan_id)
    assert scan.status == SCAN_QUEUED
    assert scan.failure_reason is None


def test_list_results_flagged_first(database):
    model_id, set_id, positive_id, negative_id = _exemplar_set(database)
    with database.sessions.begin() as session:
        ids = repository.register_scans(session, ["/clear.png", "/flag.png", "/broken.png"])
        repository.write_batch(
            session, model_id, set_id, 0.5,
            [_scored(ids["/clear.png"][0], positive_id, negative_id, 0.9), _scored(ids["/flag.png"][0], positive_id, negative_id, 0.1)],
            [repository.FailedScan(ids["/broken.png"][0], "truncated")],
        )

    with database.sessions() as session:
        rows = repository.list_results(session)
        flagged = repository.list_results(session, flagged_only=True)

    assert [row.uri for row in rows] == ["/flag.png", "/clear.png", "/broken.png"]
    assert [row.uri for row in flagged] == ["/flag.png"]
    assert rows[2].failure_reason == "truncated"
    assert [(row.score_rule, row.score) for row in rows] == [("nearest_positive", 0.1), ("nearest_positive", 0.9), (None, None)]


@pytest.mark.parametrize("rule, expected_order, expected_scores", [
    # (positive, negative) distances: a (0.2, 0.3), b (0.6, 1.4), c (0.4, 0.9).
    ("novelty", ["/b.png", "/c.png", "/a.png"], [1.4, 0.9, 0.3]),
    ("margin", ["/b.png", "/c.png", "/a.png"], [0.8, 0.5, 0.1]),
    ("nearest_positive", ["/a.png", "/c.png", "/b.png"], [0.2, 0.4, 0.6]),
])
def test_list_results_orders_by_the_models_score_rule(database, rule, expected_order, expected_scores):
    model_id, set_id, positive_id, negative_id = _exemplar_set(database, training={"score_rule": rule})
    distances = {"/a.png": (0.2, 0.3), "/b.png": (0.6, 1.4), "/c.png": (0.4, 0.9)}
    with database.sessions.begin() as session:
        ids = repository.register_scans(session, list(distances))
        scored = [
            repository.ScoredScan(ids[uri][0], positive, positive_id, negative, negative_id, False, 640, 480)
            for uri, (positive, negative) in distances.items()
        ]
        repository.write_batch(session, model_id, set_id, 2.0, scored, [])

    with database.sessions() as session:
        rows = repository.list_results(session)

    assert [row.uri for row in rows] == expected_order
    assert [row.score_rule for row in rows] == [rule] * 3
    assert [row.score for row in rows] == pytest.approx(expected_scores)


def test_redact_url_hides_password():
    text = redact_url("cannot connect to postgresql+psycopg://scanner:s3cret@db:5432/cargoscan")

    assert "s3cret" not in text
    assert "scanner:***@db" in text


def test_normalize_url_picks_psycopg():
    assert normalize_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalize_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_uses_wal(sqlite_url):
    opened = open_database(sqlite_url)
    with opened.engine.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    opened.dispose()

    assert mode == "wal"
    assert timeout >= 10_000
