"""Score rules: how distances to positive and negative exemplars become suspicion and flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.exemplars import ExemplarIndex, ExemplarSet, rule_score, score, suspicion, suspicion_threshold


def _exemplars(with_negatives: bool = True) -> ExemplarSet:
    positives = ExemplarIndex(np.array([[0.0, 0.0], [10.0, 0.0]]), np.array([1, 2]))
    negatives = ExemplarIndex(np.array([[0.0, 5.0]]), np.array([3])) if with_negatives else None
    return ExemplarSet(set_id=1, positives=positives, negatives=negatives)


QUERIES = torch.tensor([[0.0, 1.0], [0.0, 4.0], [5.0, -5.0]])


def test_nearest_positive_flags_within_threshold():
    verdicts = score(QUERIES, _exemplars(), threshold=2.0)

    assert verdicts.flagged.tolist() == [True, False, False]
    assert np.allclose(suspicion(verdicts, "nearest_positive"), [-1.0, -4.0, -np.hypot(5, 5)])


def test_novelty_flags_far_from_negatives():
    verdicts = score(QUERIES, _exemplars(), threshold=5.0, rule="novelty")

    assert np.allclose(suspicion(verdicts, "novelty"), [4.0, 1.0, np.hypot(5, 10)])
    assert verdicts.flagged.tolist() == [False, False, True]


def test_margin_flags_nearer_positive():
    verdicts = score(QUERIES, _exemplars(), threshold=0.5, rule="margin")

    assert np.allclose(suspicion(verdicts, "margin"), [3.0, -3.0, np.hypot(5, 10) - np.hypot(5, 5)])
    assert verdicts.flagged.tolist() == [True, False, True]


def test_suspicion_threshold_matches_flags():
    assert suspicion_threshold(0.7, "nearest_positive") == -0.7
    assert suspicion_threshold(0.7, "novelty") == 0.7


def test_unknown_rule_rejected():
    with pytest.raises(ValueError, match="score rule"):
        score(QUERIES, _exemplars(), threshold=1.0, rule="vote")


def test_novelty_without_negatives_rejected():
    with pytest.raises(ValueError, match="needs negative exemplars"):
        score(QUERIES, _exemplars(with_negatives=False), threshold=1.0, rule="novelty")


@pytest.mark.parametrize("rule, expected", [("nearest_positive", 0.25), ("novelty", 1.0), ("margin", 0.75)])
def test_rule_score_per_rule(rule, expected):
    assert rule_score(0.25, 1.0, rule) == pytest.approx(expected)


def test_rule_score_without_negative_distance_rejected():
    assert rule_score(0.25, None, "nearest_positive") == 0.25
    with pytest.raises(ValueError, match="needs the nearest-negative distance"):
        rule_score(0.25, None, "margin")
