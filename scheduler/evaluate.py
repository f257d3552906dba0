"""``cargoscan evaluate``: pair metrics, per-scan screening metrics and the size-only baseline on a test set.

Screening scores each test scan by its distance to the nearest positive exemplar, which is
the rule that flags scans in production (a lower distance is more suspicious). The report
also lists the nearest-negative minus nearest-positive margin as a second score. The
exemplars are the training split's images unless other ones are given.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from models.metrics import SingleClassError, rates_at_threshold, roc_curve, screening_metrics
from scheduler.labelled import LabelledSet, SetError, embed_paths, from_folders, from_manifest, optional_split, resolve


class EvaluationError(ValueError):
    """An evaluation that cannot run on the given images; the message gives the reason."""


def run_evaluation(args, device, report=print) -> dict[str, Any]:
    """Evaluate ``args.model`` and return the results as a JSON-ready dict; writes the report when ``args.out`` is set."""
    from models.checkpoint import load_checkpoint
    from models.evaluation import accuracy_threshold, held_out_pairs, pair_metrics

    checkpoint = load_checkpoint(args.model, device=device)
    if checkpoint.preprocess.tiles is not None:
        return _evaluate_tiles(args, checkpoint, device, report)

    test, exemplars, validation = _gather_sets(args)
    threshold = args.threshold if args.threshold is not None else checkpoint.threshold

    embeddings, kept, skipped = embed_paths(checkpoint, test.paths, device)
    labels = test.labels[kept]
    families = None if test.families is None else [test.families[index] for index in kept]
    try:
        pairs, distances = held_out_pairs(embeddings, labels, args.pairs, args.seed, families)
    except ValueError as error:
        raise EvaluationError(f"{test.source}: {error}") from error
    metrics = pair_metrics(distances, pairs.similar, threshold)

    report(f"held-out images: {int(labels.sum())} positive, {int((labels == 0).sum())} negative ({len(skipped)} unreadable)")
    report(f"pairs: {metrics.total} (half similar), threshold {threshold:.3f}")
    report(f"pair accuracy {metrics.accuracy:.3f}, precision {metrics.precision:.3f}, recall {metrics.recall:.3f}, "
           f"F1 {metrics.f1:.3f}")
    report(f"confusion (similar = positive class): TP {metrics.true_positive}, FP {metrics.false_positive}, "
           f"TN {metrics.true_negative}, FN {metrics.false_negative}")

    results: dict[str, Any] = {
        "model": {
            "path": str(args.model), "version": checkpoint.version, "threshold": checkpoint.threshold,
            "preprocess": checkpoint.preprocess.to_dict(), "weights_origin": checkpoint.metadata.get("weights_origin"),
            "selection": checkpoint.metadata.get("selection"),
        },
        "test": {"source": test.source, "positives": int(labels.sum()), "negatives": int((labels == 0).sum()),
                 "unreadable": len(skipped)},
        "pairs": {"count": metrics.total, "seed": args.seed, "threshold": threshold, "accuracy": metrics.accuracy,
                  "precision": metrics.precision, "recall": metrics.recall, "f1": metrics.f1,
                  "confusion": {"true_positive": metrics.true_positive, "false_positive": metrics.false_positive,
                                "true_negative": metrics.true_negative, "false_negative": metrics.false_negative}},
    }
    arrays: dict[str, Any] = {}

    held_out = _embed_validation(checkpoint, validation, device) if validation is not None else None
    if held_out is not None:
        # The pair threshold is chosen on validation pairs only, so the test pairs stay unseen.
        validation_embeddings, validation_labels, validation_families = held_out
        validation_pairs, validation_distances = held_out_pairs(
            validation_embeddings, validation_labels, args.pairs, args.seed + 1, validation_families
        )
        tuned_threshold = accuracy_threshold(validation_distances, validation_pairs.similar)
        tuned = pair_metrics(distances, pairs.similar, tuned_threshold)
        results["pairs"]["validation_tuned"] = {
            "threshold": tuned_threshold, "accuracy": tuned.accuracy, "precision": tuned.precision,
            "recall": tuned.recall, "f1": tuned.f1,
        }
        report(f"pair accuracy {tuned.accuracy:.3f} at threshold {tuned_threshold:.3f} (chosen for accuracy on validation pairs)")

    if exemplars is not None:
        _screen(results, arrays, checkpoint, device, embeddings, labels, exemplars, held_out, threshold, args, report)
        _baseline(results, arrays, exemplars, [test.paths[index] for index in kept], labels, report)
    else:
        report("screening metrics skipped: no exemplar set (use --manifest with a train split, or --exemplar-positive)")

    if args.out is not None:
        from scheduler.evaluation_report import write_report

        written = write_report(args.out, results, arrays)
        report(f"wrote {written}")
    return results


def _evaluate_tiles(args, checkpoint, device, report) -> dict[str, Any]:
    from scheduler.tile_evaluation import TileEvaluationError, evaluate_tiles
    from scheduler.tile_sets import labelled_scans

    if args.manifest is None:
        raise EvaluationError("evaluating a tile-mode model needs --manifest (with item boxes, or with --annotations)")
    try:
        test = labelled_scans(args.manifest, args.split, args.annotations)
        exemplars = labelled_scans(args.manifest, args.exemplar_split, args.annotations)
        results = evaluate_tiles(checkpoint, test, exemplars, device, args.max_clear_exemplars, args.seed, args.out, report)
    except (SetError, TileEvaluationError) as error:
        raise EvaluationError(str(error)) from error

    results["model"]["path"] = str(args.model)
    if getattr(args, "whole_model", None) is not None:
        results["whole_scan"] = _whole_scan_comparison(args, device, results, report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        dump_json(results, args.out / "metrics.json")
        report(f"wrote {args.out / 'metrics.json'}")
    return results


def _whole_scan_comparison(args, device, tile_results: dict[str, Any], report) -> dict[str, Any]:
    # A whole-scan model is scored on the same test scans and exemplar split, so the tile
    # report can show both modes side by side.
    from argparse import Namespace

    whole_args = Namespace(**{**vars(args), "model": args.whole_model, "out": None, "whole_model": None})
    whole = run_evaluation(whole_args, device, report=lambda line: None)
    if whole.get("mode") == "tiles":
        raise EvaluationError(f"{args.whole_model} is a tile-mode model; --whole-model takes a whole-scan checkpoint")
    if whole.get("screening") is None:
        raise EvaluationError(f"{args.whole_model}: no screening metrics; the manifest needs an exemplar split")

    whole_metrics = whole["screening"]["nearest_positive"]
    tile_metrics = tile_results["screening"][tile_results["score_rule"]]
    report("mode        ROC AUC  detection at 1% FA  at 5% FA")
    for name, metrics in (("whole scan", whole_metrics), ("tiles", tile_metrics)):
        report(f"{name:<11} {metrics['auc']:.3f}    {metrics['at_1_percent']['detection']:.3f}               "
               f"{metrics['at_5_percent']['detection']:.3f}")
    return {"model": str(args.whole_model), "version": whole["model"]["version"], "screening": whole_metrics}


def _gather_sets(args) -> tuple[LabelledSet, LabelledSet | None, LabelledSet | None]:
    try:
        test = resolve(args.manifest, args.split, args.positive, args.negative, "test")
        exemplars = None
        validation = None
        if args.manifest is not None:
            if args.exemplar_split != "none":
                exemplars = from_manifest(args.manifest, args.exemplar_split)
            validation = optional_split(args.manifest, args.validation_split)
        elif args.exemplar_positive is not None:
            exemplars = from_folders(args.exemplar_positive, args.exemplar_negative)
    except SetError as error:
        raise EvaluationError(str(error)) from error
    return test, exemplars, validation


def _embed_validation(checkpoint, validation: LabelledSet, device):
    embeddings, kept, _ = embed_paths(checkpoint, validation.paths, device)
    labels = validation.labels[kept]
    families = None if validation.families is None else [validation.families[index] for index in kept]
    if (labels == 1).sum() < 2 or (labels == 0).sum() < 2:
        return None
    return embeddings, labels, families


def _screen(results, arrays, checkpoint, device, embeddings, labels, exemplars, held_out, threshold, args, report) -> None:
    from models.calibration import calibrate_threshold
    from models.exemplars import ExemplarIndex

    exemplar_embeddings, exemplar_kept, _ = embed_paths(checkpoint, exemplars.paths, device)
    exemplar_labels = exemplars.labels[exemplar_kept]
    if not (exemplar_labels == 1).any():
        raise EvaluationError(f"{exemplars.source}: no readable positive exemplar")
    positives = ExemplarIndex(exemplar_embeddings[exemplar_labels == 1], np.flatnonzero(exemplar_labels == 1))
    nearest_positive = positives.nearest(embeddings).distance.astype(np.float64)

    try:
        scores = {"nearest_positive": -nearest_positive}
        if (exemplar_labels == 0).any():
            negatives = ExemplarIndex(exemplar_embeddings[exemplar_labels == 0], np.flatnonzero(exemplar_labels == 0))
            scores["margin"] = negatives.nearest(embeddings).distance.astype(np.float64) - nearest_positive
        screening = {name: asdict(screening_metrics(values, labels)) for name, values in scores.items()}
        deployed = rates_at_threshold(-nearest_positive, labels, -threshold)
    except SingleClassError as error:
        raise EvaluationError(f"{args.manifest or 'the test folders'}: {error}") from error

    results["exemplars"] = {"source": exemplars.source, "positives": int((exemplar_labels == 1).sum()),
                            "negatives": int((exemplar_labels == 0).sum())}
    results["screening"] = screening
    results["thresholds"] = {"given": {"threshold": threshold, "detection": deployed.detection,
                                       "false_alarm": deployed.false_alarm}}
    arrays["nearest_positive"] = nearest_positive
    arrays["labels"] = labels
    arrays["roc"] = {name: roc_curve(values, labels) for name, values in scores.items()}

    main = screening["nearest_positive"]
    report(f"screening ({main['positives']} positive, {main['negatives']} negative scans; score = nearest-positive distance): "
           f"ROC AUC {main['auc']:.3f}, detection {main['at_1_percent']['detection']:.3f} at 1% false alarms, "
           f"{main['at_5_percent']['detection']:.3f} at 5%, false alarms {main['at_90_percent_detection']['false_alarm']:.3f} "
           f"at 90% detection")

    if held_out is not None:
        validation_embeddings, validation_labels, _ = held_out
        validation_distances = positives.nearest(validation_embeddings).distance.astype(np.float64)
        calibration = calibrate_threshold(validation_distances[validation_labels == 0], args.far)
        on_test = rates_at_threshold(-nearest_positive, labels, -calibration.threshold)
        results["thresholds"]["calibrated"] = {
            "target_false_alarm": args.far, "threshold": calibration.threshold,
            "validation_false_alarm": calibration.achieved_false_alarm, "validation_negatives": calibration.negatives,
            "detection": on_test.detection, "false_alarm": on_test.false_alarm,
        }
        report(f"threshold calibrated on validation negatives for {args.far:.0%} false alarms: {calibration.threshold:.4f}; "
               f"on the test scans it detects {on_test.detection:.3f} with {on_test.false_alarm:.3f} false alarms")


def _baseline(results, arrays, exemplars: LabelledSet, test_paths: list[Path], labels: np.ndarray, report) -> None:
    from models.baseline import LogisticRegression, size_features

    if not exemplars.positives or not exemplars.negatives:
        report("size-only baseline skipped: its training images need both classes")
        return

    model = LogisticRegression().fit(size_features(exemplars.paths), exemplars.labels)
    probability = model.predict_proba(size_features(test_paths))
    metrics = screening_metrics(probability, labels)
    accuracy = float(((probability >= 0.5) == (labels == 1)).mean())
    results["baseline"] = {"trained_on": exemplars.source, "accuracy_at_half": accuracy, **asdict(metrics)}
    arrays.setdefault("roc", {})["size-only baseline"] = roc_curve(probability, labels)
    report(f"size-only baseline (width, height, aspect ratio, file size): ROC AUC {metrics.auc:.3f}, "
           f"detection {metrics.at_1_percent.detection:.3f} at 1% false alarms, {metrics.at_5_percent.detection:.3f} at 5%, "
           f"accuracy {accuracy:.3f}")


def dump_json(results: dict[str, Any], path: Path) -> None:
    """Write results as indented JSON; NaN (an undefined rate) becomes null."""
    path.write_text(json.dumps(_finite(results), indent=1, sort_keys=True) + "\n")


def _finite(value):
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else str(value)
    return value
