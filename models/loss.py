"""Contrastive loss for Siamese pairs, in its standard (Hadsell, Chopra and LeCun 2006) form.

For a pair with label y (1 similar, 0 dissimilar) at Euclidean distance D:

    L = y * D^2 + (1 - y) * max(0, m - D)^2

so similar pairs are pulled together and dissimilar pairs pushed beyond the margin m. The
CargoScan paper prints the two terms the other way round (with a 1/2 factor), which as
written pulls dissimilar pairs together; its authors' notebook implements the form above.
The margin defaults to the paper's 0.5.
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_MARGIN = 0.5

# Keeps the square root differentiable when a dissimilar pair embeds to the same point.
_SQRT_EPS = 1e-12


def pair_distance(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between matching rows of two (N, D) tensors; returns (N,)."""
    return torch.sqrt(((first - second) ** 2).sum(dim=1).clamp_min(_SQRT_EPS))


class ContrastiveLoss(nn.Module):
    """Mean contrastive loss over a batch of pairs.

    Takes two (N, D) embedding tensors and (N,) labels (1 similar, 0 dissimilar, any dtype).
    """

    def __init__(self, margin: float = DEFAULT_MARGIN) -> None:
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin must be positive, got {margin}")
        self.margin = margin

    def forward(self, first: torch.Tensor, second: torch.Tensor, similar: torch.Tensor) -> torch.Tensor:
        if first.shape != second.shape or first.dim() != 2:
            raise ValueError(f"expected two (N, D) tensors of one shape, got {tuple(first.shape)} and {tuple(second.shape)}")
        if similar.shape != (first.shape[0],):
            raise ValueError(f"expected labels of shape ({first.shape[0]},), got {tuple(similar.shape)}")
        if first.shape[0] == 0:
            raise ValueError("expected at least one pair, got an empty batch")

        similar = similar.to(first.dtype)
        squared = ((first - second) ** 2).sum(dim=1)
        distance = torch.sqrt(squared.clamp_min(_SQRT_EPS))

        # The similar term uses D^2 directly, so an identical similar pair costs exactly zero.
        pull = similar * squared
        push = (1.0 - similar) * torch.clamp(self.margin - distance, min=0.0) ** 2
        return (pull + push).mean()
