"""``cargoscan evaluate`` for tile-mode models: per-scan screening, localisation and example heat maps.

Each test scan is scored by its most suspicious tile, exactly as the worker scores it. The
report covers the three score rules of :data:`models.exemplars.SCORE_RULES`: the distance
to the nearest item tile, novelty (the distance to the nearest clear tile) and their
margin. The model's own rule picks the top tile. For positives with a known item box, the top tile
is on the item when they share at least a quarter of the smaller of the two areas.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.exemplars import SCORE_RULES, ExemplarIndex
from models.inference import decode_one
from models.exemplars import suspicion_threshold
from models.metrics import SingleClassError, rates_at_threshold, screening_metrics
from models.scan_scoring import embed_tiles
from models.tile_bank import LabelledScan
from models.tiling import ON_ITEM_FRACTION, item_coverage

# Looser than the training rule, because a box that contains a quarter of the item
# already shows the operator where it is.
LOCALISATION_FRACTION = 0.25

EXAMPLES_PER_KIND = 4


class TileEvaluationError(ValueError):
    """A tile evaluation that cannot run on the given scans; the message gives the reason."""


@dataclass
class ScoredScan:
    scan: LabelledScan
    scores: dict[str, float]
    top_box: tuple[int, int, int, int]
    tile_boxes: np.ndarray
    tile_suspicion: np.ndarray
    tile_coverage: np.ndarray
    on_item: bool | None


def evaluate_tiles(checkpoint, test: list[LabelledScan], exemplars: list[LabelledScan], device: torch.device,
                   max_clear_exemplars: int, seed: int, out: Path | None, report=print) -> dict[str, Any]:
    """Score the test scans against item and clear tiles of the exemplar scans; returns JSON-ready results."""
    from worker.screener import checkpoint_score_rule

    config = checkpoint.preprocess
    rule = checkpoint_score_rule(checkpoint)
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
            scored.append(_score_scan(checkpoint, scan, decoded, item_index, clear_index, device, rule))

    labels = np.array([1 if item.scan.positive else 0 for item in scored])
    try:
        screening = {name: screening_metrics(np.array([item.scores[name] for item in scored]), labels) for name in SCORE_RULES}
    except SingleClassError as error:
        raise TileEvaluationError(f"the test scans need both classes: {error}") from error

    main = screening[rule]
    at_one_percent = main.at_1_percent.threshold
    localisation = _localisation(scored, rule, at_one_percent)
    deployed = rates_at_threshold(np.array([item.scores[rule] for item in scored]), labels,
                                  suspicion_threshold(checkpoint.threshold, rule))
    results: dict[str, Any] = {
        "mode": "tiles",
        "score_rule": rule,
        "model": {"version": checkpoint.version, "preprocess": config.to_dict(), "threshold": checkpoint.threshold,
                  "selection": checkpoint.metadata.get("selection")},
        "test": {"positives": int(labels.sum()), "negatives": int((labels == 0).sum()), "unreadable": len(unreadable)},
        "exemplars": exemplar_counts,
        "screening": {name: asdict(metrics) for name, metrics in screening.items()},
        "localisation": localisation,
        "by_material": _by_material(scored, rule, at_one_percent),
        "threshold": {"given": checkpoint.threshold, "detection": deployed.detection, "false_alarm": deployed.false_alarm},
        "tiles_per_scan": float(np.mean([len(item.tile_boxes) for item in scored])),
        "tiles": _tile_level(scored),
    }
    for name, metrics in screening.items():
        report(f"{name}{' (the model rule)' if name == rule else ''}: ROC AUC {metrics.auc:.3f}, detection {metrics.at_1_percent.detection:.3f} at 1% false alarms, "
               f"{metrics.at_5_percent.detection:.3f} at 5%")
    if results["tiles"] is not None:
        tiles = results["tiles"]
        report(f"single tiles ({tiles['on_item_tiles']} on items, {tiles['clear_tiles']} clear): ROC AUC {tiles['auc']:.3f}, "
               f"detection {tiles['detection_at_1_percent']:.3f} at 1% and {tiles['detection_at_0_1_percent']:.3f} at 0.1% false alarms")
    report(f"localisation: top tile on the item for {localisation['on_item_of_detected']} of detected positives, "
           f"{localisation['on_item_of_positives']} of all positives with a box")
    for material, counts in results["by_material"].items():
        report(f"{material} items: {counts['detected_at_1_percent']} of {counts['positives']} detected at 1% false alarms, "
               f"top tile on the item for {counts['on_item']}")

    if out is not None:
        results["examples"] = _write_examples(scored, config, out, rule, at_one_percent)
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


def _score_scan(checkpoint, scan, decoded, item_index, clear_index, device, rule: str) -> ScoredScan:
    embeddings = embed_tiles(checkpoint.embedder, [decoded], checkpoint.preprocess, device)
    to_item = item_index.nearest(embeddings).distance.astype(np.float64)
    to_clear = clear_index.nearest(embeddings).distance.astype(np.float64)
    per_rule = {"nearest_positive": -to_item, "novelty": to_clear, "margin": to_clear - to_item}
    best = int(np.argmax(per_rule[rule]))
    top_box = tuple(int(value) for value in decoded.tiles.boxes[best])

    item_boxes = np.array(scan.boxes, dtype=np.int64).reshape(-1, 4)
    on_item = None
    if scan.positive and scan.boxes:
        on_item = bool(item_coverage(np.array([top_box]), item_boxes)[0] >= LOCALISATION_FRACTION)
    scores = {name: float(values.max()) for name, values in per_rule.items()}
    return ScoredScan(scan=scan, scores=scores, top_box=top_box, tile_boxes=decoded.tiles.boxes, tile_suspicion=per_rule[rule],
                      tile_coverage=item_coverage(decoded.tiles.boxes, item_boxes), on_item=on_item)


def _localisation(scored: list[ScoredScan], rule: str, threshold: float) -> dict[str, Any]:
    boxed = [item for item in scored if item.on_item is not None]
    detected = [item for item in boxed if item.scores[rule] >= threshold]
    return {
        "rule": f"top tile shares at least {LOCALISATION_FRACTION:.0%} of the smaller area with the item box",
        "positives_with_box": len(boxed),
        "on_item_of_positives": _fraction(sum(item.on_item for item in boxed), len(boxed)),
        "detected_at_1_percent": len(detected),
        "on_item_of_detected": _fraction(sum(item.on_item for item in detected), len(detected)),
    }


def _by_material(scored: list[ScoredScan], rule: str, threshold: float) -> dict[str, dict[str, int]]:
    # Faint organic items and dense metal ones differ most in how often they are found, so
    # a set whose manifest records materials is broken down by them.
    groups: dict[str, dict[str, int]] = {}
    for item in scored:
        if not item.scan.positive or item.scan.material is None:
            continue
        counts = groups.setdefault(item.scan.material, {"positives": 0, "detected_at_1_percent": 0, "on_item": 0})
        counts["positives"] += 1
        counts["detected_at_1_percent"] += int(item.scores[rule] >= threshold)
        counts["on_item"] += int(bool(item.on_item))
    return dict(sorted(groups.items()))


def _tile_level(scored: list[ScoredScan]) -> dict[str, Any] | None:
    # Tiles on an item in positive scans against every tile of negative scans: how well the
    # network separates single tiles, before the best tile of a scan decides its score.
    on_item = [item.tile_suspicion[item.tile_coverage >= ON_ITEM_FRACTION] for item in scored if item.scan.positive]
    clear = [item.tile_suspicion for item in scored if not item.scan.positive]
    if not on_item or not clear:
        return None
    suspicion = np.concatenate(on_item + clear)
    labels = np.concatenate([np.ones(sum(len(part) for part in on_item)), np.zeros(sum(len(part) for part in clear))])
    try:
        metrics = screening_metrics(suspicion, labels)
    except SingleClassError:
        return None
    return {"on_item_tiles": int(labels.sum()), "clear_tiles": int((labels == 0).sum()), "auc": metrics.auc,
            "detection_at_1_percent": metrics.at_1_percent.detection, "detection_at_0_1_percent": _detection_at(suspicion, labels, 0.001)}


def _detection_at(scores: np.ndarray, labels: np.ndarray, false_alarm: float) -> float:
    from models.metrics import detection_at_false_alarm

    return detection_at_false_alarm(scores, labels, false_alarm).detection


def _fraction(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def _write_examples(scored: list[ScoredScan], config, out: Path, rule: str, threshold: float) -> list[dict[str, Any]]:
    from models.heatmap import add_legend, render_heatmap, save_heatmap
    from models.imaging import load_scan
    from models.inference import decode_target

    positives = sorted((item for item in scored if item.scan.positive), key=lambda item: -item.scores[rule])
    negatives = sorted((item for item in scored if not item.scan.positive), key=lambda item: -item.scores[rule])
    kinds = {
        "hit": [item for item in positives if item.on_item and item.scores[rule] >= threshold],
        "miss": [item for item in reversed(positives) if item.scores[rule] < threshold or item.on_item is False],
        "false-alarm": [item for item in negatives if item.scores[rule] >= threshold] or negatives[:1],
    }

    examples = []
    for kind, items in kinds.items():
        for item in items[:EXAMPLES_PER_KIND]:
            scan = load_scan(item.scan.path, target=decode_target(config))
            image = render_heatmap(scan.pixels, (scan.width, scan.height), item.tile_boxes, item.tile_suspicion,
                                   item.top_box, item.scan.boxes)
            caption = f"{kind}: {item.scan.path.name}, {rule} score {item.scores[rule]:.4f} (1% FA threshold {threshold:.4f})"
            image = add_legend(image, caption, item.tile_suspicion)
            path = out / "examples" / f"{kind}-{item.scan.path.stem}.png"
            save_heatmap(image, path)
            examples.append({"kind": kind, "scan": str(item.scan.path), "png": str(path), "score": item.scores[rule],
                             "top_box": list(item.top_box), "on_item": item.on_item})
    return examples
