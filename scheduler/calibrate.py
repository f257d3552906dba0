"""``cargoscan calibrate``: set a model version's threshold for a target false-alarm rate.

The threshold is chosen on the validation split's negative scans: their distances to the
nearest positive exemplar of an enrolled exemplar set, the same distances screening
computes. It is stored on the model version in the database, where screening reads it
unless a threshold is given explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from db import repository
from db.schema import LABEL_POSITIVE, ModelVersion
from db.schema import ExemplarSet as ExemplarSetRow
from models.calibration import Calibration, calibrate_threshold
from models.checkpoint import load_checkpoint
from models.exemplars import ExemplarIndex
from scheduler.labelled import LabelledSet, embed_paths


class CalibrationError(ValueError):
    """Calibration cannot run: no matching exemplar set, or no validation negatives."""


@dataclass(frozen=True)
class CalibrationResult:
    calibration: Calibration
    exemplar_set_id: int
    model_sha256: str
    validation_detection: float | None


def calibrate_model(
    session_factory: sessionmaker[Session], checkpoint_path: Path, validation: LabelledSet, target_false_alarm: float,
    device, exemplar_set_id: int | None = None,
) -> CalibrationResult:
    """Calibrate on ``validation`` against the exemplar set (the given one, else the newest) and store the threshold."""
    checkpoint = load_checkpoint(checkpoint_path, device=device)
    if not validation.negatives:
        raise CalibrationError(f"{validation.source} has no negative scans to calibrate the false-alarm rate on")

    with session_factory() as session:
        exemplar_set = (session.get(ExemplarSetRow, exemplar_set_id) if exemplar_set_id is not None
                        else repository.latest_exemplar_set(session))
        if exemplar_set is None:
            raise CalibrationError("no exemplar set found; run 'cargoscan enroll' with this model first")
        rows = repository.load_exemplars(session, exemplar_set.id)
        model = session.get(ModelVersion, exemplar_set.model_version_id)
        if model.sha256 != checkpoint.version:
            raise CalibrationError(
                f"exemplar set {exemplar_set.id} was made by model {model.sha256[:12]}, not by {checkpoint_path} "
                f"({checkpoint.version[:12]}); enroll with this checkpoint or pass --exemplar-set"
            )
        set_id = exemplar_set.id

    from worker.screener import checkpoint_score_rule

    if checkpoint.preprocess.tiles is not None or checkpoint_score_rule(checkpoint) != "nearest_positive":
        return _calibrate_by_rule(session_factory, checkpoint, set_id, validation, target_false_alarm)

    vectors = [np.frombuffer(row.embedding, dtype="<f4") for row in rows if row.label == LABEL_POSITIVE]
    ids = [row.id for row in rows if row.label == LABEL_POSITIVE]
    if not vectors:
        raise CalibrationError(f"exemplar set {set_id} has no positive exemplars")
    index = ExemplarIndex(np.stack(vectors), np.array(ids))

    embeddings, kept, skipped = embed_paths(checkpoint, validation.paths, device)
    labels = validation.labels[kept]
    distances = index.nearest(embeddings).distance.astype(np.float64)
    if not (labels == 0).any():
        raise CalibrationError(f"no readable negative scan in {validation.source} ({len(skipped)} unreadable)")
    calibration = calibrate_threshold(distances[labels == 0], target_false_alarm)
    detection = float((distances[labels == 1] <= calibration.threshold).mean()) if (labels == 1).any() else None

    with session_factory.begin() as session:
        repository.set_model_threshold(session, checkpoint.version, calibration.threshold)
    return CalibrationResult(calibration=calibration, exemplar_set_id=set_id, model_sha256=checkpoint.version,
                             validation_detection=detection)


def _calibrate_by_rule(session_factory, checkpoint, set_id: int, validation: LabelledSet, target_false_alarm: float):
    # Tile models and models with another score rule are scored exactly as the worker scores
    # them: each scan's most suspicious tile under the model's rule, against the whole set.
    from db.registry import selection_for_exemplar_set
    from models.calibration import calibrate_suspicion
    from models.exemplars import suspicion, suspicion_threshold
    from models.inference import decode_one
    from models.scan_scoring import score_decoded
    from worker.screener import build_screener
    from worker.settings import Settings

    with session_factory() as session:
        selection = selection_for_exemplar_set(session, set_id)
    screener = build_screener(session_factory, Settings(database_url="unused://", metrics_port=0), selection)
    try:
        scores, labels = [], []
        for path, label in zip(validation.paths, validation.labels):
            decoded = decode_one(path, screener.preprocess, screener.max_image_pixels)
            if not decoded.ok:
                continue
            verdicts = score_decoded(screener.embedder, [decoded], screener.exemplars, 1.0, screener.preprocess, screener.device,
                                     screener.inference_options, screener.tile_batch_size, screener.score_rule).verdicts
            scores.append(float(suspicion(verdicts, screener.score_rule)[0]))
            labels.append(int(label))
    finally:
        screener.close()

    scores_array, labels_array = np.array(scores), np.array(labels)
    if not (labels_array == 0).any():
        raise CalibrationError(f"no readable negative scan in {validation.source}")
    rule = screener.score_rule
    if rule == "nearest_positive":
        calibration = calibrate_threshold(-scores_array[labels_array == 0], target_false_alarm)
    else:
        calibration = calibrate_suspicion(scores_array[labels_array == 0], target_false_alarm)
    if calibration.threshold <= 0 and rule != "margin":
        raise CalibrationError(f"calibration gave a threshold of {calibration.threshold:.4g}; rule {rule!r} needs a positive one")

    flagged_from = suspicion_threshold(calibration.threshold, rule)
    positives = scores_array[labels_array == 1]
    detection = float((positives >= flagged_from).mean()) if len(positives) else None
    with session_factory.begin() as session:
        repository.set_model_threshold(session, checkpoint.version, calibration.threshold)
    return CalibrationResult(calibration=calibration, exemplar_set_id=set_id, model_sha256=checkpoint.version,
                             validation_detection=detection)
