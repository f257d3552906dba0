"""Threshold calibration: pick the distance threshold that flags a target share of clean scans."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """A calibrated threshold with the false-alarm rate it gives on the calibration negatives."""

    threshold: float
    target_false_alarm: float
    achieved_false_alarm: float
    negatives: int


def calibrate_threshold(negative_distances: np.ndarray, target_false_alarm: float) -> Calibration:
    """Choose the largest threshold that flags at most ``target_false_alarm`` of the negatives.

    A scan is flagged when its nearest-positive distance is at or below the threshold. The
    threshold lies midway between the last distance it flags and the next larger distinct
    distance, so a small shift of a new scan's distance does not change the decision at the
    boundary. With fewer negatives than 1 / target, no negative can be flagged and the
    threshold falls halfway below the smallest distance.
    """
    distances = np.sort(np.asarray(negative_distances, dtype=np.float64))
    if distances.ndim != 1 or len(distances) == 0:
        raise ValueError("calibration needs at least one negative scan's distance")
    if not 0.0 <= target_false_alarm < 1.0:
        raise ValueError(f"target false-alarm rate must be in [0, 1), got {target_false_alarm}")
    if np.isnan(distances).any() or distances[0] < 0:
        raise ValueError("distances must be non-negative numbers")

    allowed = int(np.floor(target_false_alarm * len(distances) + 1e-9))
    values = np.unique(distances)
    flagged_at_value = np.searchsorted(distances, values, side="right")
    within = np.flatnonzero(flagged_at_value <= allowed)

    if len(within) == 0:
        threshold = distances[0] / 2.0
    else:
        last = within[-1]
        threshold = (values[last] + values[last + 1]) / 2.0 if last + 1 < len(values) else values[last]
    if threshold <= 0:
        raise ValueError(
            "cannot place a positive threshold below the smallest negative distance (0); "
            "a negative scan coincides with a positive exemplar"
        )

    achieved = float(np.count_nonzero(distances <= threshold) / len(distances))
    return Calibration(
        threshold=float(threshold), target_false_alarm=float(target_false_alarm), achieved_false_alarm=achieved,
        negatives=len(distances),
    )


# With no negative allowed to be flagged, the threshold sits this fraction of its size above
# the highest negative score, a margin against small shifts of new scans' scores.
ABOVE_HIGHEST = 0.05


def calibrate_suspicion(negative_scores: np.ndarray, target_false_alarm: float) -> Calibration:
    """Choose the lowest threshold on suspicion (flagged at or above it) that flags at most the target share.

    For score rules where a higher score is more suspicious, such as novelty and margin.
    The threshold lies midway between the lowest score it
    flags and the next lower distinct score. When no negative may be flagged it lies
    ABOVE_HIGHEST above the highest score.
    """
    scores = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError("calibration needs at least one negative scan's score")
    if not 0.0 <= target_false_alarm < 1.0:
        raise ValueError(f"target false-alarm rate must be in [0, 1), got {target_false_alarm}")
    if np.isnan(scores).any():
        raise ValueError("scores must be numbers, not NaN")

    allowed = int(np.floor(target_false_alarm * len(scores) + 1e-9))
    values = np.unique(scores)[::-1]
    flagged_at_value = np.array([np.count_nonzero(scores >= value) for value in values])
    within = np.flatnonzero(flagged_at_value <= allowed)

    if len(within) == 0:
        threshold = scores[0] + ABOVE_HIGHEST * max(abs(scores[0]), 1e-6)
    else:
        last = within[-1]
        threshold = (values[last] + values[last + 1]) / 2.0 if last + 1 < len(values) else values[last]

    achieved = float(np.count_nonzero(scores >= threshold) / len(scores))
    return Calibration(
        threshold=float(threshold), target_false_alarm=float(target_false_alarm), achieved_false_alarm=achieved,
        negatives=len(scores),
    )


def negatives_needed(target_false_alarm: float) -> int:
    """Return how many negatives a target needs before flagging one of them stays within it.

    With fewer, the only threshold that meets the target clears every negative, so the
    achieved rate is 0 whatever the target. A target of 0 needs just one negative.
    """
    if target_false_alarm <= 0:
        return 1
    # The tolerance keeps 1 / 0.05 at 20 rather than 21 after rounding.
    return math.ceil(1.0 / target_false_alarm - 1e-9)
