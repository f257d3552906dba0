"""Failure reasons become a fixed set of metric labels, checked on the messages real bad files produce."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from models.imaging import ScanReadError, load_scan
from models.synthetic import write_png16
from worker.failure_reasons import FAILURE_REASONS, failure_reason_label
from worker.metrics import record_batch
from worker.pipeline import BatchReport
from worker.scanpaths import resolve_scan_path


def _load_reason(path: Path, max_image_pixels: int = 10_000_000) -> str:
    with pytest.raises(ScanReadError) as raised:
        load_scan(path, max_image_pixels=max_image_pixels)
    return raised.value.reason


def _uri_reason(uri: str, root: Path) -> str:
    with pytest.raises(ScanReadError) as raised:
        resolve_scan_path(uri, root)
    return raised.value.reason


def _good_png(path: Path) -> Path:
    write_png16(path, (np.arange(64 * 32, dtype=np.uint16) * 16).reshape(32, 64))
    return path


def test_empty_file_is_empty(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert failure_reason_label(_load_reason(path)) == "empty"


def test_truncated_png_is_truncated(tmp_path):
    path = _good_png(tmp_path / "truncated.png")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    assert failure_reason_label(_load_reason(path)) == "truncated"


def test_garbage_bytes_are_corrupt(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(b"this is not an image at all" * 10)
    assert failure_reason_label(_load_reason(path)) == "corrupt"


def test_missing_file_is_not_found(tmp_path):
    assert failure_reason_label(_load_reason(tmp_path / "missing.png")) == "not_found"


def test_directory_is_unreadable(tmp_path):
    folder = tmp_path / "folder.png"
    folder.mkdir()
    assert failure_reason_label(_load_reason(folder)) == "unreadable"


def test_gif_is_unsupported_format(tmp_path):
    path = tmp_path / "scan.gif"
    Image.new("L", (8, 8)).save(path, format="GIF")
    assert failure_reason_label(_load_reason(path)) == "unsupported_format"


def test_oversized_image_is_too_large(tmp_path):
    path = _good_png(tmp_path / "large.png")
    assert failure_reason_label(_load_reason(path, max_image_pixels=100)) == "too_large"


def test_path_outside_root_is_outside_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert failure_reason_label(_uri_reason(str(tmp_path / "elsewhere.png"), root)) == "outside_root"


def test_http_uri_is_invalid_uri(tmp_path):
    assert failure_reason_label(_uri_reason("http://example.invalid/scan.png", tmp_path)) == "invalid_uri"


def test_exhausted_deliveries_are_internal(enrolled_database, scan_folder):
    from db import repository
    from worker.attempts import _fail_exhausted
    from worker.pipeline import ScanJob

    uri = str(sorted(scan_folder.glob("*.png"))[0])
    with enrolled_database.sessions.begin() as session:
        scan_id = repository.register_scans(session, [uri])[uri][0]
        exemplar_set = repository.latest_exemplar_set(session)
        model_version_id, exemplar_set_id = exemplar_set.model_version_id, exemplar_set.id
    screener = SimpleNamespace(
        model_version_id=model_version_id, exemplar_set_id=exemplar_set_id, threshold=1.0,
        db_retry_attempts=1, db_retry_initial_delay_s=0.01,
    )
    runtime = SimpleNamespace(screener=screener, database=enrolled_database)

    report = _fail_exhausted(runtime, [(ScanJob(scan_id=scan_id, uri=uri), 3)], max_attempts=3)

    assert failure_reason_label(report.failed[0][1]) == "internal"


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("internal error while screening: RuntimeError: CUDA out of memory", "internal"),
        ("screening did not finish in 3 deliveries (the worker probably crashed on this scan); not retried after 3", "internal"),
        ("image is over the pixel limit: Image size (200000000 pixels) exceeds limit", "too_large"),
        ("unsupported pixel mode BGR;16", "unsupported_format"),
        ("I;16B image has values 0..70000, outside 0..65535", "corrupt"),
        ("floating-point image contains NaN or infinite values", "corrupt"),
        ("image has no pixels (0x0)", "empty"),
        ("file cannot be read: Permission denied", "unreadable"),
        ("job has no scan URI", "invalid_uri"),
        ("unknown error", "other"),
        ("", "other"),
        (None, "other"),
    ],
)
def test_reason_table(reason, label):
    assert failure_reason_label(reason) == label


def test_every_label_is_in_fixed_set():
    reasons = ["/data/scans/2024/a.png: weird", "scan 12345 failed", "x" * 500]
    for reason in reasons:
        assert failure_reason_label(reason) in FAILURE_REASONS


def test_record_batch_counts_reason_label():
    before_empty = REGISTRY.get_sample_value("cargoscan_scans_failed_total", {"reason": "empty"}) or 0.0
    before_not_found = REGISTRY.get_sample_value("cargoscan_scans_failed_total", {"reason": "not_found"}) or 0.0
    report = BatchReport(size=3, failed=[(1, "empty file (0 bytes)"), (2, "empty file (0 bytes)"), (3, "file not found")])

    record_batch(report)

    assert REGISTRY.get_sample_value("cargoscan_scans_failed_total", {"reason": "empty"}) == before_empty + 2
    assert REGISTRY.get_sample_value("cargoscan_scans_failed_total", {"reason": "not_found"}) == before_not_found + 1
