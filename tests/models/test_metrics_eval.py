"""Screening metrics and the size-only baseline on hand-made scores, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models.baseline import LogisticRegression, size_features
from models.evaluation import pair_metrics
from models.metrics import (
    SingleClassError,
    detection_at_false_alarm,
    false_alarm_at_detection,
    rates_at_threshold,
    roc_auc,
    roc_curve,
    screening_metrics,
)

# Four positives and four negatives, higher score = more suspicious. Of the 16 positive-negative
# pairs, the positive wins 12, ties 1 (0.6 against 0.6) and loses 3: AUC = (12 + 0.5) / 16.
SCORES = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.6, 0.2, 0.1])
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0])


def test_auc_counts_ties_half():
    assert roc_auc(SCORES, LABELS) == pytest.approx(12.5 / 16)


def test_auc_perfect_separation():
    assert roc_auc(np.array([3.0, 2.0, 1.0, 0.0]), np.array([1, 1, 0, 0])) == 1.0


def test_auc_all_tied_is_half():
    assert roc_auc(np.ones(6), np.array([1, 0, 1, 0, 1, 0])) == 0.5


def test_roc_points_flag_ties_together():
    curve = roc_curve(SCORES, LABELS)

    # Thresholds 0.9, 0.8, 0.7, 0.6 (one positive and one negative at once), 0.3, 0.2, 0.1.
    assert curve.detection.tolist() == [0.0, 0.25, 0.5, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert curve.false_alarm.tolist() == [0.0, 0.0, 0.0, 0.25, 0.5, 0.5, 0.75, 1.0]
    assert curve.thresholds[0] == np.inf


def test_detection_at_zero_false_alarms():
    point = detection_at_false_alarm(SCORES, LABELS, 0.0)
    assert point.detection == 0.5
    assert point.threshold == 0.8


def test_detection_at_quarter_false_alarms():
    # Lowering the threshold to the 0.6 tie would flag a third positive and a second negative at once.
    point = detection_at_false_alarm(SCORES, LABELS, 0.25)
    assert point.detection == 0.5
    assert point.false_alarm == 0.0


def test_detection_at_half_false_alarms():
    assert detection_at_false_alarm(SCORES, LABELS, 0.5).detection == 1.0


def test_false_alarm_at_full_detection():
    point = false_alarm_at_detection(SCORES, LABELS, 1.0)
    assert point.false_alarm == 0.5
    assert point.threshold == 0.3


def test_false_alarm_at_three_quarters():
    assert false_alarm_at_detection(SCORES, LABELS, 0.75).false_alarm == 0.5


def test_rates_at_threshold_include_equal_scores():
    point = rates_at_threshold(SCORES, LABELS, 0.6)
    assert point.detection == 0.75
    assert point.false_alarm == 0.5


def test_screening_metrics_summary():
    metrics = screening_metrics(SCORES, LABELS)
    assert (metrics.positives, metrics.negatives) == (4, 4)
    assert metrics.auc == pytest.approx(12.5 / 16)
    assert metrics.at_5_percent.detection == 0.5
    assert metrics.at_90_percent_detection.false_alarm == 0.5


@pytest.mark.parametrize("labels", [np.ones(4, dtype=int), np.zeros(4, dtype=int)])
def test_single_class_raises_clear_error(labels):
    with pytest.raises(SingleClassError, match="at least one positive and one negative"):
        screening_metrics(np.array([0.1, 0.2, 0.3, 0.4]), labels)


def test_mismatched_shapes_rejected():
    with pytest.raises(ValueError, match="one shape"):
        roc_auc(np.zeros(3), np.array([0, 1]))


def test_nan_scores_rejected():
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.array([0.1, np.nan]), np.array([0, 1]))


def test_pair_metrics_hand_counts():
    distances = np.array([0.1, 0.4, 0.5, 0.6, 0.2, 0.9])
    similar = np.array([1, 1, 1, 1, 0, 0])

    metrics = pair_metrics(distances, similar, threshold=0.5)

    # Predicted similar at distance <= 0.5: the first three similar pairs and the 0.2 dissimilar one.
    assert (metrics.true_positive, metrics.false_negative) == (3, 1)
    assert (metrics.false_positive, metrics.true_negative) == (1, 1)
    assert metrics.precision == pytest.approx(0.75)
    assert metrics.recall == pytest.approx(0.75)
    assert metrics.f1 == pytest.approx(0.75)


def test_logistic_regression_separates_by_feature():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (40, 2)), rng.normal(4, 1, (40, 2))])
    labels = np.array([0] * 40 + [1] * 40)

    probability = LogisticRegression().fit(features, labels).predict_proba(features)

    assert roc_auc(probability, labels) > 0.99


def test_logistic_regression_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        LogisticRegression().fit(np.zeros((3, 2)), np.ones(3))


def test_size_features_read_header(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("L", (200, 50), 128).save(path)

    features = size_features([path])

    assert features.shape == (1, 4)
    assert np.exp(features[0, :3]) == pytest.approx([200, 50, 4])
    assert np.exp(features[0, 3]) == pytest.approx(path.stat().st_size)


def test_accuracy_threshold_separates_pairs():
    from models.evaluation import accuracy_threshold

    threshold = accuracy_threshold(np.array([0.1, 0.2, 0.3, 0.6, 0.7]), np.array([1, 1, 0, 0, 0]))

    # Midway between the last similar pair (0.2) and the first dissimilar one (0.3).
    assert threshold == pytest.approx(0.25)


def test_accuracy_threshold_prefers_smallest():
    from models.evaluation import accuracy_threshold

    # 0.15 and 0.45 both get four of five right; the smaller one wins.
    threshold = accuracy_threshold(np.array([0.1, 0.2, 0.3, 0.6, 0.7]), np.array([1, 0, 1, 0, 0]))

    assert threshold == pytest.approx(0.15)
