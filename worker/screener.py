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

from db import registry, repository
from db.registry import Selection
from db.schema import LABEL_NEGATIVE, LABEL_POSITIVE, ModelVersion
from models.checkpoint import Checkpoint, load_checkpoint
from models.device import select_device
from models.embedder import SiameseEmbedder
from models.exemplars import SCORE_RULES, ExemplarIndex, ExemplarSet
from models.inference import InferenceOptions, default_torch_threads
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
    checkpoint_threshold: float = 0.5
    embedding_dtype: str = "float32"
    inference_options: InferenceOptions = InferenceOptions()
    tile_batch_size: int = 256
    score_rule: str = "nearest_positive"

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def resolve_selection(session_factory: sessionmaker[Session], settings: Settings) -> Selection:
    """Return the configured exemplar set's pair, else the active pair, else the newest set's."""
    with session_factory() as session:
        try:
            if settings.exemplar_set_id is not None:
                return registry.selection_for_exemplar_set(session, settings.exemplar_set_id)
        except registry.RegistryError as error:
            raise ScreenerSetupError(str(error)) from error
        selection = registry.active_selection(session)
    if selection is None:
        raise ScreenerSetupError("no exemplar set in the database; run 'cargoscan enroll' first")
    return selection


def build_screener(
    session_factory: sessionmaker[Session], settings: Settings, selection: Selection | None = None, reuse: Screener | None = None
) -> Screener:
    """Load the selected exemplar set and the checkpoint that made it.

    ``reuse`` is a screener to take the network and decode threads from when its model
    version matches, so switching exemplar sets does not reload the checkpoint.
    """
    device = select_device(settings.device)
    # torch's own default takes every core in each process, which oversubscribes a machine
    # that runs several workers; each gets an equal share unless torch_threads is set.
    torch.set_num_threads(settings.torch_threads or default_torch_threads(settings.worker_processes))
    selection = selection or resolve_selection(session_factory, settings)

    with session_factory() as session:
        version = session.get(ModelVersion, selection.model_version_id)
        exemplars = repository.load_exemplars(session, selection.exemplar_set_id)

    if reuse is not None and reuse.model_sha256 == version.sha256:
        embedder, preprocess, checkpoint_threshold, executor = reuse.embedder, reuse.preprocess, reuse.checkpoint_threshold, reuse.executor
        score_rule = reuse.score_rule
    else:
        checkpoint = _load_matching_checkpoint(version, device)
        embedder, preprocess, checkpoint_threshold = checkpoint.embedder, checkpoint.preprocess, checkpoint.threshold
        score_rule = checkpoint_score_rule(checkpoint)
        executor = reuse.executor if reuse is not None else ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")

    threshold = settings.threshold if settings.threshold is not None else version.threshold
    if threshold <= 0 and score_rule != "margin":
        if reuse is None:
            executor.shutdown(wait=False)
        raise ScreenerSetupError(
            f"threshold {threshold} is invalid for score rule {score_rule!r}: it must be positive "
            "(only the margin rule takes zero or negative thresholds)"
        )
    index = build_exemplar_index(selection.exemplar_set_id, exemplars, settings)
    logger.info(
        "screener ready: model %s, exemplar set %d (%d positive, %d negative), threshold %.3f, device %s",
        version.sha256[:12], selection.exemplar_set_id, len(index.positives),
        0 if index.negatives is None else len(index.negatives), threshold, device,
    )
    return Screener(
        embedder=embedder,
        preprocess=preprocess,
        exemplars=index,
        threshold=threshold,
        checkpoint_threshold=checkpoint_threshold,
        device=device,
        model_version_id=version.id,
        model_sha256=version.sha256,
        exemplar_set_id=selection.exemplar_set_id,
        executor=executor,
        scan_root=settings.scan_root,
        max_image_pixels=settings.max_image_pixels,
        db_retry_attempts=settings.db_retry_attempts,
        db_retry_initial_delay_s=settings.db_retry_initial_delay_s,
        inference_options=InferenceOptions(mixed_precision=settings.mixed_precision, compile=settings.torch_compile),
        embedding_dtype=settings.embedding_dtype,
        tile_batch_size=settings.tile_batch_size,
        score_rule=score_rule,
    )


def checkpoint_score_rule(checkpoint: Checkpoint) -> str:
    """Return the score rule the checkpoint was trained for; checkpoints that name none use the paper's."""
    rule = checkpoint.metadata.get("score_rule", "nearest_positive")
    if rule not in SCORE_RULES:
        raise ScreenerSetupError(f"checkpoint {checkpoint.version[:12]} names an unknown score rule {rule!r}; known: {SCORE_RULES}")
    return rule


def _load_matching_checkpoint(version: ModelVersion, device: torch.device) -> Checkpoint:
    checkpoint = load_checkpoint(version.checkpoint_path, device=device)
    if checkpoint.version != version.sha256:
        raise ScreenerSetupError(
            f"checkpoint {version.checkpoint_path} has sha256 {checkpoint.version[:12]}, but the exemplar set was "
            f"made by model {version.sha256[:12]}; restore that file or enroll again with the new one"
        )
    return checkpoint


def build_exemplar_index(exemplar_set_id: int, exemplars, settings: Settings) -> ExemplarSet:
    by_label: dict[str, tuple[list[np.ndarray], list[int]]] = {LABEL_POSITIVE: ([], []), LABEL_NEGATIVE: ([], [])}
    for exemplar in exemplars:
        vectors, ids = by_label[exemplar.label]
        vectors.append(np.frombuffer(exemplar.embedding, dtype="<f4"))
        ids.append(exemplar.id)

    positives, positive_ids = by_label[LABEL_POSITIVE]
    negatives, negative_ids = by_label[LABEL_NEGATIVE]
    search = {
        "approximate_min_exemplars": settings.approximate_index_min_exemplars,
        "approximate_probes": settings.approximate_index_probes,
    }
    if not positives:
        raise ScreenerSetupError(f"exemplar set {exemplar_set_id} has no positive exemplars")
    return ExemplarSet(
        set_id=exemplar_set_id,
        positives=ExemplarIndex(np.stack(positives), np.array(positive_ids), **search),
        negatives=ExemplarIndex(np.stack(negatives), np.array(negative_ids), **search) if negatives else None,
    )
