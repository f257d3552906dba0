"""Screening metrics per scan: ROC curve, ROC AUC and detection at fixed false-alarm rates.

Scores follow one convention: higher means more likely positive, and a scan is flagged when
its score is at or above the operating threshold. For CargoScan's rule (flag when the
nearest positive exemplar is within a distance), the score is the negated distance.

Tied scores are flagged together, so an operating point never splits a tie. The ROC curve
therefore jumps diagonally across a tie, and the AUC counts a tied positive-negative pair
as half correct (the Mann-Whitney convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class SingleClassError(ValueError):
    """Scores for one class only: rates against the other class are undefined."""


@dataclass(frozen=True)
class RocCurve:
    """Operating points from flagging nothing to flagging everything, one per distinct score.

    ``thresholds[i]`` is the lowest score flagged at point i (``+inf`` for the first point).
    """

    false_alarm: np.ndarray
    detection: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold with the detection and false-alarm rates it gives."""

    threshold: float
    detection: float
    false_alarm: float


@dataclass(frozen=True)
class ScreeningMetrics:
    """ROC AUC and the operating points that the evaluation report lists."""

    positives: int
    negatives: int
    auc: float
    at_1_percent: OperatingPoint
    at_5_percent: OperatingPoint
    at_90_percent_detection: OperatingPoint


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> RocCurve:
    """Compute the ROC curve of (N,) scores against (N,) labels (1 positive, 0 negative)."""
    scores, labels = _check(scores, labels)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    sorted_labels = labels[order]

    # The last index of each run of tied scores is where an operating point can sit.
    ends = np.flatnonzero(np.diff(sorted_scores) != 0)
    ends = np.append(ends, len(scores) - 1)
    true_flagged = np.cumsum(sorted_labels)[ends]
    false_flagged = (ends + 1) - true_flagged

    positives = labels.sum()
    negatives = len(labels) - positives
    return RocCurve(
        false_alarm=np.concatenate([[0.0], false_flagged / negatives]),
        detection=np.concatenate([[0.0], true_flagged / positives]),
        thresholds=np.concatenate([[np.inf], sorted_scores[ends]]),
    )


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Return the area under the ROC curve: P(score of a positive > score of a negative), ties counting 1/2."""
    curve = roc_curve(scores, labels)
    return float(np.trapezoid(curve.detection, curve.false_alarm))


def detection_at_false_alarm(scores: np.ndarray, labels: np.ndarray, false_alarm: float) -> OperatingPoint:
    """Return the point of highest detection whose false-alarm rate is at most ``false_alarm``."""
    curve = roc_curve(scores, labels)
    allowed = np.flatnonzero(curve.false_alarm <= false_alarm + 1e-12)
    best = allowed[np.argmax(curve.detection[allowed])]
    return _point(curve, best)


def false_alarm_at_detection(scores: np.ndarray, labels: np.ndarray, detection: float) -> OperatingPoint:
    """Return the point of lowest false-alarm rate whose detection rate is at least ``detection``."""
    curve = roc_curve(scores, labels)
    reached = np.flatnonzero(curve.detection >= detection - 1e-12)
    best = reached[np.argmin(curve.false_alarm[reached])]
    return _point(curve, best)


def rates_at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> OperatingPoint:
    """Return the detection and false-alarm rates when scores at or above ``threshold`` are flagged."""
    scores, labels = _check(scores, labels)
    flagged = scores >= threshold
    return OperatingPoint(
        threshold=float(threshold),
        detection=float(flagged[labels == 1].mean()),
        false_alarm=float(flagged[labels == 0].mean()),
    )


def screening_metrics(scores: np.ndarray, labels: np.ndarray) -> ScreeningMetrics:
    """Compute ROC AUC, detection at 1% and 5% false alarms, and the false-alarm rate at 90% detection."""
    scores, labels = _check(scores, labels)
    return ScreeningMetrics(
        positives=int(labels.sum()),
        negatives=int((labels == 0).sum()),
        auc=roc_auc(scores, labels),
        at_1_percent=detection_at_false_alarm(scores, labels, 0.01),
        at_5_percent=detection_at_false_alarm(scores, labels, 0.05),
        at_90_percent_detection=false_alarm_at_detection(scores, labels, 0.90),
    )


def _point(curve: RocCurve, index: int) -> OperatingPoint:
    return OperatingPoint(
        threshold=float(curve.thresholds[index]),
        detection=float(curve.detection[index]),
        false_alarm=float(curve.false_alarm[index]),
    )


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"expected scores and labels of one shape (N,), got {scores.shape} and {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 1 (positive) or 0 (negative)")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")

    labels = labels.astype(np.int64)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise SingleClassError(
            f"screening metrics need at least one positive and one negative scan, got {positives} positive "
            f"and {negatives} negative; evaluate on a split that holds both classes"
        )
    return scores, labels
