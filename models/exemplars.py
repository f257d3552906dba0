"""Nearest-exemplar search: distances from scan embeddings to labelled exemplar embeddings.

Small exemplar sets are searched exactly. From ``approximate_min_exemplars`` exemplars on, a
faiss inverted-file index proposes candidates instead of a full scan. Either way the
reported distance is the exact Euclidean distance to the chosen exemplar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

DEFAULT_APPROXIMATE_MIN_EXEMPLARS = 100_000

# Candidates re-ranked exactly per query. The matrix-product distance is only used to choose
# them, because |q|^2 + |e|^2 - 2 q.e cancels catastrophically for near-identical vectors.
_RERANK_CANDIDATES = 8

# The approximate index's candidates carry 8-bit quantisation error, so more are re-ranked.
_APPROXIMATE_RERANK_CANDIDATES = 32

# Exemplar rows per float64 matrix product: 32768 x 512 x 8 bytes = 128 MiB at a time, so
# exact search over a million exemplars never stores a float64 copy of the whole set.
_EXACT_CHUNK_ROWS = 32768


@dataclass(frozen=True)
class Nearest:
    """Per query: distance to and id of the nearest exemplar of one class; each (N,)."""

    distance: np.ndarray
    exemplar_id: np.ndarray


class ExemplarIndex:
    """Nearest-exemplar search over one class of exemplars.

    ``embeddings`` is (M, D), converted to float32, and ``ids`` (M,) integer exemplar ids.
    Below ``approximate_min_exemplars`` rows every exemplar is compared. From that count on,
    candidates come from an approximate index that probes ``approximate_probes`` of its
    lists per query, where 0 picks a number from the list count.
    """

    def __init__(
        self,
        embeddings: np.ndarray | torch.Tensor,
        ids: np.ndarray,
        approximate_min_exemplars: int = DEFAULT_APPROXIMATE_MIN_EXEMPLARS,
        approximate_probes: int = 0,
    ) -> None:
        embeddings = torch.as_tensor(np.asarray(embeddings, dtype=np.float32) if isinstance(embeddings, np.ndarray) else embeddings)
        ids = np.asarray(ids, dtype=np.int64)
        if embeddings.dim() != 2 or embeddings.shape[0] == 0:
            raise ValueError(f"expected a non-empty (M, D) embedding matrix, got {tuple(embeddings.shape)}")
        if ids.shape != (embeddings.shape[0],):
            raise ValueError(f"expected {embeddings.shape[0]} exemplar ids, got shape {ids.shape}")

        self.embeddings = embeddings.detach().to("cpu", torch.float32).contiguous()
        self.ids = ids
        self._squared_norms = torch.cat(
            [(chunk.double() ** 2).sum(dim=1) for chunk in self.embeddings.split(_EXACT_CHUNK_ROWS)]
        )

        # A float64 sum of squared float32 values is finite exactly when every value is, and
        # testing it avoids torch.isfinite's temporaries the size of the whole matrix.
        if not torch.isfinite(self._squared_norms).all():
            raise ValueError("exemplar embeddings contain NaN or infinite values; enroll the exemplar set again")

        self._approximate: _ApproximateSearch | None = None
        if len(self) >= approximate_min_exemplars:
            self._approximate = _ApproximateSearch(self.embeddings, approximate_probes)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def is_approximate(self) -> bool:
        return self._approximate is not None

    @property
    def approximate_lists_and_probes(self) -> tuple[int, int] | None:
        """The approximate index's inverted-list count and lists probed per query, or None for exact search."""
        if self._approximate is None:
            return None
        return self._approximate.lists, self._approximate.probes

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def nearest(self, queries: torch.Tensor, exact: bool = False) -> Nearest:
        """Find the nearest exemplar of each (N, D) query row by Euclidean distance.

        ``exact`` compares every exemplar even when an approximate index exists.
        """
        if queries.dim() != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"expected queries of shape (N, {self.dim}), got {tuple(queries.shape)}")

        queries = queries.detach().to("cpu", torch.float32)
        if queries.shape[0] == 0:
            return Nearest(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64))
        if not torch.isfinite(queries).all():
            raise ValueError("query embeddings contain NaN or infinite values")

        if self._approximate is not None and not exact:
            candidates = self._approximate.candidates(queries, min(_APPROXIMATE_RERANK_CANDIDATES, len(self)))
            candidates = self._fill_missing(queries, candidates)
        else:
            candidates = self._exact_candidates(queries, min(_RERANK_CANDIDATES, len(self)))

        differences = queries[:, None, :] - self.embeddings[candidates]
        exact_distances = torch.linalg.vector_norm(differences, dim=2)
        best = exact_distances.argmin(dim=1)
        rows = torch.arange(queries.shape[0])
        chosen = candidates[rows, best].numpy()

        return Nearest(distance=exact_distances[rows, best].numpy().astype(np.float32), exemplar_id=self.ids[chosen])

    def _exact_candidates(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        # float64 keeps the matrix-product distances meaningful for embeddings with large
        # norms, and chunks bound the float64 copy of the exemplars.
        queries64 = queries.double()
        query_norms = (queries64**2).sum(dim=1, keepdim=True)
        best_scores: torch.Tensor | None = None
        best_rows: torch.Tensor | None = None

        for start in range(0, len(self), _EXACT_CHUNK_ROWS):
            chunk = self.embeddings[start : start + _EXACT_CHUNK_ROWS].double()
            scores = self._squared_norms[None, start : start + chunk.shape[0]] + query_norms
            scores -= 2.0 * (queries64 @ chunk.T)
            chunk_scores, chunk_rows = torch.topk(scores, min(k, chunk.shape[0]), dim=1, largest=False)
            chunk_rows += start

            if best_scores is None:
                best_scores, best_rows = chunk_scores, chunk_rows
                continue
            merged_scores = torch.cat([best_scores, chunk_scores], dim=1)
            merged_rows = torch.cat([best_rows, chunk_rows], dim=1)
            best_scores, order = torch.topk(merged_scores, k, dim=1, largest=False)
            best_rows = torch.gather(merged_rows, 1, order)

        return best_rows

    def _fill_missing(self, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        # faiss marks missing candidates with -1 when the probed lists contain fewer than k
        # vectors. A repeated valid candidate is harmless, and a row with none is searched exactly.
        missing = candidates < 0
        if not missing.any():
            return candidates

        filled = torch.where(missing, candidates[:, :1].clamp(min=0), candidates)
        empty = missing.all(dim=1)
        if empty.any():
            filled[empty] = self._exact_candidates(queries[empty], filled.shape[1])
        return filled


class _ApproximateSearch:
    """A faiss inverted-file index with 8-bit scalar quantisation over centred exemplars.

    Centring (subtracting the exemplar mean) keeps faiss's float32 distance arithmetic away
    from the cancellation that large embedding norms cause. The index stores one byte per
    dimension per exemplar (512 MB for a million 512-d exemplars) beside the float32 copy
    that exact re-ranking reads.
    """

    _ADD_CHUNK_ROWS = 65536
    # faiss's k-means warns below 39 training points per list, and 64 give stabler
    # centroids where the exemplars allow it.
    _MIN_TRAINING_POINTS_PER_LIST = 39
    _TRAINING_POINTS_PER_LIST = 64

    def __init__(self, embeddings: torch.Tensor, probes: int) -> None:
        import faiss

        # faiss runs its own OpenMP pool, so matching torch's thread count keeps the two from
        # oversubscribing the cores.
        faiss.omp_set_num_threads(max(1, torch.get_num_threads()))

        count, dim = embeddings.shape
        self.lists = max(1, min(int(math.sqrt(count)), count // self._MIN_TRAINING_POINTS_PER_LIST))
        self.probes = min(self.lists, probes if probes > 0 else max(8, self.lists // 32))
        self.mean = sum(chunk.double().sum(dim=0) for chunk in embeddings.split(self._ADD_CHUNK_ROWS)) / count

        quantizer = faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, self.lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
        index.cp.niter = 10
        training_count = min(count, self.lists * self._TRAINING_POINTS_PER_LIST)
        sample = np.random.default_rng(0).choice(count, size=training_count, replace=False)
        index.train(self._centred(embeddings[torch.from_numpy(np.sort(sample))]))

        for chunk in embeddings.split(self._ADD_CHUNK_ROWS):
            index.add(self._centred(chunk))
        index.nprobe = self.probes
        self.index = index
        self._quantizer = quantizer

    def candidates(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        """Return (N, k) candidate rows per query, -1 where the probed lists ran out."""
        _, rows = self.index.search(self._centred(queries), k)
        return torch.from_numpy(rows.astype(np.int64, copy=False))

    def _centred(self, vectors: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray((vectors.double() - self.mean).float().numpy())


@dataclass(frozen=True)
class ExemplarSet:
    """Positive and negative exemplar indexes of one exemplar set."""

    set_id: int
    positives: ExemplarIndex
    negatives: ExemplarIndex | None


@dataclass(frozen=True)
class Verdicts:
    """Per query: nearest positive and negative exemplar with distances, and the flag; each (N,)."""

    positive_distance: np.ndarray
    positive_id: np.ndarray
    negative_distance: np.ndarray | None
    negative_id: np.ndarray | None
    flagged: np.ndarray


# Score rules turn a query's distances into a suspicion score (higher is more suspicious)
# and a flag. ``nearest_positive`` (the paper's rule) flags a query within the threshold of
# a positive exemplar. ``novelty`` flags one at least the threshold away from every negative
# exemplar. ``margin`` flags one whose nearest negative is farther than its nearest positive
# by at least the threshold.
SCORE_RULES = ("nearest_positive", "novelty", "margin")


def score(embeddings: torch.Tensor, exemplars: ExemplarSet, threshold: float, rule: str = "nearest_positive") -> Verdicts:
    """Compare (N, D) embeddings with an exemplar set and flag them by ``rule`` (see SCORE_RULES)."""
    if rule not in SCORE_RULES:
        raise ValueError(f"score rule must be one of {SCORE_RULES}, got {rule!r}")
    if threshold <= 0 and rule != "margin":
        raise ValueError(f"threshold must be positive, got {threshold}")
    if rule != "nearest_positive" and exemplars.negatives is None:
        raise ValueError(f"score rule {rule!r} needs negative exemplars; enroll clean scans as negatives")

    positive = exemplars.positives.nearest(embeddings)
    negative = exemplars.negatives.nearest(embeddings) if exemplars.negatives is not None else None
    verdicts = Verdicts(
        positive_distance=positive.distance,
        positive_id=positive.exemplar_id,
        negative_distance=None if negative is None else negative.distance,
        negative_id=None if negative is None else negative.exemplar_id,
        flagged=np.zeros(len(positive.distance), dtype=bool),
    )
    return replace(verdicts, flagged=suspicion(verdicts, rule) >= suspicion_threshold(threshold, rule))


def suspicion(verdicts: Verdicts, rule: str) -> np.ndarray:
    """Return each query's suspicion under ``rule``: higher is more suspicious; (N,) float64."""
    positive = verdicts.positive_distance.astype(np.float64)
    if rule == "nearest_positive":
        return -positive
    negative = verdicts.negative_distance.astype(np.float64)
    return negative if rule == "novelty" else negative - positive


def rule_score(positive_distance: float, negative_distance: float | None, rule: str) -> float:
    """Return the score ``rule`` compares with its threshold for one result.

    That is the nearest-positive distance (flagged at or below the threshold) or, for
    novelty and margin, the suspicion (flagged at or above it).
    """
    if rule == "nearest_positive":
        return positive_distance
    if negative_distance is None:
        raise ValueError(f"score rule {rule!r} needs the nearest-negative distance")
    return negative_distance if rule == "novelty" else negative_distance - positive_distance


def suspicion_threshold(threshold: float, rule: str) -> float:
    """Return the suspicion at and above which ``rule`` flags, for a decision ``threshold``."""
    return -threshold if rule == "nearest_positive" else threshold
