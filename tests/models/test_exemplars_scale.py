"""Numerics of nearest-exemplar search at scale: chunked exact search and the faiss index.

The approximate index is switched on at small sizes here (``approximate_min_exemplars``) so
the tests stay fast; the code path is the one used above the configured exemplar count.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models.exemplars as exemplars_module
from models.exemplars import ExemplarIndex

DIM = 512


def _random(count: int, seed: int, norm: float | None = None) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    if norm is not None:
        vectors *= norm / np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _clustered(count: int, seed: int, offset: float = 0.0) -> np.ndarray:
    """Embeddings around 64 fixed cluster centres, optionally shifted by a common offset of norm ``offset``.

    Every call shares the centres and the offset direction, so exemplars and queries drawn
    with different seeds come from one distribution.
    """
    shared = np.random.default_rng(0)
    centres = shared.standard_normal((64, DIM)) * 3.0
    shift = shared.standard_normal(DIM)

    rng = np.random.default_rng(seed)
    vectors = centres[rng.integers(0, 64, size=count)] + rng.standard_normal((count, DIM)) * 0.5
    if offset:
        vectors += shift * offset / np.linalg.norm(shift)
    return vectors.astype(np.float32)


def _reference(queries: np.ndarray, exemplars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest distance and row per query, in float64 from (q - e) directly, without the matrix product."""
    queries64, exemplars64 = queries.astype(np.float64), exemplars.astype(np.float64)
    distances = np.empty(len(queries))
    rows = np.empty(len(queries), dtype=np.int64)
    for i, query in enumerate(queries64):
        each = np.sqrt(((exemplars64 - query) ** 2).sum(axis=1))
        rows[i] = int(np.argmin(each))
        distances[i] = each[rows[i]]
    return distances, rows


