"""Between batches a worker picks up a recalibrated threshold and logs what changed."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import update

from db.schema import ModelVersion
from worker.settings import Settings


@pytest.fixture
def runtime_module(enrolled_database, monkeypatch):
    from worker import runtime

    url = enrolled_database.engine.url.render_as_string(hide_password=False)
    monkeypatch.setattr(runtime, "get_settings", lambda: Settings(database_url=url, metrics_port=0))
    monkeypatch.setattr(runtime, "_runtime", None)
    yield runtime
    if runtime._runtime is not None:
        runtime._runtime.screener.close()
        runtime._runtime.database.dispose()


def test_recalibrated_threshold_is_used_and_logged(runtime_module, enrolled_database, caplog):
    first = runtime_module.get_runtime()
    screener = first.screener
    with enrolled_database.sessions.begin() as session:
        session.execute(update(ModelVersion).values(threshold=screener.threshold / 2))

    with caplog.at_level(logging.INFO, logger="worker.runtime"):
        second = runtime_module.get_runtime()

    assert second.screener.threshold == pytest.approx(screener.threshold / 2)
    assert second.screener.embedder is screener.embedder
    assert "changed from" in caplog.text
    assert "switching to model" not in caplog.text


def test_unchanged_pair_keeps_screener(runtime_module, caplog):
    first = runtime_module.get_runtime().screener

    with caplog.at_level(logging.INFO, logger="worker.runtime"):
        second = runtime_module.get_runtime().screener

    assert second is first
    assert caplog.text == ""
