"""The per-process screening state: model, exemplar set, threshold and decode threads.

A :class:`Screener` is built once per worker process, after the fork, and reused for every
batch that process handles.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sqlalchemy.orm import Session, sessionmaker

from db import repository
from db.schema import LABEL_NEGATIVE, LABEL_POSITIVE, ModelVersion
from db.schema import ExemplarSet as ExemplarSetRow
from models.checkpoint import Checkpoint, load_checkpoint
from models.device import select_device
from models.embedder import SiameseEmbedder
from models.exemplars import ExemplarIndex, ExemplarSet
from models.preprocess import PreprocessConfig
from worker.settings import Settings

logger = logging.getLogger(__name__)


class ScreenerSetupError(Exception):
    """The screener cannot start: no exemplar set, or a checkpoint that does not match it."""


@dataclass
class Screener:
    embedder: SiameseEmbedder
    preprocess: PreprocessConfig
    exemplars: ExemplarSet
    threshold: float
    device: torch.device
    model_version_id: int
    model_sha256: str
    exemplar_set_id: int
    executor: ThreadPoolExecutor
    scan_root: Path | None
    max_image_pixels: int
    db_retry_attempts: int
    db_retry_initial_delay_s: float

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def build_screener(session_factory: sessionmaker[Session], settings: Settings) -> Screener:
    """Load the exemplar set (the configured one, else the newest) and the checkpoint that made it."""
    device = select_device(settings.device)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)

    with session_factory() as session:
        if settings.exemplar_set_id is not None:
            exemplar_set = session.get(ExemplarSetRow, settings.exemplar_set_id)
            if exemplar_set is None:
                raise ScreenerSetupError(f"exemplar set {settings.exemplar_set_id} not found; run 'cargoscan enroll' first")
        else:
            exemplar_set = repository.latest_exemplar_set(session)
            if exemplar_set is None:
                raise ScreenerSetupError("no exemplar set in the database; run 'cargoscan enroll' first")

        version = session.get(ModelVersion, exemplar_set.model_version_id)
        exemplars = repository.load_exemplars(session, exemplar_set.id)

    checkpoint = _load_matching_checkpoint(version, device)
    threshold = settings.threshold if settings.threshold is not None else checkpoint.threshold
    index = _build_indexes(exemplar_set.id, exemplars)
    logger.info(
        "screener ready: model %s, exemplar set %d (%d positive, %d negative), threshold %.3f, device %s",
        version.sha256[:12], exemplar_set.id, len(index.positives), 0 if index.negatives is None else len(index.negatives),
        threshold, device,
    )
    return Screener(
        embedder=checkpoint.embedder,
        preprocess=checkpoint.preprocess,
        exemplars=index,
        threshold=threshold,
        device=device,
        model_version_id=version.id,
        model_sha256=version.sha256,
        exemplar_set_id=exemplar_set.id,
        executor=ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="decode"),
        scan_root=settings.scan_root,
        max_image_pixels=settings.max_image_pixels,
        db_retry_attempts=settings.db_retry_attempts,
        db_retry_initial_delay_s=settings.db_retry_initial_delay_s,
    )


def _load_matching_checkpoint(version: ModelVersion, device: torch.device) -> Checkpoint:
    checkpoint = load_checkpoint(version.checkpoint_path, device=device)
    if checkpoint.version != version.sha256:
        raise ScreenerSetupError(
            f"checkpoint {version.checkpoint_path} has sha256 {checkpoint.version[:12]}, but the exemplar set was "
            f"made by model {version.sha256[:12]}; restore that file or enroll again with the new one"
        )
    return checkpoint


def _build_indexes(exemplar_set_id: int, exemplars) -> ExemplarSet:
    by_label: dict[str, tuple[list[np.ndarray], list[int]]] = {LABEL_POSITIVE: ([], []), LABEL_NEGATIVE: ([], [])}
    for exemplar in exemplars:
        vectors, ids = by_label[exemplar.label]
        vectors.append(np.frombuffer(exemplar.embedding, dtype="<f4"))
        ids.append(exemplar.id)

    positives, positive_ids = by_label[LABEL_POSITIVE]
    negatives, negative_ids = by_label[LABEL_NEGATIVE]
    if not positives:
        raise ScreenerSetupError(f"exemplar set {exemplar_set_id} has no positive exemplars")
    return ExemplarSet(
        set_id=exemplar_set_id,
        positives=ExemplarIndex(np.stack(positives), np.array(positive_ids)),
        negatives=ExemplarIndex(np.stack(negatives), np.array(negative_ids)) if negatives else None,
    )
