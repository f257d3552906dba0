"""Training augmentation: random horizontal flips and small rotations, batched."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(
    images: torch.Tensor, generator: torch.Generator, max_rotation_degrees: float = 10.0, fill: float = 1.0
) -> torch.Tensor:
    """Flip each (N, 3, S, S) unit image horizontally with probability 1/2 and rotate it.

    Each image gets its own angle, uniform in +-``max_rotation_degrees``; corners exposed by
    the rotation take ``fill`` (1.0 is open beam, the background of a transmission scan).
    """
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")

    count = images.shape[0]
    flip = torch.rand(count, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(dims=[3]), images)
    if max_rotation_degrees <= 0:
        return images

    angles = (torch.rand(count, generator=generator) * 2.0 - 1.0) * math.radians(max_rotation_degrees)
    cos, sin = torch.cos(angles), torch.sin(angles)
    zeros = torch.zeros_like(angles)
    theta = torch.stack([torch.stack([cos, -sin, zeros], dim=1), torch.stack([sin, cos, zeros], dim=1)], dim=1)

    # Rotate the offset from fill so that pixels sampled outside the image become fill.
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    rotated = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return rotated + fill
