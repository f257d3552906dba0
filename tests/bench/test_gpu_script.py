"""The GPU benchmark's parts that run without a GPU: its refusal message and its arithmetic."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bench.common import REPO_ROOT
from bench.gpu import FLOP_PER_IMAGE, floor_fraction, peak_tflops

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available, so the script would run")


@no_cuda
def test_gpu_script_fails_clearly_without_cuda():
    result = subprocess.run(
        ["bash", "bench/gpu.sh"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )
    assert result.returncode == 1
    assert "CUDA is not available" in result.stderr
    assert result.stdout == ""


@no_cuda
def test_gpu_python_fails_clearly_without_cuda():
    result = subprocess.run([sys.executable, "bench/gpu.py"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "CUDA is not available" in result.stderr


def test_peak_table_picks_precision():
    assert peak_tflops("NVIDIA H100 80GB HBM3", mixed_precision=True) == 989.0
    assert peak_tflops("NVIDIA H100 80GB HBM3", mixed_precision=False) == 494.0
    assert peak_tflops("NVIDIA A100-SXM4-40GB", mixed_precision=True) == 312.0


def test_peak_table_prefers_specific_name():
    assert peak_tflops("NVIDIA H100 PCIe", mixed_precision=True) == 756.0


def test_peak_unknown_and_override():
    assert peak_tflops("Some Future GPU", mixed_precision=True) is None
    assert peak_tflops("Some Future GPU", mixed_precision=True, override=100.0) == 100.0


def test_floor_fraction():
    # 10,000 images/s x 3.64 GFLOP = 36.4 TFLOP/s, a tenth of a 364 TFLOP/s peak.
    assert FLOP_PER_IMAGE == 3.64e9
    assert floor_fraction(10_000, 364.0) == pytest.approx(0.1)
    assert floor_fraction(10_000, None) is None
