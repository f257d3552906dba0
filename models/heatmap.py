"""Draw a scan with its tile-score heat map, the top tile's box and, when known, the item's box."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

TOP_BOX_COLOUR = (255, 40, 40)
ITEM_BOX_COLOUR = (40, 220, 40)
HEAT_OPACITY = 0.45
HEAT_COLOURMAP = "inferno"
LEGEND_BACKGROUND = (255, 255, 255)
LEGEND_TEXT = (0, 0, 0)


def render_heatmap(
    pixels: np.ndarray,
    full_size: tuple[int, int],
    tile_boxes: np.ndarray,
    suspicion: np.ndarray,
    top_box: Sequence[int] | None,
    item_boxes: Sequence[Sequence[int]] = (),
    max_width: int = 2000,
) -> Image.Image:
    """Return an RGB image of the scan with each pixel tinted by the most suspicious tile that covers it.

    ``pixels`` is the decoded scan, (H, W) or (H, W, 3) in [0, 1], possibly smaller than
    ``full_size`` (width, height), in which ``tile_boxes`` (T, 4), ``top_box`` and
    ``item_boxes`` are given. ``suspicion`` (T,) is higher for more suspicious tiles and is
    scaled to the scan's own range, so colours compare tiles within one scan only.
    """
    width, height = full_size
    scale = min(1.0, max_width / width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    grey = pixels if pixels.ndim == 2 else pixels.mean(axis=2)
    base = Image.fromarray(np.uint8(np.clip(grey, 0, 1) * 255)).resize(size, Image.Resampling.BILINEAR).convert("RGB")

    # A whole-scan result has no tiles, and so no heat map: the scan and its box only.
    blended = _blend_heat(base, size, scale, tile_boxes, suspicion) if len(suspicion) else base
    draw = ImageDraw.Draw(blended)
    line = max(2, round(3 * size[0] / 1000))
    for box in item_boxes:
        draw.rectangle(_corners(box, scale), outline=ITEM_BOX_COLOUR, width=line)
    if top_box is not None:
        draw.rectangle(_corners(top_box, scale), outline=TOP_BOX_COLOUR, width=line)
    return blended


def save_heatmap(image: Image.Image, out: str | os.PathLike[str]) -> None:
    """Write a rendered heat map as PNG, creating its folder."""
    out = os.fspath(out)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    image.save(out, format="PNG")


def _scaled(box: Sequence[int], scale: float) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (float(value) for value in box)
    return round(x0 * scale), round(y0 * scale), max(round(x1 * scale), round(x0 * scale) + 1), max(round(y1 * scale), round(y0 * scale) + 1)


def _corners(box: Sequence[int], scale: float) -> tuple[int, int, int, int]:
    # PIL's rectangle includes its second corner, while CargoScan boxes end exclusively.
    x0, y0, x1, y1 = _scaled(box, scale)
    return x0, y0, x1 - 1, y1 - 1


def _blend_heat(base: Image.Image, size, scale: float, tile_boxes, suspicion) -> Image.Image:
    heat = np.full((size[1], size[0]), -np.inf)
    for box, value in zip(np.asarray(tile_boxes), np.asarray(suspicion, dtype=np.float64)):
        x0, y0, x1, y1 = _scaled(box, scale)
        heat[y0:y1, x0:x1] = np.maximum(heat[y0:y1, x0:x1], value)
    heat[~np.isfinite(heat)] = np.nanmin(suspicion)
    spread = float(heat.max() - heat.min())
    unit = (heat - heat.min()) / spread if spread > 0 else np.zeros_like(heat)

    colours = np.uint8(colormaps[HEAT_COLOURMAP](unit)[..., :3] * 255)
    blended = Image.blend(base, Image.fromarray(colours), HEAT_OPACITY)
    return blended


def add_legend(image: Image.Image, caption: str, suspicion: np.ndarray | None = None) -> Image.Image:
    """Return ``image`` with a white strip below it: ``caption``, then a colour bar of the heat map's range.

    ``suspicion`` contains the tile scores the heat map was scaled to; without tiles the strip
    has the caption only. Colours run from the scan's least to its most suspicious tile.
    """
    font = ImageFont.load_default(size=max(12, min(24, image.width // 60)))
    line_height = int(font.size * 1.6)
    rows = 2 if suspicion is not None and len(suspicion) else 1
    legend = Image.new("RGB", (image.width, image.height + rows * line_height), LEGEND_BACKGROUND)
    legend.paste(image, (0, 0))
    draw = ImageDraw.Draw(legend)
    margin = max(4, font.size // 2)
    draw.text((margin, image.height + (line_height - font.size) // 2), caption, fill=LEGEND_TEXT, font=font)
    if rows == 1:
        return legend

    # The bar sits between its two end values, on the second row.
    top = image.height + line_height + (line_height - font.size) // 2
    low, high = f"{float(np.min(suspicion)):.3f}", f"{float(np.max(suspicion)):.3f}"
    low_width = draw.textlength(low, font=font)
    bar_left = int(margin + low_width + margin)
    bar_right = int(image.width - margin - draw.textlength(high, font=font) - margin)
    draw.text((margin, top), low, fill=LEGEND_TEXT, font=font)
    draw.text((bar_right + margin, top), high, fill=LEGEND_TEXT, font=font)
    if bar_right > bar_left:
        ramp = colormaps[HEAT_COLOURMAP](np.linspace(0.0, 1.0, bar_right - bar_left))[:, :3]
        bar = np.repeat(np.uint8(ramp * 255)[None, :, :], font.size, axis=0)
        legend.paste(Image.fromarray(bar), (bar_left, top))
    return legend
