"""Threshold calibration for a target false-alarm rate, and where the threshold is stored and used."""

from __future__ import annotations

import numpy as np
import pytest

from models.calibration import calibrate_suspicion, calibrate_threshold, negatives_needed


@pytest.mark.parametrize("target", [0.01, 0.05, 0.1])
def test_hits_target_on_calibration_set(target):
    distances = np.random.default_rng(0).gamma(4.0, 0.25, size=2000)

    calibration = calibrate_threshold(distances, target)

    # At most the target, and within one scan of it.
    assert calibration.achieved_false_alarm <= target
    assert calibration.achieved_false_alarm >= target - 1 / len(distances)


@pytest.mark.parametrize("target", [0.01, 0.05, 0.1])
def test_generalises_to_same_distribution(target):
    rng = np.random.default_rng(0)
    calibration = calibrate_threshold(rng.gamma(4.0, 0.25, size=20_000), target)

    fresh = rng.gamma(4.0, 0.25, size=200_000)
    observed = np.mean(fresh <= calibration.threshold)

    # The tail quantile of 20 000 draws varies by roughly a tenth of the target at 1%.
    assert observed == pytest.approx(target, rel=0.25)


def test_threshold_between_distances():
    calibration = calibrate_threshold(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]), 0.2)

    assert calibration.threshold == pytest.approx(0.25)
    assert calibration.achieved_false_alarm == pytest.approx(0.2)


def test_ties_never_exceed_target():
    # Flagging 0.2 would flag three of five negatives (60%), over the 50% target.
    calibration = calibrate_threshold(np.array([0.1, 0.2, 0.2, 0.5, 0.9]), 0.5)

    assert calibration.threshold == pytest.approx(0.15)
    assert calibration.achieved_false_alarm == pytest.approx(0.2)


def test_too_few_negatives_flags_none():
    calibration = calibrate_threshold(np.array([0.4, 0.8, 1.2]), 0.05)

    assert calibration.threshold == pytest.approx(0.2)
    assert calibration.achieved_false_alarm == 0.0


def test_zero_distance_negative_rejected():
    with pytest.raises(ValueError, match="coincides with a positive exemplar"):
        calibrate_threshold(np.array([0.0, 0.5, 0.7]), 0.01)


def test_empty_rejected():
    with pytest.raises(ValueError, match="at least one negative"):
        calibrate_threshold(np.array([]), 0.05)


@pytest.mark.parametrize("target", [-0.1, 1.0])
def test_target_out_of_range_rejected(target):
    with pytest.raises(ValueError, match="target false-alarm rate"):
        calibrate_threshold(np.array([0.5]), target)


def test_stored_threshold_used_by_screener(enrolled_database, tiny_checkpoint):
    from db import repository
    from models.checkpoint import load_checkpoint
    from worker.screener import build_screener
    from worker.settings import Settings

    version = load_checkpoint(tiny_checkpoint).version
    with enrolled_database.sessions.begin() as session:
        stored = repository.set_model_threshold(session, version, 0.125)
    assert stored is not None

    screener = build_screener(enrolled_database.sessions, Settings(database_url="sqlite://", metrics_port=0))
    try:
        assert screener.threshold == 0.125
    finally:
        screener.close()


def test_given_threshold_overrides_stored(enrolled_database, tiny_checkpoint):
    from db import repository
    from models.checkpoint import load_checkpoint
    from worker.screener import build_screener
    from worker.settings import Settings

    with enrolled_database.sessions.begin() as session:
        repository.set_model_threshold(session, load_checkpoint(tiny_checkpoint).version, 0.125)

    screener = build_screener(enrolled_database.sessions, Settings(database_url="sqlite://", metrics_port=0, threshold=2.0))
    try:
        assert screener.threshold == 2.0
    finally:
        screener.close()


def test_unknown_model_version_returns_none(enrolled_database):
    from db import repository

    with enrolled_database.sessions.begin() as session:
        assert repository.set_model_threshold(session, "0" * 64, 0.3) is None


@pytest.mark.parametrize("target", [0.01, 0.05, 0.2])
def test_suspicion_hits_target(target):
    scores = np.random.default_rng(4).gamma(2.0, 1.0, size=1000)

    calibration = calibrate_suspicion(scores, target)

    assert calibration.achieved_false_alarm <= target
    assert calibration.achieved_false_alarm >= target - 0.002
    assert np.count_nonzero(scores >= calibration.threshold) == round(calibration.achieved_false_alarm * 1000)


def test_suspicion_threshold_between_scores():
    calibration = calibrate_suspicion(np.array([1.0, 2.0, 3.0, 4.0]), 0.25)

    assert calibration.threshold == 3.5
    assert calibration.achieved_false_alarm == 0.25


def test_suspicion_too_few_negatives_flags_none():
    calibration = calibrate_suspicion(np.array([1.0, 2.0, 4.0]), 0.01)

    assert calibration.threshold == pytest.approx(4.2)
    assert calibration.achieved_false_alarm == 0.0


def test_suspicion_rejects_nan_and_empty():
    with pytest.raises(ValueError, match="NaN"):
        calibrate_suspicion(np.array([1.0, np.nan]), 0.05)
    with pytest.raises(ValueError, match="at least one"):
        calibrate_suspicion(np.array([]), 0.05)


@pytest.mark.parametrize("target, needed", [(0.05, 20), (0.01, 100), (0.25, 4), (0.3, 4), (1.0, 1), (0.0, 1)])
def test_negatives_needed_for_target(target, needed):
    assert negatives_needed(target) == needed
