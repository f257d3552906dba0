"""Exemplar search at scale: exact (float64 matrix product in chunks) against the faiss index.

Data are synthetic 512-d float32 embeddings. ``clustered`` draws each exemplar around one of
1024 centres, the structure that trained embeddings have. ``isotropic`` is plain Gaussian
noise, the worst case for an inverted-file index. Queries come from the same distribution.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
import torch

from models.exemplars import ExemplarIndex

DIM = 512
QUERIES = 64
_CENTRES = 1024
_NOISE = 0.35


def embeddings(count: int, seed: int, kind: str) -> np.ndarray:
    """Return (count, 512) float32 embeddings, built in place to avoid float64 temporaries."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, DIM), dtype=np.float32)
    if kind == "isotropic":
        return vectors

    vectors *= _NOISE
    centres = np.random.default_rng(12345).standard_normal((_CENTRES, DIM), dtype=np.float32)
    for start in range(0, count, 65536):
        stop = min(count, start + 65536)
        vectors[start:stop] += centres[rng.integers(0, _CENTRES, size=stop - start)]
    return vectors


def _mean_seconds(index: ExemplarIndex, queries: torch.Tensor, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        index.nearest(queries)
    return (time.perf_counter() - started) / repeats


def measure(count: int, kind: str, repeats: int) -> tuple[float, float, float, float, tuple[int, int]]:
    """Return exact s/batch, index build s, approximate s/batch, recall@1 and the (lists, probes) used."""
    data = embeddings(count, seed=1, kind=kind)
    ids = np.arange(count, dtype=np.int64)
    queries = torch.from_numpy(embeddings(QUERIES, seed=2, kind=kind))

    # A million exemplars take seconds per exact batch, so the first timed call also serves
    # as the reference for recall, and the largest size is timed once.
    exact_index = ExemplarIndex(data, ids, approximate_min_exemplars=count + 1)
    started = time.perf_counter()
    exact = exact_index.nearest(queries)
    first_s = time.perf_counter() - started
    exact_s = first_s if count >= 1_000_000 else _mean_seconds(exact_index, queries, repeats)
    del exact_index
    gc.collect()

    started = time.perf_counter()
    approximate_index = ExemplarIndex(data, ids, approximate_min_exemplars=1)
    build_s = time.perf_counter() - started
    approximate = approximate_index.nearest(queries)
    approximate_s = _mean_seconds(approximate_index, queries, repeats)
    recall = float((approximate.exemplar_id == exact.exemplar_id).mean())
    lists_and_probes = approximate_index.approximate_lists_and_probes
    del approximate_index, data
    gc.collect()
    return exact_s, build_s, approximate_s, recall, lists_and_probes


def run(section, counts: list[int], isotropic_counts: list[int], repeats: int) -> None:
    for kind, sizes in (("clustered", counts), ("isotropic", isotropic_counts)):
        for count in sizes:
            exact_s, build_s, approximate_s, recall, (lists, probes) = measure(count, kind, repeats)
            section.add(
                kind, f"{count:.0e}", 1000 * exact_s, 1000 * approximate_s, f"{exact_s / approximate_s:.1f}x",
                build_s, f"{probes}/{lists}", f"{recall:.3f}",
            )
    section.note(
        f"{QUERIES} queries per batch, {torch.get_num_threads()} threads (torch and faiss); faiss IVF with 8-bit scalar "
        "quantisation, sqrt(M) lists, the 32 best candidates re-ranked exactly; recall@1 = share of queries whose "
        "nearest exemplar matches exact search"
    )
    section.note(f"peak resident memory of the benchmark process so far: {_peak_rss_gib():.1f} GiB")


def _peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")
