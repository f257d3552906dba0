"""Tests for models.exemplars: exact nearest-exemplar search and flagging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.exemplars import ExemplarIndex, ExemplarSet, score

DIM = 512


def _random(count: int, seed: int, norm: float | None = None) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    if norm is not None:
        vectors *= norm / np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _brute_force(queries: np.ndarray, exemplars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the nearest distance and row per query, computed in float64 one pair at a time."""
    distances = np.empty(len(queries))
    rows = np.empty(len(queries), dtype=np.int64)
    for i, query in enumerate(queries.astype(np.float64)):
        each = [np.linalg.norm(query - exemplar) for exemplar in exemplars.astype(np.float64)]
        rows[i] = int(np.argmin(each))
        distances[i] = each[rows[i]]
    return distances, rows


@pytest.fixture
def exemplars() -> np.ndarray:
    return _random(50, seed=1)


@pytest.fixture
def ids() -> np.ndarray:
    # Ids unlike row numbers, so a mix-up between the two shows.
    return np.arange(50, dtype=np.int64) * 10 + 1000


def test_nearest_matches_brute_force(exemplars, ids):
    queries = _random(20, seed=2)
    result = ExemplarIndex(exemplars, ids).nearest(torch.from_numpy(queries))
    distances, rows = _brute_force(queries, exemplars)
    np.testing.assert_allclose(result.distance, distances, rtol=1e-5)
    np.testing.assert_array_equal(result.exemplar_id, ids[rows])


def test_nearest_output_types(exemplars, ids):
    result = ExemplarIndex(exemplars, ids).nearest(torch.from_numpy(_random(3, seed=2)))
    assert result.distance.dtype == np.float32
    assert result.exemplar_id.dtype == np.int64
    assert result.distance.shape == (3,)


def test_nearest_close_neighbours(exemplars, ids):
    # Queries just off chosen exemplars must find exactly those exemplars.
    chosen = np.array([3, 17, 42])
    offsets = _random(3, seed=5) * 1e-2
    result = ExemplarIndex(exemplars, ids).nearest(torch.from_numpy(exemplars[chosen] + offsets))
    np.testing.assert_array_equal(result.exemplar_id, ids[chosen])


def test_tensor_embeddings_accepted(exemplars, ids):
    queries = torch.from_numpy(_random(4, seed=2))
    from_numpy = ExemplarIndex(exemplars, ids).nearest(queries)
    from_tensor = ExemplarIndex(torch.from_numpy(exemplars).double(), ids).nearest(queries)
    np.testing.assert_allclose(from_tensor.distance, from_numpy.distance, rtol=1e-6)


def test_index_size(exemplars, ids):
    index = ExemplarIndex(exemplars, ids)
    assert len(index) == 50
    assert index.dim == DIM


# --- precision at large norms ---------------------------------------------------------------


@pytest.fixture
def large_norm() -> tuple[np.ndarray, np.ndarray]:
    """Exemplars and queries of norm 1e3, where |q|^2 + |e|^2 - 2 q.e cancels badly."""
    return _random(40, seed=3, norm=1e3), _random(5, seed=4, norm=1e3)


def test_exact_copy_scores_zero(large_norm):
    exemplars, queries = large_norm
    exemplars[7] = queries[2]
    index = ExemplarIndex(exemplars, np.arange(40))
    result = index.nearest(torch.from_numpy(queries[2:3]))
    assert result.exemplar_id[0] == 7
    assert result.distance[0] <= 1e-5


def test_near_duplicate_distance_accurate(large_norm):
    exemplars, queries = large_norm
    query = (exemplars[11] + _random(1, seed=6, norm=1e-3)[0]).astype(np.float32)

    # The reference takes the float32 values stored in the index and works in float64.
    expected = np.linalg.norm(query.astype(np.float64) - exemplars[11].astype(np.float64))
    result = ExemplarIndex(exemplars, np.arange(40)).nearest(torch.from_numpy(query[None]))
    assert result.exemplar_id[0] == 11
    assert result.distance[0] == pytest.approx(expected, rel=1e-5)


def test_large_norm_matches_brute_force(large_norm):
    exemplars, queries = large_norm
    result = ExemplarIndex(exemplars, np.arange(40)).nearest(torch.from_numpy(queries))
    distances, rows = _brute_force(queries, exemplars)
    np.testing.assert_allclose(result.distance, distances, rtol=1e-5)
    np.testing.assert_array_equal(result.exemplar_id, rows)


