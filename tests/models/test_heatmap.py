"""Heat map rendering in models.heatmap."""

from __future__ import annotations

import numpy as np

from models.heatmap import render_heatmap


def test_whole_scan_result_draws_scan_only():
    pixels = np.linspace(0, 1, 40 * 60, dtype=np.float32).reshape(40, 60)
    image = render_heatmap(pixels, (60, 40), np.zeros((0, 4), dtype=np.int64), np.zeros(0), None)
    assert image.size == (60, 40)


def test_tiles_tint_the_scan():
    pixels = np.full((40, 60), 0.5, dtype=np.float32)
    boxes = np.array([[0, 0, 30, 40], [30, 0, 60, 40]])
    image = np.asarray(render_heatmap(pixels, (60, 40), boxes, np.array([0.0, 1.0]), None))
    assert not np.array_equal(image[20, 10], image[20, 50])
