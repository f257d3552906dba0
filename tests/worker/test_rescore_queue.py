"""Archive rescoring through a real Redis and Celery worker into PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sqlalchemy import func, select

from db import registry, repository
from db.database import open_database
from db.schema import Result
from models.checkpoint import save_checkpoint
from models.embedder import SiameseEmbedder
from models.preprocess import PreprocessConfig
from models.scanfiles import list_scan_files
from models.synthetic import render_scan, write_png16
from scheduler import rescore as rescore_module
from scheduler.enqueue import send_job
from scheduler.enroll import enroll
from scheduler.rescore import rescore_archive
from scheduler.screen import screen_folder
from tests.conftest import TINY_SCENE
from tests.worker.celery_harness import celery_worker, private_queue, rescore_queue, wait_until
from worker.settings import Settings
from worker.tasks import screen

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

ARCHIVE_SIZE = 200


@pytest.fixture
def archive(postgres_url, tiny_checkpoint, exemplar_folders, tmp_path):
    """200 scans screened in-process by model A, then model B enrolled and activated."""
    folder = tmp_path / "archive"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for index in range(ARCHIVE_SIZE):
        write_png16(folder / f"scan_{index:03d}.png", render_scan(rng, index % 3 == 0, TINY_SCENE).pixels)

    database = open_database(postgres_url)
    positive, negative = exemplar_folders
    enroll(database.sessions, tiny_checkpoint, list_scan_files(positive), list_scan_files(negative), name="model-a")
    settings = Settings(database_url=postgres_url, metrics_port=0, scan_root=folder)
    screen_folder(database, settings, folder)

    torch.manual_seed(1)
    model_b = tmp_path / "model-b.pt"
    save_checkpoint(model_b, SiameseEmbedder().eval(), PreprocessConfig(image_size=32), threshold=1e6)
    enrolled = enroll(database.sessions, model_b, list_scan_files(positive), list_scan_files(negative), name="model-b")
    with database.sessions.begin() as session:
        registry.activate(session, enrolled.model_version_id, enrolled.exemplar_set_id)

    yield database, folder, enrolled
    database.dispose()


def _results_per_scan(database, model_version_id: int) -> list[int]:
    with database.sessions() as session:
        counts = session.execute(
            select(func.count()).select_from(Result).where(Result.model_version_id == model_version_id).group_by(Result.scan_id)
        ).scalars().all()
    return counts


def _all_rescored(database, model_version_id: int, expected: int = ARCHIVE_SIZE) -> bool:
    return len(_results_per_scan(database, model_version_id)) >= expected


def _url(database) -> str:
    return database.engine.url.render_as_string(hide_password=False)


def test_rescore_gives_one_result_per_version(archive, redis_url, tmp_path):
    database, folder, enrolled = archive
    queue = private_queue()
    settings = Settings(database_url=_url(database), rescore_queue=rescore_queue(queue))

    summary = rescore_archive(database, settings, progress=False)
    with celery_worker(_url(database), redis_url, tmp_path, queue=queue, CARGOSCAN_SCAN_ROOT=str(folder), max_batch_size="32"):
        wait_until(lambda: _all_rescored(database, enrolled.model_version_id), 240, interval_s=1.0, message="archive rescored")

    assert summary.sent == ARCHIVE_SIZE
    assert _results_per_scan(database, enrolled.model_version_id) == [1] * ARCHIVE_SIZE
    with database.sessions() as session:
        model_a = registry.find_model_version(session, "1")
    assert _results_per_scan(database, model_a.id) == [1] * ARCHIVE_SIZE


def test_interrupted_rescore_resumes(archive, redis_url, tmp_path, monkeypatch):
    database, folder, enrolled = archive
    queue = private_queue()
    settings = Settings(database_url=_url(database), rescore_queue=rescore_queue(queue))
    monkeypatch.setattr(rescore_module, "CHUNK", 50)
    real_send = rescore_module._send
    calls = []

    def send_then_die(task, jobs, queue_name):
        # The third chunk is sent but the process dies before recording it.
        real_send(task, jobs, queue_name)
        calls.append(len(jobs))
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash after sending, before marking")

    monkeypatch.setattr(rescore_module, "_send", send_then_die)
    with pytest.raises(KeyboardInterrupt):
        rescore_archive(database, settings, progress=False)
    monkeypatch.setattr(rescore_module, "_send", real_send)
    resumed = rescore_archive(database, settings, progress=False)

    with celery_worker(_url(database), redis_url, tmp_path, queue=queue, CARGOSCAN_SCAN_ROOT=str(folder), max_batch_size="32"):
        wait_until(lambda: _all_rescored(database, enrolled.model_version_id), 240, interval_s=1.0, message="archive rescored")

    assert calls == [50, 50, 50]
    assert resumed.sent == ARCHIVE_SIZE - 100
    assert _results_per_scan(database, enrolled.model_version_id) == [1] * ARCHIVE_SIZE


def test_live_scans_overtake_rescore(archive, redis_url, tmp_path):
    database, folder, enrolled = archive
    queue = private_queue()
    settings = Settings(database_url=_url(database), rescore_queue=rescore_queue(queue))
    rescore_archive(database, settings, progress=False)

    live_paths = []
    rng = np.random.default_rng(8)
    for index in range(8):
        path = folder / f"live_{index}.png"
        write_png16(path, render_scan(rng, False, TINY_SCENE).pixels)
        live_paths.append(str(path))
    with database.sessions.begin() as session:
        live_ids = [scan_id for scan_id, _ in repository.register_scans(session, live_paths).values()]
    for scan_id, uri in zip(live_ids, live_paths):
        send_job(screen, scan_id, uri, queue)

    with celery_worker(_url(database), redis_url, tmp_path, queue=queue, CARGOSCAN_SCAN_ROOT=str(folder), max_batch_size="8"):
        total = ARCHIVE_SIZE + len(live_ids)
        wait_until(lambda: _all_rescored(database, enrolled.model_version_id, total), 240, interval_s=1.0, message="archive rescored")

    with database.sessions() as session:
        live_times = session.execute(select(Result.scored_at).where(Result.scan_id.in_(live_ids))).scalars().all()
        archive_times = sorted(
            session.execute(
                select(Result.scored_at).where(Result.model_version_id == enrolled.model_version_id, Result.scan_id.not_in(live_ids))
            ).scalars()
        )
    assert len(live_times) == len(live_ids)
    # Prefetching may let up to two batches of rescore jobs in first; live must beat the rest.
    assert max(live_times) <= archive_times[24]
