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
