"""The demo's whole flow, shrunk to seconds."""

from __future__ import annotations

from scheduler.demo import DemoConfig, run_demo

TINY_DEMO = DemoConfig(train_per_class=6, queue_per_class=4, exemplars_per_class=3, image_size=32, epochs=1, pairs_per_epoch=16)


def test_demo_runs_end_to_end(tmp_path):
    lines = []

    figures = run_demo(tmp_path / "demo", TINY_DEMO, report=lines.append)

    assert figures["scanned"] == 8
    assert figures["failed"] == 0
    assert figures["positives"] == 4
    assert figures["negatives"] == 4
    assert (tmp_path / "demo" / "model.pt").is_file()
    assert (tmp_path / "demo" / "cargoscan.db").is_file()
    assert any(line.startswith("scanned 8, scored 8") for line in lines)
    assert any("held-out queue" in line for line in lines)
