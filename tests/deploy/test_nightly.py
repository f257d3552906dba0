"""The nightly drop-folder run: its beat schedule, the task and the CLI, against real Redis and databases."""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime, timezone
from zoneinfo import ZoneInfoNotFoundError

import pytest
import redis
from celery.schedules import crontab
from pydantic import ValidationError

from scheduler.beat import NIGHTLY_ENTRY, NIGHTLY_TASK, enqueue_nightly, next_run, nightly_beat_schedule, run_nightly
from scheduler.cli import main
from worker.queue_depth import redis_list_keys
from worker.settings import Settings


@pytest.fixture
def queue(redis_url):
    name = f"cargoscan.test.nightly.{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    client.delete(*redis_list_keys(name))
    client.close()


def _queue_length(redis_url: str, name: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return client.llen(name)
    finally:
        client.close()


def test_schedule_empty_without_folder():
    assert nightly_beat_schedule(Settings(nightly_drop_folder=None)) == {}


def test_schedule_runs_at_configured_time(tmp_path):
    settings = Settings(nightly_drop_folder=tmp_path, nightly_time="23:05", queue="live")

    entry = nightly_beat_schedule(settings)[NIGHTLY_ENTRY]

    assert entry["task"] == NIGHTLY_TASK
    assert entry["schedule"] == crontab(minute=5, hour=23)
    assert entry["kwargs"] == {"folder": str(tmp_path), "queue": "live"}
    assert entry["options"]["queue"] == "live"
    assert entry["options"]["expires"] > 0


@pytest.mark.parametrize("text", ["24:00", "7:30", "07:60", "0730", "seven"])
def test_invalid_time_rejected(text):
    with pytest.raises(ValidationError):
        Settings(nightly_time=text)


def test_unknown_time_zone_rejected(tmp_path):
    with pytest.raises(ZoneInfoNotFoundError, match="Nowhere/City"):
        nightly_beat_schedule(Settings(nightly_drop_folder=tmp_path, timezone="Nowhere/City"))


def test_next_run_today_or_tomorrow():
    settings = Settings(nightly_time="02:00", timezone="UTC")
    before = datetime(2024, 3, 1, 1, 0, tzinfo=timezone.utc)
    after = datetime(2024, 3, 1, 3, 0, tzinfo=timezone.utc)

    assert next_run(settings, before) == datetime(2024, 3, 1, 2, 0, tzinfo=timezone.utc)
    assert next_run(settings, after) == datetime(2024, 3, 2, 2, 0, tzinfo=timezone.utc)


def test_task_registered_with_worker_app():
    from worker.celery import app

    app.loader.import_default_modules()
    assert NIGHTLY_TASK in app.tasks


@pytest.mark.redis
def test_second_run_skips_recorded_scans(database_url, redis_url, scan_folder, queue):
    first = run_nightly(scan_folder, queue, database_url)
    second = run_nightly(scan_folder, queue, database_url)
    shutil.copyfile(scan_folder / "scan_00.png", scan_folder / "scan_new.png")
    third = run_nightly(scan_folder, queue, database_url)

    assert (first.found, first.sent, first.skipped) == (8, 8, 0)
    assert (second.found, second.sent, second.skipped) == (8, 0, 8)
    assert (third.found, third.sent, third.skipped) == (9, 1, 8)
    assert _queue_length(redis_url, queue) == 9


@pytest.mark.redis
def test_task_runs_enqueue(sqlite_url, redis_url, scan_folder, queue):
    result = enqueue_nightly.apply(kwargs={"folder": str(scan_folder), "queue": queue, "database_url": sqlite_url})

    assert result.get() == {"found": 8, "sent": 8, "skipped": 0}
    assert _queue_length(redis_url, queue) == 8


def test_missing_folder_fails(tmp_path, sqlite_url):
    with pytest.raises(FileNotFoundError, match="drop folder not found"):
        run_nightly(tmp_path / "absent", "unused", sqlite_url)


def test_cli_shows_disabled(monkeypatch, capsys):
    monkeypatch.delenv("CARGOSCAN_NIGHTLY_DROP_FOLDER", raising=False)
    assert main(["nightly"]) == 0
    assert "disabled" in capsys.readouterr().out


def test_cli_shows_schedule(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CARGOSCAN_NIGHTLY_DROP_FOLDER", str(tmp_path))
    monkeypatch.setenv("CARGOSCAN_NIGHTLY_TIME", "03:15")

    assert main(["nightly"]) == 0

    output = capsys.readouterr().out
    assert str(tmp_path) in output
    assert "03:15 UTC" in output
    assert "next run" in output


@pytest.mark.redis
def test_cli_now_enqueues(monkeypatch, capsys, sqlite_url, redis_url, scan_folder, queue):
    monkeypatch.setenv("CARGOSCAN_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CARGOSCAN_NIGHTLY_DROP_FOLDER", str(scan_folder))
    monkeypatch.setenv("CARGOSCAN_QUEUE", queue)

    assert main(["nightly", "--now"]) == 0

    assert f"sent 8 jobs to queue {queue}" in capsys.readouterr().out
    assert _queue_length(redis_url, queue) == 8
