"""Map transmission to network input intensity: linear, or logarithmic as X-ray attenuation is.

By the Beer-Lambert law a scan's transmission is exp(-attenuation), so the logarithm turns
what absorbs into what adds up. An item behind dense cargo multiplies an already dark
pixel by its own transmission: in linear values both are near black, while the logarithm
keeps the item's edge as large a step as it would be in open air.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Intensity = Literal["linear", "log"]
INTENSITIES = ("linear", "log")

# The smallest transmission a 16-bit detector records; darker pixels are clamped to it.
LOG_FLOOR = 1.0 / 65535.0


def apply_intensity(values: torch.Tensor, intensity: Intensity) -> torch.Tensor:
    """Return transmissions in [0, 1] mapped to input intensities in [0, 1]; open beam (1.0) stays 1.0."""
    if intensity == "linear":
        return values
    if intensity != "log":
        raise ValueError(f"intensity must be one of {INTENSITIES}, got {intensity!r}")
    return 1.0 + torch.log(values.clamp(min=LOG_FLOOR)) / -math.log(LOG_FLOOR)
