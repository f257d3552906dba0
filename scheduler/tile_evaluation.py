"""``cargoscan evaluate`` for tile-mode models: per-scan screening, localisation and example heat maps.

Each test scan is scored by its best tile, exactly as the worker scores it, under three
rules: the distance to the nearest item tile (the deployed rule), novelty (the distance to
the nearest clear tile) and their margin (nearest clear minus nearest item). For positives
with a known item box, the top tile is on the item when they share at least a quarter of
the smaller of the two areas.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.exemplars import ExemplarIndex
from models.inference import decode_one
from models.metrics import SingleClassError, rates_at_threshold, screening_metrics
from models.scan_scoring import embed_tiles
from models.tile_training import LabelledScan
from models.tiling import ON_ITEM_FRACTION, item_coverage

# Looser than the training rule, because a box that contains a quarter of the item
# already shows the operator where it is.
LOCALISATION_FRACTION = 0.25

SCORE_RULES = ("nearest_item", "novelty", "margin")
EXAMPLES_PER_KIND = 4


class TileEvaluationError(ValueError):
    """A tile evaluation that cannot run on the given scans; the message gives the reason."""


@dataclass
class ScoredScan:
    scan: LabelledScan
    scores: dict[str, float]
    top_box: tuple[int, int, int, int]
    tile_boxes: np.ndarray
    tile_item_distance: np.ndarray
    on_item: bool | None


def evaluate_tiles(checkpoint, test: list[LabelledScan], exemplars: list[LabelledScan], device: torch.device,
                   max_clear_exemplars: int, seed: int, out: Path | None, report=print) -> dict[str, Any]:
    """Score the test scans against item and clear tiles of the exemplar scans; returns JSON-ready results."""
    config = checkpoint.preprocess
    item_index, clear_index, exemplar_counts = _exemplar_indexes(checkpoint, exemplars, device, max_clear_exemplars, seed)
    report(f"exemplar tiles: {exemplar_counts['item']} on items, {exemplar_counts['clear']} clear")

    scored: list[ScoredScan] = []
    unreadable: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=2) as executor:
        decoded_all = executor.map(lambda scan: decode_one(scan.path, config, 10**9), test)
        for scan, decoded in zip(test, decoded_all):
            if not decoded.ok:
                unreadable.append((str(scan.path), decoded.error or ""))
                continue
            scored.append(_score_scan(checkpoint, scan, decoded, item_index, clear_index, device))

    labels = np.array([1 if item.scan.positive else 0 for item in scored])
    try:
        screening = {rule: screening_metrics(np.array([item.scores[rule] for item in scored]), labels) for rule in SCORE_RULES}
    except SingleClassError as error:
        raise TileEvaluationError(f"the test scans need both classes: {error}") from error

    main = screening["nearest_item"]
    at_one_percent = main.at_1_percent.threshold
    localisation = _localisation(scored, at_one_percent)
    deployed = rates_at_threshold(np.array([item.scores["nearest_item"] for item in scored]), labels, -checkpoint.threshold)
    results: dict[str, Any] = {
        "mode": "tiles",
        "model": {"version": checkpoint.version, "preprocess": config.to_dict(), "threshold": checkpoint.threshold,
                  "selection": checkpoint.metadata.get("selection")},
        "test": {"positives": int(labels.sum()), "negatives": int((labels == 0).sum()), "unreadable": len(unreadable)},
        "exemplars": exemplar_counts,
        "screening": {rule: asdict(metrics) for rule, metrics in screening.items()},
        "localisation": localisation,
        "threshold": {"given": checkpoint.threshold, "detection": deployed.detection, "false_alarm": deployed.false_alarm},
        "tiles_per_scan": float(np.mean([len(item.tile_boxes) for item in scored])),
    }
    for rule, metrics in screening.items():
        report(f"{rule}: ROC AUC {metrics.auc:.3f}, detection {metrics.at_1_percent.detection:.3f} at 1% false alarms, "
               f"{metrics.at_5_percent.detection:.3f} at 5%")
    report(f"localisation: top tile on the item for {localisation['on_item_of_detected']} of detected positives, "
           f"{localisation['on_item_of_positives']} of all positives with a box")

    if out is not None:
        results["examples"] = _write_examples(scored, config, out, at_one_percent)
        report(f"wrote {len(results['examples'])} example heat maps to {out}")
    return results


def _exemplar_indexes(checkpoint, exemplars, device, max_clear: int, seed: int):
    config = checkpoint.preprocess
    item_vectors, clear_vectors = [], []
    for scan in exemplars:
        decoded = decode_one(scan.path, config, 10**9)
        if not decoded.ok or (scan.positive and not scan.boxes):
            continue
        coverage = item_coverage(decoded.tiles.boxes, np.array(scan.boxes, dtype=np.int64).reshape(-1, 4))
        embeddings = embed_tiles(checkpoint.embedder, [decoded], config, device)
        item_vectors.append(embeddings[torch.from_numpy(coverage >= ON_ITEM_FRACTION)])
        clear_vectors.append(embeddings[torch.from_numpy(coverage == 0)])

    items = torch.cat(item_vectors) if item_vectors else torch.zeros((0, 512))
    clear = torch.cat(clear_vectors) if clear_vectors else torch.zeros((0, 512))
    if len(items) == 0 or len(clear) == 0:
        raise TileEvaluationError("the exemplar scans gave no item tile or no clear tile; positives need item boxes")
    if len(clear) > max_clear:
        keep = np.sort(np.random.default_rng(seed).choice(len(clear), max_clear, replace=False))
        clear = clear[torch.from_numpy(keep)]

    counts = {"item": len(items), "clear": len(clear)}
    return ExemplarIndex(items, np.arange(len(items))), ExemplarIndex(clear, np.arange(len(clear))), counts


def _score_scan(checkpoint, scan, decoded, item_index, clear_index, device) -> ScoredScan:
    embeddings = embed_tiles(checkpoint.embedder, [decoded], checkpoint.preprocess, device)
    to_item = item_index.nearest(embeddings).distance.astype(np.float64)
    to_clear = clear_index.nearest(embeddings).distance.astype(np.float64)
    best = int(np.argmin(to_item))
    top_box = tuple(int(value) for value in decoded.tiles.boxes[best])

    on_item = None
    if scan.positive and scan.boxes:
        coverage = item_coverage(np.array([top_box]), np.array(scan.boxes, dtype=np.int64).reshape(-1, 4))
        on_item = bool(coverage[0] >= LOCALISATION_FRACTION)
    scores = {"nearest_item": -float(to_item.min()), "novelty": float(to_clear.max()), "margin": float((to_clear - to_item).max())}
    return ScoredScan(scan=scan, scores=scores, top_box=top_box, tile_boxes=decoded.tiles.boxes, tile_item_distance=to_item,
                      on_item=on_item)


def _localisation(scored: list[ScoredScan], threshold: float) -> dict[str, Any]:
    boxed = [item for item in scored if item.on_item is not None]
    detected = [item for item in boxed if item.scores["nearest_item"] >= threshold]
    return {
        "rule": f"top tile shares at least {LOCALISATION_FRACTION:.0%} of the smaller area with the item box",
        "positives_with_box": len(boxed),
        "on_item_of_positives": _fraction(sum(item.on_item for item in boxed), len(boxed)),
        "detected_at_1_percent": len(detected),
        "on_item_of_detected": _fraction(sum(item.on_item for item in detected), len(detected)),
    }


def _fraction(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def _write_examples(scored: list[ScoredScan], config, out: Path, threshold: float) -> list[dict[str, Any]]:
    from models.heatmap import render_heatmap, save_heatmap
    from models.imaging import load_scan
    from models.inference import decode_target

    positives = sorted((item for item in scored if item.scan.positive), key=lambda item: -item.scores["nearest_item"])
    negatives = sorted((item for item in scored if not item.scan.positive), key=lambda item: -item.scores["nearest_item"])
    kinds = {
        "hit": [item for item in positives if item.on_item and item.scores["nearest_item"] >= threshold],
        "miss": [item for item in reversed(positives) if item.scores["nearest_item"] < threshold or item.on_item is False],
        "false-alarm": [item for item in negatives if item.scores["nearest_item"] >= threshold] or negatives[:1],
    }

    examples = []
    for kind, items in kinds.items():
        for item in items[:EXAMPLES_PER_KIND]:
            scan = load_scan(item.scan.path, target=decode_target(config))
            image = render_heatmap(scan.pixels, (scan.width, scan.height), item.tile_boxes, -item.tile_item_distance,
                                   item.top_box, item.scan.boxes)
            path = out / "examples" / f"{kind}-{item.scan.path.stem}.png"
            save_heatmap(image, path)
            examples.append({"kind": kind, "scan": str(item.scan.path), "png": str(path), "score": item.scores["nearest_item"],
                             "top_box": list(item.top_box), "on_item": item.on_item})
    return examples