def _approximate(embeddings, probes: int = 0) -> ExemplarIndex:
    index = ExemplarIndex(embeddings, np.arange(len(embeddings)), approximate_min_exemplars=1, approximate_probes=probes)
    assert index.is_approximate
    return index


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunk exact search every 100 rows so a few hundred exemplars cross chunk borders."""
    monkeypatch.setattr(exemplars_module, "_EXACT_CHUNK_ROWS", 100)


# --- exact search across chunks ---------------------------------------------------------------


def test_chunked_exact_matches_reference(small_chunks):
    exemplars, queries = _random(450, seed=1), _random(30, seed=2)
    result = ExemplarIndex(exemplars, np.arange(450)).nearest(torch.from_numpy(queries))
    distances, rows = _reference(queries, exemplars)
    np.testing.assert_array_equal(result.exemplar_id, rows)
    np.testing.assert_allclose(result.distance, distances, rtol=1e-5)


def test_chunked_exact_copy_in_last_chunk(small_chunks):
    exemplars = _random(450, seed=3, norm=1e3)
    query = exemplars[449:450].copy()
    result = ExemplarIndex(exemplars, np.arange(450)).nearest(torch.from_numpy(query))
    assert result.exemplar_id[0] == 449
    assert result.distance[0] == 0.0


def test_chunked_near_duplicate_large_norm(small_chunks):
    exemplars = _random(450, seed=4, norm=1e3)
    query = (exemplars[123] + _random(1, seed=5, norm=1e-3)[0]).astype(np.float32)
    expected = np.linalg.norm(query.astype(np.float64) - exemplars[123].astype(np.float64))
    result = ExemplarIndex(exemplars, np.arange(450)).nearest(torch.from_numpy(query[None]))
    assert result.exemplar_id[0] == 123
    assert result.distance[0] == pytest.approx(expected, rel=1e-4)


def test_fp16_exemplars_accepted():
    exemplars16 = (_random(200, seed=6) * 10).astype(np.float16)
    queries = torch.from_numpy(exemplars16[[5, 77]].astype(np.float32))
    result = ExemplarIndex(exemplars16, np.arange(200)).nearest(queries)
    np.testing.assert_array_equal(result.exemplar_id, [5, 77])
    assert (result.distance == 0.0).all()


def test_fp16_tensor_exemplars_and_queries():
    exemplars16 = torch.from_numpy(_random(200, seed=7) * 10).half()
    queries16 = exemplars16[[9, 150]] + 0.01
    result = ExemplarIndex(exemplars16, np.arange(200)).nearest(queries16)
    distances, rows = _reference(queries16.float().numpy(), exemplars16.float().numpy())
    np.testing.assert_array_equal(result.exemplar_id, rows)
    np.testing.assert_allclose(result.distance, distances, rtol=1e-4)


def test_nan_exemplars_rejected():
    exemplars = _random(10, seed=8)
    exemplars[3, 7] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        ExemplarIndex(exemplars, np.arange(10))


def test_infinite_queries_rejected():
    queries = torch.from_numpy(_random(2, seed=9))
    queries[1, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        ExemplarIndex(_random(10, seed=8), np.arange(10)).nearest(queries)


# --- the approximate index ---------------------------------------------------------------------


def test_index_exact_below_threshold():
    index = ExemplarIndex(_random(50, seed=1), np.arange(50), approximate_min_exemplars=51)
    assert not index.is_approximate


def test_index_approximate_at_threshold():
    index = ExemplarIndex(_random(50, seed=1), np.arange(50), approximate_min_exemplars=50)
    assert index.is_approximate


def test_approximate_agrees_with_exact_clustered():
    exemplars = _clustered(4000, seed=10)
    queries = _clustered(200, seed=11)
    approximate = _approximate(exemplars).nearest(torch.from_numpy(queries))
    exact = ExemplarIndex(exemplars, np.arange(4000)).nearest(torch.from_numpy(queries))
    recall = float((approximate.exemplar_id == exact.exemplar_id).mean())
    assert recall >= 0.95


def test_approximate_agrees_with_exact_random():
    # Isotropic random data has no cluster structure, the hard case for an inverted file;
    # probing every list makes the candidate search exhaustive, up to quantisation.
    exemplars, queries = _random(2000, seed=12), _random(100, seed=13)
    index = _approximate(exemplars, probes=10_000)
    approximate = index.nearest(torch.from_numpy(queries))
    distances, rows = _reference(queries, exemplars)
    assert float((approximate.exemplar_id == rows).mean()) >= 0.98
    np.testing.assert_allclose(approximate.distance[approximate.exemplar_id == rows], distances[approximate.exemplar_id == rows], rtol=1e-5)


def test_approximate_distances_are_exact():
    # Whatever candidate wins, its reported distance is the exact one, not faiss's estimate.
    exemplars, queries = _clustered(3000, seed=14), _clustered(50, seed=15)
    result = _approximate(exemplars).nearest(torch.from_numpy(queries))
    chosen = exemplars[result.exemplar_id].astype(np.float64)
    expected = np.sqrt(((queries.astype(np.float64) - chosen) ** 2).sum(axis=1))
    np.testing.assert_allclose(result.distance, expected, rtol=1e-5)


def test_approximate_exact_copy_large_norm():
    exemplars = _clustered(3000, seed=16, offset=1e3)
    assert np.linalg.norm(exemplars, axis=1).min() > 900
    picked = [0, 1234, 2999]
    result = _approximate(exemplars).nearest(torch.from_numpy(exemplars[picked]))
    np.testing.assert_array_equal(result.exemplar_id, picked)
    assert (result.distance == 0.0).all()


def test_approximate_near_duplicate_large_norm():
    exemplars = _clustered(3000, seed=17, offset=1e3)
    noise = _random(3, seed=18, norm=1e-2)
    picked = [10, 500, 2500]
    queries = (exemplars[picked] + noise).astype(np.float32)
    result = _approximate(exemplars).nearest(torch.from_numpy(queries))
    expected = np.linalg.norm(queries.astype(np.float64) - exemplars[picked].astype(np.float64), axis=1)
    np.testing.assert_array_equal(result.exemplar_id, picked)
    np.testing.assert_allclose(result.distance, expected, rtol=1e-3)


def test_approximate_fp16_queries():
    exemplars = _clustered(3000, seed=19)
    queries16 = torch.from_numpy(exemplars[[3, 30, 300]]).half()
    result = _approximate(exemplars).nearest(queries16)
    exact = ExemplarIndex(exemplars, np.arange(3000)).nearest(queries16)
    np.testing.assert_array_equal(result.exemplar_id, exact.exemplar_id)
    np.testing.assert_allclose(result.distance, exact.distance, rtol=1e-6)


def test_approximate_no_nan_or_negative():
    exemplars = _clustered(3000, seed=20, offset=1e3)
    probes = np.concatenate([_clustered(50, seed=21, offset=1e3), exemplars[:20], exemplars[:20] + 1e-4])
    distance = _approximate(exemplars).nearest(torch.from_numpy(probes.astype(np.float32))).distance
    assert not np.isnan(distance).any()
    assert (distance >= 0).all()


def test_approximate_fewer_exemplars_than_candidates():
    # Eight exemplars and 32 requested candidates: faiss pads with -1, which must not leak.
    exemplars = _random(8, seed=22)
    result = _approximate(exemplars).nearest(torch.from_numpy(exemplars[[2, 6]]))
    np.testing.assert_array_equal(result.exemplar_id, [2, 6])
    assert (result.distance == 0.0).all()


def test_approximate_exact_flag_bypasses_index():
    exemplars, queries = _random(500, seed=23), _random(20, seed=24)
    index = _approximate(exemplars, probes=1)
    forced = index.nearest(torch.from_numpy(queries), exact=True)
    _, rows = _reference(queries, exemplars)
    np.testing.assert_array_equal(forced.exemplar_id, rows)
