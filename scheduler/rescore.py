"""Rescore the archive for the active model version and exemplar set.

Scans whose embedding by the active model is stored are scored right here from those
embeddings: no image is decoded and the network never runs, which is all an exemplar-only
change needs. The rest go to the rescore queue, which workers consume only when the live
queue is empty.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from db import registry, repository
from db.database import Database
from db.embeddings import load_embeddings
from db.rescore import mark_rescore_sent, scans_to_rescore
from db.schema import ModelVersion
from models.exemplars import score
from worker.screener import build_exemplar_index
from worker.settings import Settings

CHUNK = 1000


class RescoreError(Exception):
    """Rescoring cannot start, for example because nothing has been enrolled."""


@dataclass
class RescoreSummary:
    candidates: int = 0
    scored_from_embeddings: int = 0
    sent: int = 0
    seconds: float = 0.0


def rescore_archive(database: Database, settings: Settings, include_sent: bool = False, progress: bool = True) -> RescoreSummary:
    """Give every screened scan a result from the active pair; returns what was done.

    Resumable: a scan sent by an earlier run and not yet scored is not sent again unless
    ``include_sent``, and scans that already have a result from the active pair are skipped.
    """
    started = time.perf_counter()
    with database.sessions() as session:
        selection = registry.active_selection(session)
        if selection is None:
            raise RescoreError("no exemplar set in the database; run 'cargoscan enroll' first")
        version = session.get(ModelVersion, selection.model_version_id)
        exemplars = repository.load_exemplars(session, selection.exemplar_set_id)
        candidates = scans_to_rescore(session, selection.model_version_id, selection.exemplar_set_id, include_sent)

    threshold = settings.threshold if settings.threshold is not None else version.threshold
    index = build_exemplar_index(selection.exemplar_set_id, exemplars, settings)
    summary = RescoreSummary(candidates=len(candidates))
    task = None

    with tqdm(total=len(candidates), desc="rescore", unit="scan", disable=None if progress else True) as bar:
        for start in range(0, len(candidates), CHUNK):
            chunk = candidates[start : start + CHUNK]
            with database.sessions.begin() as session:
                stored = load_embeddings(session, selection.model_version_id, [scan_id for scan_id, _ in chunk])
                if stored:
                    _score_stored(session, selection, index, threshold, stored)
            summary.scored_from_embeddings += len(stored)

            unsent = [(scan_id, uri) for scan_id, uri in chunk if scan_id not in stored]
            if unsent:
                task = task or _screen_task()
                _send(task, unsent, settings.rescore_queue)
                with database.sessions.begin() as session:
                    mark_rescore_sent(session, [scan_id for scan_id, _ in unsent], selection.exemplar_set_id)
                summary.sent += len(unsent)
            bar.update(len(chunk))

    summary.seconds = time.perf_counter() - started
    return summary


def _score_stored(session, selection, index, threshold: float, stored: dict[int, np.ndarray]) -> None:
    scan_ids = list(stored)
    embeddings = torch.from_numpy(np.stack([stored[scan_id] for scan_id in scan_ids]))
    verdicts = score(embeddings, index, threshold)
    rows = [
        repository.ScoredScan(
            scan_id=scan_id,
            positive_distance=float(verdicts.positive_distance[position]),
            positive_exemplar_id=int(verdicts.positive_id[position]),
            negative_distance=None if verdicts.negative_distance is None else float(verdicts.negative_distance[position]),
            negative_exemplar_id=None if verdicts.negative_id is None else int(verdicts.negative_id[position]),
            flagged=bool(verdicts.flagged[position]),
            width=None,
            height=None,
        )
        for position, scan_id in enumerate(scan_ids)
    ]
    repository.write_batch(session, selection.model_version_id, selection.exemplar_set_id, threshold, rows, [])


def _screen_task():
    from worker.tasks import screen

    return screen


def _send(task, jobs: list[tuple[int, str]], queue: str) -> None:
    from scheduler.enqueue import send_job

    # Sent before being marked: if this process dies in between, a rerun sends the same
    # jobs again, and the upsert keeps one result per scan.
    for scan_id, uri in jobs:
        send_job(task, scan_id, uri, queue)
