"""Enrollment: embed labelled exemplar scans and store them as an exemplar set."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from db import repository
from db.schema import LABEL_NEGATIVE, LABEL_POSITIVE
from models.checkpoint import load_checkpoint
from models.device import select_device
from models.inference import Decoded, decode_many, embed_images
from models.scan_scoring import embed_tile_images
from models.tiling import ON_ITEM_FRACTION, item_coverage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnrollResult:
    exemplar_set_id: int
    model_version_id: int
    model_sha256: str
    positives: int
    negatives: int
    skipped: list[tuple[str, str]]
    # The model version's stored threshold: the checkpoint's, or a calibrated one when the
    # version was calibrated in this database before.
    threshold: float = 0.5
    calibrated: bool = False


def enroll(
    session_factory: sessionmaker[Session],
    checkpoint_path: Path,
    positive_paths: list[Path],
    negative_paths: list[Path],
    name: str | None = None,
    batch_size: int = 32,
    device: str | None = None,
    max_image_pixels: int | None = None,
    boxes: Mapping[str, Sequence[tuple[int, int, int, int]]] | None = None,
) -> EnrollResult:
    """Embed the exemplars with the checkpoint and store them, tied to its model version.

    With a tile-mode checkpoint the exemplars are tiles: the tiles on an item of each
    positive scan (``boxes`` maps ``str(path)`` to its item boxes) become positive
    exemplars, and every tile clear of items, in either class, a negative one.
    """
    if not positive_paths:
        raise ValueError("enrollment needs at least one positive exemplar image")

    compute = select_device(device)
    checkpoint = load_checkpoint(checkpoint_path, device=compute)
    labelled = [(LABEL_POSITIVE, path) for path in positive_paths] + [(LABEL_NEGATIVE, path) for path in negative_paths]
    rows: list[repository.ExemplarRow] = []
    skipped: list[tuple[str, str]] = []

    limit = {"max_image_pixels": max_image_pixels} if max_image_pixels else {}
    with ThreadPoolExecutor(max_workers=4) as executor, tqdm(total=len(labelled), desc="enroll", unit="scan", disable=None) as bar:
        for start in range(0, len(labelled), batch_size):
            chunk = labelled[start : start + batch_size]
            decoded = decode_many([path for _, path in chunk], checkpoint.preprocess, executor, **limit)
            good = [index for index, item in enumerate(decoded) if item.ok]
            for index, item in enumerate(decoded):
                if not item.ok:
                    skipped.append((str(chunk[index][1]), item.error or ""))
                    logger.warning("skipping unreadable exemplar %s: %s", chunk[index][1], item.error)

            if checkpoint.preprocess.tiles is not None:
                for index in good:
                    label, path = chunk[index]
                    item_boxes = (boxes or {}).get(str(path), ())
                    if label == LABEL_POSITIVE and not item_boxes:
                        skipped.append((str(path), "positive exemplar without an item box; tile mode needs its boxes"))
                        logger.warning("skipping positive exemplar %s: no item box", path)
                        continue
                    rows += _tile_rows(checkpoint, compute, path, decoded[index], item_boxes)
            elif good:
                images = torch.stack([decoded[index].image for index in good])
                embeddings = embed_images(checkpoint.embedder, images, checkpoint.preprocess, compute).numpy()
                for position, index in enumerate(good):
                    label, path = chunk[index]
                    vector = embeddings[position].astype("<f4")
                    rows.append(repository.ExemplarRow(label=label, uri=str(Path(path).resolve()), embedding=vector.tobytes()))
            bar.update(len(chunk))

    with session_factory.begin() as session:
        version = repository.get_or_create_model_version(
            session,
            sha256=checkpoint.version,
            name=checkpoint_path.name,
            checkpoint_path=str(checkpoint_path.resolve()),
            preprocessing=checkpoint.preprocess.to_dict(),
            threshold=checkpoint.threshold,
            training=checkpoint_training_summary(checkpoint),
        )
        exemplar_set = repository.create_exemplar_set(session, version.id, name or f"{checkpoint_path.stem}-exemplars", rows)
        result = EnrollResult(
            threshold=version.threshold,
            calibrated=version.threshold != checkpoint.threshold,
            exemplar_set_id=exemplar_set.id,
            model_version_id=version.id,
            model_sha256=version.sha256,
            positives=exemplar_set.positive_count,
            negatives=exemplar_set.negative_count,
            skipped=skipped,
        )
    return result


def _tile_rows(checkpoint, compute, path: Path, decoded: Decoded, item_boxes) -> list[repository.ExemplarRow]:
    tiles = decoded.tiles
    coverage = item_coverage(tiles.boxes, np.array(item_boxes, dtype=np.int64).reshape(-1, 4))
    # Tiles that only graze an item are neither: they would blur the two classes.
    chosen = {LABEL_POSITIVE: np.flatnonzero(coverage >= ON_ITEM_FRACTION), LABEL_NEGATIVE: np.flatnonzero(coverage == 0)}

    rows = []
    uri = str(Path(path).resolve())
    for label, indices in chosen.items():
        chosen_tiles = tiles.images[torch.from_numpy(indices)]
        embeddings = embed_tile_images(checkpoint.embedder, chosen_tiles, checkpoint.preprocess, compute).numpy()
        for position, tile in enumerate(indices):
            x0, y0, x1, y1 = (int(value) for value in tiles.boxes[tile])
            vector = embeddings[position].astype("<f4")
            rows.append(repository.ExemplarRow(label=label, uri=f"{uri}#tile={x0},{y0},{x1},{y1}", embedding=vector.tobytes()))
    return rows


def checkpoint_training_summary(checkpoint) -> dict:
    """Return the checkpoint's training metadata in a form the JSON column accepts."""
    return _json_safe(checkpoint.metadata)


def _json_safe(value):
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value
