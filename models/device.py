"""Choose the compute device: CUDA when present, otherwise the CPU."""

from __future__ import annotations

import torch


def select_device(requested: str | None = None) -> torch.device:
    """Return ``requested`` ("cpu", "cuda", "cuda:1") or CUDA when available, else the CPU."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} requested but CUDA is not available on this machine")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
