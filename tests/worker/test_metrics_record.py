"""Worker info and GPU memory recorded from the screener that screened a batch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from prometheus_client import REGISTRY

from worker.metrics import CARGOSCAN_VERSION, record_batch
from worker.pipeline import BatchReport


def _screener(sha: str, exemplar_set_id: int, device: str = "cpu") -> SimpleNamespace:
    return SimpleNamespace(model_sha256=sha, exemplar_set_id=exemplar_set_id, device=torch.device(device))


def _info(sha: str, exemplar_set_id: int) -> float | None:
    labels = {"version": CARGOSCAN_VERSION, "model_version": sha[:12], "exemplar_set": str(exemplar_set_id)}
    return REGISTRY.get_sample_value("cargoscan_worker_info", labels)


def test_info_names_model_and_exemplar_set():
    sha = "0123456789abcdef" * 4
    record_batch(BatchReport(size=0), _screener(sha, 41))
    assert _info(sha, 41) == 1.0


def test_info_switch_zeroes_old_pair():
    old, new = "aa" * 32, "bb" * 32
    record_batch(BatchReport(size=0), _screener(old, 7))
    record_batch(BatchReport(size=0), _screener(new, 8))
    assert _info(old, 7) == 0.0
    assert _info(new, 8) == 1.0


def test_cpu_screener_records_no_gpu_memory():
    record_batch(BatchReport(size=0), _screener("cc" * 32, 9))
    assert REGISTRY.get_sample_value("cargoscan_gpu_memory_allocated_bytes", {"device": "cpu"}) is None


@pytest.mark.gpu
def test_cuda_screener_records_gpu_memory():
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    tensor = torch.ones(1024, 1024, device="cuda:0")
    record_batch(BatchReport(size=0), _screener("dd" * 32, 10, "cuda:0"))
    assert REGISTRY.get_sample_value("cargoscan_gpu_memory_allocated_bytes", {"device": "cuda:0"}) >= tensor.numel() * 4
    assert REGISTRY.get_sample_value("cargoscan_gpu_memory_reserved_bytes", {"device": "cuda:0"}) >= tensor.numel() * 4


def test_tile_batches_count_tiles():
    before = REGISTRY.get_sample_value("cargoscan_tiles_total") or 0.0

    record_batch(BatchReport(size=2, scored=[(1, True, 0.1), (2, False, 0.9)], tiles=260))
    record_batch(BatchReport(size=1, scored=[(3, False, 0.7)]))

    assert REGISTRY.get_sample_value("cargoscan_tiles_total") - before == 260
