"""Bad paths, bad messages, database retries, concurrent SQLite writers and forks."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from db import repository
from db.database import open_database
from db.schema import Result
from models.imaging import ScanReadError
from scheduler.cli import main
from worker.jobs import parse_job
from worker.retry import DatabaseUnavailable, run_with_db_retry
from worker.scanpaths import resolve_scan_path


@pytest.mark.parametrize(
    "uri",
    ["../../etc/passwd", "/etc/passwd", "file:///etc/passwd", "sub/../../outside.png"],
)
def test_paths_outside_root_rejected(tmp_path, uri):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)

    with pytest.raises(ScanReadError, match="outside the scan root"):
        resolve_scan_path(uri, root)


def test_symlink_escape_rejected(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.png").write_bytes(b"x")
    (root / "link.png").symlink_to(tmp_path / "secret.png")

    with pytest.raises(ScanReadError, match="outside the scan root"):
        resolve_scan_path(str(root / "link.png"), root)


def test_paths_inside_root_accepted(tmp_path):
    root = tmp_path / "root"
    root.mkdir()

    assert resolve_scan_path("a.png", root) == (root / "a.png").resolve()
    assert resolve_scan_path(f"file://{root}/b.png", root) == (root / "b.png").resolve()


def test_unsupported_uri_scheme_rejected(tmp_path):
    with pytest.raises(ScanReadError, match="unsupported URI scheme"):
        resolve_scan_path("s3://bucket/scan.png", tmp_path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"uri": "/a.png"}, "scan_id"),
        ({"scan_id": "7", "uri": "/a.png"}, "scan_id"),
        ({"scan_id": True, "uri": "/a.png"}, "scan_id"),
        ({"scan_id": 0, "uri": "/a.png"}, "scan_id"),
        ({"scan_id": 7}, "uri"),
        ({"scan_id": 7, "uri": ""}, "uri"),
    ],
)
def test_malformed_job_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        parse_job(kwargs)


def _operational_error() -> OperationalError:
    return OperationalError("INSERT", {}, Exception("connection to postgresql://scanner:s3cret@db:5432 refused"))


def test_retry_recovers_from_outage():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise _operational_error()
        return "written"

    assert run_with_db_retry(flaky, attempts=5, initial_delay_s=0.01) == "written"
    assert len(calls) == 3


def test_retry_gives_up_without_secrets():
    def down():
        raise _operational_error()

    with pytest.raises(DatabaseUnavailable) as caught:
        run_with_db_retry(down, attempts=3, initial_delay_s=0.01)

    assert "after 3 attempts" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_retry_does_not_hide_integrity_errors():
    def broken():
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(IntegrityError):
        run_with_db_retry(broken, attempts=3, initial_delay_s=0.01)


def test_cli_error_hides_password(capsys):
    status = main(["--db", "postgresql+psycopg://scanner:s3cret@127.0.0.1:1/cargoscan", "results"])

    error = capsys.readouterr().err
    assert status == 2
    assert "cannot open database" in error
    assert "s3cret" not in error


def _write_batches(url: str, worker: int, ids: list[int], ids_of_set: tuple[int, int, int, int]) -> None:
    model_id, set_id, positive_id, negative_id = ids_of_set
    database = open_database(url, migrate=False)
    for scan_id in ids:
        with database.sessions.begin() as session:
            scored = repository.ScoredScan(scan_id, 0.1 * worker, positive_id, 0.5, negative_id, True, 10, 10, b"\0" * 2048)
            repository.write_batch(session, model_id, set_id, 0.5, [scored], [])
    database.dispose()


def test_sqlite_concurrent_writers(sqlite_url):
    database = open_database(sqlite_url)
    vector = np.zeros(512, dtype="<f4").tobytes()
    with database.sessions.begin() as session:
        version = repository.get_or_create_model_version(session, "d" * 64, "m.pt", "/m.pt", {}, 0.5, {})
        exemplar_set = repository.create_exemplar_set(
            session, version.id, "s",
            [repository.ExemplarRow("positive", "/p", vector), repository.ExemplarRow("negative", "/n", vector)],
        )
        exemplars = repository.load_exemplars(session, exemplar_set.id)
        scan_ids = [scan_id for scan_id, _ in repository.register_scans(session, [f"/s{i}.png" for i in range(120)]).values()]
        ids_of_set = (version.id, exemplar_set.id, exemplars[0].id, exemplars[1].id)

    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write_batches, args=(sqlite_url, worker, scan_ids, ids_of_set)) for worker in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)

    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    with database.sessions() as session:
        assert session.execute(select(func.count()).select_from(Result)).scalar_one() == 120
    database.dispose()


def _runtime_in_child(queue) -> None:
    from worker import runtime

    child = runtime.get_runtime()
    queue.put((child.pid, id(child.database.engine), os.getpid()))


@pytest.mark.postgres
def test_fork_gets_own_engine(enrolled_database, monkeypatch):
    from worker import runtime
    from worker.settings import Settings

    url = enrolled_database.engine.url.render_as_string(hide_password=False)
    monkeypatch.setattr(runtime, "get_settings", lambda: Settings(database_url=url, metrics_port=0))
    monkeypatch.setattr(runtime, "_runtime", None)
    # The network is left out: OpenMP thread pools that torch started before a fork can
    # deadlock the child, which is why workers load the model only after forking.
    monkeypatch.setattr(runtime, "build_screener", lambda *args, **kwargs: None)
    parent = runtime.get_runtime()
    with parent.database.engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")

    queue = multiprocessing.get_context("fork").Queue()
    process = multiprocessing.get_context("fork").Process(target=_runtime_in_child, args=(queue,))
    process.start()
    child_pid, child_engine, real_pid = queue.get(timeout=120)
    process.join(timeout=60)

    assert child_pid == real_pid
    assert child_pid != parent.pid
    assert child_engine != id(parent.database.engine)
    parent.database.dispose()
