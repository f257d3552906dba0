"""Nearest-exemplar search: distances from scan embeddings to labelled exemplar embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Candidates re-ranked exactly per query. The matrix-product distance is only used to choose
# them, because |q|^2 + |e|^2 - 2 q.e cancels catastrophically for near-identical vectors.
_RERANK_CANDIDATES = 8


@dataclass(frozen=True)
class Nearest:
    """Per query: distance to and id of the nearest exemplar of one class; each (N,)."""

    distance: np.ndarray
    exemplar_id: np.ndarray


class ExemplarIndex:
    """Exact nearest-exemplar search over one class of exemplars.

    ``embeddings`` is (M, D) float32 and ``ids`` (M,) integer exemplar ids.
    """

    def __init__(self, embeddings: np.ndarray | torch.Tensor, ids: np.ndarray) -> None:
        embeddings = torch.as_tensor(np.asarray(embeddings, dtype=np.float32) if isinstance(embeddings, np.ndarray) else embeddings)
        ids = np.asarray(ids, dtype=np.int64)
        if embeddings.dim() != 2 or embeddings.shape[0] == 0:
            raise ValueError(f"expected a non-empty (M, D) embedding matrix, got {tuple(embeddings.shape)}")
        if ids.shape != (embeddings.shape[0],):
            raise ValueError(f"expected {embeddings.shape[0]} exemplar ids, got shape {ids.shape}")

        self.embeddings = embeddings.float().contiguous()
        self.ids = ids
        self._squared_norms = (self.embeddings.double() ** 2).sum(dim=1)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def nearest(self, queries: torch.Tensor) -> Nearest:
        """Find the nearest exemplar of each (N, D) query row by exact Euclidean distance."""
        if queries.dim() != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"expected queries of shape (N, {self.dim}), got {tuple(queries.shape)}")

        queries = queries.detach().to("cpu", torch.float32)
        if queries.shape[0] == 0:
            return Nearest(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64))

        approximate = self._squared_norms[None, :] + (queries.double() ** 2).sum(dim=1, keepdim=True)
        approximate -= 2.0 * (queries.double() @ self.embeddings.double().T)
        k = min(_RERANK_CANDIDATES, len(self))
        candidates = torch.topk(approximate, k, dim=1, largest=False).indices

        differences = queries[:, None, :] - self.embeddings[candidates]
        exact = torch.linalg.vector_norm(differences, dim=2)
        best = exact.argmin(dim=1)
        rows = torch.arange(queries.shape[0])
        chosen = candidates[rows, best].numpy()

        return Nearest(distance=exact[rows, best].numpy().astype(np.float32), exemplar_id=self.ids[chosen])


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


def score(embeddings: torch.Tensor, exemplars: ExemplarSet, threshold: float) -> Verdicts:
    """Compare (N, D) embeddings with an exemplar set; flagged when the nearest positive is within ``threshold``."""
    if threshold <= 0:
        raise ValueError(f"threshold must be positive, got {threshold}")

    positive = exemplars.positives.nearest(embeddings)
    negative = exemplars.negatives.nearest(embeddings) if exemplars.negatives is not None else None
    return Verdicts(
        positive_distance=positive.distance,
        positive_id=positive.exemplar_id,
        negative_distance=None if negative is None else negative.distance,
        negative_id=None if negative is None else negative.exemplar_id,
        flagged=positive.distance <= threshold,
    )
