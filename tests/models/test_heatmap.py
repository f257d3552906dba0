"""Heat map rendering in models.heatmap."""

from __future__ import annotations

import numpy as np

from models.heatmap import LEGEND_BACKGROUND, add_legend, render_heatmap


def test_whole_scan_result_draws_scan_only():
    pixels = np.linspace(0, 1, 40 * 60, dtype=np.float32).reshape(40, 60)
    image = render_heatmap(pixels, (60, 40), np.zeros((0, 4), dtype=np.int64), np.zeros(0), None)
    assert image.size == (60, 40)


def test_tiles_tint_the_scan():
    pixels = np.full((40, 60), 0.5, dtype=np.float32)
    boxes = np.array([[0, 0, 30, 40], [30, 0, 60, 40]])
    image = np.asarray(render_heatmap(pixels, (60, 40), boxes, np.array([0.0, 1.0]), None))
    assert not np.array_equal(image[20, 10], image[20, 50])


def test_legend_adds_caption_and_colour_bar_below():
    pixels = np.full((300, 900), 0.5, dtype=np.float32)
    boxes = np.array([[0, 0, 450, 300], [450, 0, 900, 300]])
    suspicion = np.array([-0.2, 0.8])
    image = render_heatmap(pixels, (900, 300), boxes, suspicion, None)

    legend = add_legend(image, "scan 7: flagged, margin score 0.8000 (threshold 0.1000)", suspicion)
    strip = np.asarray(legend)[300:]

    assert legend.width == 900
    assert legend.height > 300
    assert np.array_equal(np.asarray(legend)[:300], np.asarray(image))
    caption_row, bar_row = np.array_split(strip, 2)
    assert (caption_row != LEGEND_BACKGROUND).any()
    # Inferno runs from near black to pale yellow, so the bar brightens from left to right.
    bar = bar_row[bar_row.shape[0] // 2].astype(int)
    assert (bar[450] != LEGEND_BACKGROUND).any()
    assert bar[270].sum() < bar[450].sum() < bar[630].sum()


def test_legend_without_tiles_has_caption_only():
    image = render_heatmap(np.full((40, 60), 0.5, dtype=np.float32), (60, 40), np.zeros((0, 4), dtype=np.int64),
                           np.zeros(0), None)

    with_tiles = add_legend(image, "caption", np.array([0.0, 1.0]))
    without = add_legend(image, "caption", None)

    assert without.width == 60
    assert 40 < without.height < with_tiles.height