def test_fp16_queries_accepted(exemplars, ids):
    queries = torch.from_numpy(_random(4, seed=2)).half()
    result = ExemplarIndex(exemplars, ids).nearest(queries)
    distances, rows = _brute_force(queries.float().numpy(), exemplars)
    np.testing.assert_allclose(result.distance, distances, rtol=1e-5)
    np.testing.assert_array_equal(result.exemplar_id, ids[rows])


def test_no_nan_or_negative(large_norm):
    exemplars, queries = large_norm
    probes = np.concatenate([queries, exemplars[:5], exemplars[:5] + 1e-4])
    distance = ExemplarIndex(exemplars, np.arange(40)).nearest(torch.from_numpy(probes)).distance
    assert not np.isnan(distance).any()
    assert (distance >= 0).all()


def test_empty_query_batch(exemplars, ids):
    result = ExemplarIndex(exemplars, ids).nearest(torch.zeros(0, DIM))
    assert result.distance.shape == (0,)
    assert result.exemplar_id.shape == (0,)


def test_single_exemplar():
    exemplar = _random(1, seed=1)
    result = ExemplarIndex(exemplar, np.array([5])).nearest(torch.from_numpy(_random(3, seed=2)))
    np.testing.assert_array_equal(result.exemplar_id, [5, 5, 5])


# --- input checks -------------------------------------------------------------------------------


def test_wrong_query_dim_raises(exemplars, ids):
    with pytest.raises(ValueError, match=f"\\(N, {DIM}\\)"):
        ExemplarIndex(exemplars, ids).nearest(torch.zeros(2, DIM - 1))


def test_one_dim_query_raises(exemplars, ids):
    with pytest.raises(ValueError, match="expected queries"):
        ExemplarIndex(exemplars, ids).nearest(torch.zeros(DIM))


def test_empty_exemplar_matrix_raises():
    with pytest.raises(ValueError, match="non-empty"):
        ExemplarIndex(np.zeros((0, DIM), dtype=np.float32), np.zeros(0, dtype=np.int64))


def test_one_dim_exemplar_matrix_raises():
    with pytest.raises(ValueError, match="non-empty"):
        ExemplarIndex(np.zeros(DIM, dtype=np.float32), np.array([1]))


def test_id_count_mismatch_raises(exemplars):
    with pytest.raises(ValueError, match="exemplar ids"):
        ExemplarIndex(exemplars, np.arange(49))


# --- score ----------------------------------------------------------------------------------


@pytest.fixture
def exemplar_set() -> ExemplarSet:
    positives = np.zeros((2, 4), dtype=np.float32)
    positives[1, 0] = 10.0
    negatives = np.full((1, 4), 5.0, dtype=np.float32)
    return ExemplarSet(
        set_id=1,
        positives=ExemplarIndex(positives, np.array([100, 101])),
        negatives=ExemplarIndex(negatives, np.array([200])),
    )


def test_score_flags_by_threshold(exemplar_set):
    # Distances to the nearest positive (row 0, at the origin) are 0.3, 1.0 and 2.0.
    queries = torch.tensor([[0.3, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 2.0, 0]])
    verdicts = score(queries, exemplar_set, threshold=1.0)
    np.testing.assert_array_equal(verdicts.flagged, [True, True, False])


def test_score_reports_nearest(exemplar_set):
    queries = torch.tensor([[0.3, 0, 0, 0], [9.0, 0, 0, 0]])
    verdicts = score(queries, exemplar_set, threshold=1.0)
    np.testing.assert_array_equal(verdicts.positive_id, [100, 101])
    np.testing.assert_allclose(verdicts.positive_distance, [0.3, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(verdicts.negative_id, [200, 200])


def test_score_without_negatives(exemplar_set):
    positives_only = ExemplarSet(set_id=2, positives=exemplar_set.positives, negatives=None)
    verdicts = score(torch.zeros(1, 4), positives_only, threshold=1.0)
    assert verdicts.negative_distance is None
    assert verdicts.negative_id is None
    assert bool(verdicts.flagged[0])


@pytest.mark.parametrize("threshold", [0.0, -1.0])
def test_score_bad_threshold_raises(exemplar_set, threshold):
    with pytest.raises(ValueError, match="threshold"):
        score(torch.zeros(1, 4), exemplar_set, threshold=threshold)


def test_score_wrong_dim_raises(exemplar_set):
    with pytest.raises(ValueError, match="expected queries"):
        score(torch.zeros(1, 5), exemplar_set, threshold=1.0)
