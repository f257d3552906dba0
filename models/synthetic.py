"""Render synthetic container scans: 16-bit greyscale transmission images.

Each scan is an X-ray transmission image T = exp(-sum(mu * t)) by the Beer-Lambert law:
a container with steel walls and corrugation, packed with goods of random density and
texture. Positives also hold a dense concealed object (a metal block or cylinder) among the
goods. The demo trains on these scans and the tests build their images from them, so nothing
here needs data or a download. Positives and negatives share one size and format, so neither
can leak the label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FULL_SCALE = 65535


@dataclass(frozen=True)
class SceneConfig:
    """Size and noise of a rendered scan; attenuation values are mu * t, dimensionless."""

    width: int = 384
    height: int = 160
    goods_count: tuple[int, int] = (4, 9)
    goods_attenuation: tuple[float, float] = (0.1, 0.5)
    item_attenuation: tuple[float, float] = (3.0, 5.0)
    item_size_fraction: tuple[float, float] = (0.25, 0.4)
    noise_fraction: float = 0.01


@dataclass(frozen=True)
class RenderedScan:
    """A rendered scan: (H, W) uint16 transmission counts, and the item box (x0, y0, x1, y1) or None."""

    pixels: np.ndarray
    item_box: tuple[int, int, int, int] | None


def render_scan(rng: np.random.Generator, with_item: bool, config: SceneConfig = SceneConfig()) -> RenderedScan:
    """Render one scan; ``with_item`` adds a dense concealed object inside the cargo area."""
    height, width = config.height, config.width
    attenuation = np.zeros((height, width), dtype=np.float64)

    # The container: walls at the outline, corrugation as faint vertical ribs.
    top, bottom = int(0.12 * height), int(0.92 * height)
    left, right = int(0.04 * width), int(0.96 * width)
    attenuation[top:bottom, left:right] += 0.08
    attenuation[top:bottom, left : left + 3] += 0.9
    attenuation[top:bottom, right - 3 : right] += 0.9
    attenuation[top : top + 2, left:right] += 0.6
    attenuation[bottom - 2 : bottom, left:right] += 0.6
    attenuation[top:bottom, left:right:12] += 0.05

    for _ in range(rng.integers(*config.goods_count, endpoint=True)):
        _add_goods(attenuation, rng, (left + 4, top + 3, right - 4, bottom - 3), config)

    box = None
    if with_item:
        box = _add_item(attenuation, rng, (left + 8, top + 6, right - 8, bottom - 6), config)

    transmission = np.exp(-attenuation)
    counts = transmission * FULL_SCALE * rng.uniform(0.9, 1.0)
    counts += rng.normal(0.0, config.noise_fraction * FULL_SCALE, size=counts.shape) * np.sqrt(transmission)
    return RenderedScan(pixels=np.clip(counts, 0, FULL_SCALE).astype(np.uint16), item_box=box)


def _add_goods(attenuation: np.ndarray, rng: np.random.Generator, area: tuple[int, int, int, int], config: SceneConfig) -> None:
    x_min, y_min, x_max, y_max = area
    box_width = int(rng.integers(max(4, (x_max - x_min) // 12), max(5, (x_max - x_min) // 3)))
    box_height = int(rng.integers(max(4, (y_max - y_min) // 4), y_max - y_min))
    x0 = int(rng.integers(x_min, max(x_min + 1, x_max - box_width)))
    y0 = y_max - box_height  # goods stand on the container floor

    density = rng.uniform(*config.goods_attenuation)
    texture = 1.0 + 0.25 * rng.standard_normal((box_height, box_width))
    attenuation[y0 : y0 + box_height, x0 : x0 + box_width] += density * np.clip(texture, 0.3, 1.7)


def _add_item(
    attenuation: np.ndarray, rng: np.random.Generator, area: tuple[int, int, int, int], config: SceneConfig
) -> tuple[int, int, int, int]:
    x_min, y_min, x_max, y_max = area
    size = int(rng.uniform(*config.item_size_fraction) * attenuation.shape[0])
    item_width = int(size * rng.uniform(0.8, 1.6))
    x0 = int(rng.integers(x_min, x_max - item_width))
    y0 = int(rng.integers(y_min, y_max - size))
    density = rng.uniform(*config.item_attenuation)

    if rng.random() < 0.5:
        attenuation[y0 : y0 + size, x0 : x0 + item_width] += density
    else:
        # A cylinder seen side-on: thickness follows a circular chord across its width.
        across = np.linspace(-1.0, 1.0, item_width)
        chord = np.sqrt(np.clip(1.0 - across**2, 0.0, 1.0))
        attenuation[y0 : y0 + size, x0 : x0 + item_width] += density * chord[None, :]
    return (x0, y0, x0 + item_width, y0 + size)


def write_png16(path: str | Path, pixels: np.ndarray) -> None:
    """Save (H, W) uint16 pixels as a 16-bit greyscale PNG."""
    if pixels.dtype != np.uint16 or pixels.ndim != 2:
        raise ValueError(f"expected (H, W) uint16 pixels, got {pixels.dtype} {pixels.shape}")
    Image.fromarray(pixels).save(path, format="PNG")


def render_dataset(out: Path, positives: int, negatives: int, seed: int, config: SceneConfig = SceneConfig()) -> dict[str, list[Path]]:
    """Write ``positives`` and ``negatives`` scans as 16-bit PNGs under ``out/positive`` and ``out/negative``."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {"positive": [], "negative": []}

    for label, count in (("positive", positives), ("negative", negatives)):
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            scan = render_scan(rng, with_item=label == "positive", config=config)
            path = folder / f"{label}_{seed}_{index:04d}.png"
            write_png16(path, scan.pixels)
            written[label].append(path)
    return written
