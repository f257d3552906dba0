"""The one decode and encode shared by TIP positives and negatives.

Both classes of a TIP set pass through exactly these two functions, so they share one
background distribution, one pixel size distribution and one file format (16-bit
greyscale PNG). Only the projected item differs between them.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from models.imaging import load_scan
from models.synthetic import write_png16

FULL_SCALE = 65535


def decode_transmission(path: str | os.PathLike[str], max_side: int | None = None) -> np.ndarray:
    """Decode a scan to an (H, W) float64 transmission in [0, 1], optionally shrunk so its longer side is ``max_side``.

    Colour scans are averaged over their channels. Shrinking uses a box filter in float,
    which averages transmissions over each output pixel.
    """
    scan = load_scan(path)
    pixels = scan.pixels if scan.pixels.ndim == 2 else scan.pixels.mean(axis=2)
    pixels = np.asarray(pixels, dtype=np.float32)

    if max_side and max(pixels.shape) > max_side:
        factor = max_side / max(pixels.shape)
        size = (max(1, round(pixels.shape[1] * factor)), max(1, round(pixels.shape[0] * factor)))
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX), dtype=np.float32)
    return np.clip(pixels.astype(np.float64), 0.0, 1.0)


def quantise(transmission: np.ndarray) -> np.ndarray:
    """Round a [0, 1] transmission to 16-bit counts."""
    return np.round(np.clip(transmission, 0.0, 1.0) * FULL_SCALE).astype(np.uint16)


def encode_transmission(path: str | os.PathLike[str], transmission: np.ndarray) -> None:
    """Write an (H, W) transmission as a 16-bit greyscale PNG.

    NOTE: the decoder stretches a 16-bit scan whose brightest pixel is below 2**14 (it
    assumes a 14-bit detector), so scans without an open-beam area near 1.0 read back
    brighter than written. Positives and negatives are affected alike.
    """
    write_png16(path, quantise(transmission))
