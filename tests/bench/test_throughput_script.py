"""The throughput benchmark script runs and prints its tables; speed is never asserted here."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.common import REPO_ROOT, Section, percentile, real_scan_sets

pytestmark = pytest.mark.slow


def test_database_section_prints_table(tmp_path):
    output = tmp_path / "bench.md"
    result = subprocess.run(
        [sys.executable, "bench/throughput.py", "--quick", "--sections", "database", "--output", str(output)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "### Result writes, one transaction per batch" in result.stdout
    assert "| sqlite | 32 |" in result.stdout
    assert "load average" in result.stdout
    assert output.read_text().startswith("## CargoScan benchmark (--quick)")


def test_unknown_section_rejected():
    result = subprocess.run(
        [sys.executable, "bench/throughput.py", "--sections", "forward,nonsense"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "unknown sections ['nonsense']" in result.stderr


def test_percentile_interpolates():
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)
    assert percentile([5.0], 0.99) == 5.0


def test_section_renders_markdown():
    table = Section(title="Example", columns=["a", "b"])
    table.add("x", 1234.5)
    table.add("y", 0.01234)
    text = table.render()
    assert "| a | b |" in text
    assert "| x | 1234 |" in text
    assert "| y | 0.0123 |" in text


def test_real_scan_sets_limit():
    sets = real_scan_sets(limit=5)
    if not sets:
        pytest.skip("real X-ray scans not found")
    assert set(sets) == {"sixray", "cargo"}
    assert all(len(paths) == 5 for paths in sets.values())
