"""Write an evaluation as a folder: ``report.md``, ``metrics.json`` and PNG figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.plots import plot_confusion, plot_distance_histograms, plot_roc

SCORE_NAMES = {
    "nearest_positive": "nearest-positive distance",
    "margin": "nearest-negative minus nearest-positive distance",
}


def write_report(out: Path, results: dict[str, Any], arrays: dict[str, Any]) -> Path:
    """Write the report files into ``out`` (created when missing); returns the Markdown file's path."""
    from scheduler.evaluate import dump_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dump_json(results, out / "metrics.json")

    plot_confusion(results["pairs"]["confusion"], out / "confusion.png",
                   f"held-out pairs at threshold {results['pairs']['threshold']:.3f}")
    if "roc" in arrays:
        curves = {}
        for name, curve in arrays["roc"].items():
            auc = results["baseline"]["auc"] if name == "size-only baseline" else results["screening"][name]["auc"]
            curves[SCORE_NAMES.get(name, name)] = (curve.false_alarm, curve.detection, auc)
        plot_roc(curves, out / "roc.png", "per-scan screening on the test split")
    if "nearest_positive" in arrays:
        distances, labels = arrays["nearest_positive"], arrays["labels"]
        plot_distance_histograms(distances[labels == 1], distances[labels == 0], out / "distances.png",
                                 "nearest-positive distance by true class", threshold=results["pairs"]["threshold"])

    path = out / "report.md"
    path.write_text(render_markdown(results))
    return path


def render_markdown(results: dict[str, Any]) -> str:
    """Render the results as a Markdown page that refers to the figures beside it."""
    model, test, pairs = results["model"], results["test"], results["pairs"]
    confusion = pairs["confusion"]
    lines = [
        "# CargoScan evaluation",
        "",
        f"- model: `{Path(model['path']).name}` (sha256 {model['version'][:12]}), starting weights: {model['weights_origin']}",
        f"- preprocessing: {model['preprocess']['image_size']} px, resize mode `{model['preprocess']['resize_mode']}`",
        f"- test set: {test['source']}: {test['positives']} positive and {test['negatives']} negative scans "
        f"({test['unreadable']} unreadable)",
    ]
    if model.get("selection"):
        selection = model["selection"]
        lines.append(f"- checkpoint: epoch {selection['best_epoch']}, kept by {selection['rule']}")
    if "exemplars" in results:
        exemplars = results["exemplars"]
        lines.append(f"- exemplars: {exemplars['source']}: {exemplars['positives']} positive, {exemplars['negatives']} negative")

    lines += [
        "",
        "## Held-out pairs",
        "",
        f"{pairs['count']} pairs of test images (half similar, seed {pairs['seed']}, no pair of two copies from one "
        f"family), predicted similar at distance <= {pairs['threshold']:.3f}.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| pair accuracy | {_rate(pairs['accuracy'])} |",
        f"| precision | {_rate(pairs['precision'])} |",
        f"| recall | {_rate(pairs['recall'])} |",
        f"| F1 | {_rate(pairs['f1'])} |",
        "",
        "| | predicted similar | predicted dissimilar |",
        "|---|---|---|",
        f"| similar | TP {confusion['true_positive']} | FN {confusion['false_negative']} |",
        f"| dissimilar | FP {confusion['false_positive']} | TN {confusion['true_negative']} |",
        "",
        "![confusion matrix](confusion.png)",
    ]
    if "validation_tuned" in pairs:
        tuned = pairs["validation_tuned"]
        lines += [
            "",
            f"At the threshold {tuned['threshold']:.3f}, chosen for the best accuracy on validation pairs, the same test "
            f"pairs give accuracy {_rate(tuned['accuracy'])}, precision {_rate(tuned['precision'])}, recall "
            f"{_rate(tuned['recall'])} and F1 {_rate(tuned['f1'])}.",
        ]
    if "screening" in results:
        lines += _screening_section(results)
    return "\n".join(lines) + "\n"


def _screening_section(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Per-scan screening",
        "",
        "Each test scan is scored against the exemplars; detection is the share of positive scans flagged, "
        "false alarms the share of negative scans flagged. The main score is the nearest-positive distance, "
        "the rule CargoScan flags with.",
        "",
        "| score | ROC AUC | detection at 1% false alarms | detection at 5% false alarms | false alarms at 90% detection |",
        "|---|---|---|---|---|",
    ]
    rows = [(SCORE_NAMES[name], metrics) for name, metrics in results["screening"].items()]
    if "baseline" in results:
        rows.append(("size-only baseline (logistic regression)", results["baseline"]))
    for name, metrics in rows:
        lines.append(
            f"| {name} | {metrics['auc']:.3f} | {_rate(metrics['at_1_percent']['detection'])} "
            f"| {_rate(metrics['at_5_percent']['detection'])} | {_rate(metrics['at_90_percent_detection']['false_alarm'])} |"
        )

    negatives = results["screening"]["nearest_positive"]["negatives"]
    lines += [
        "",
        f"With {negatives} negative test scans the smallest non-zero false-alarm rate is 1/{negatives} "
        f"({1 / negatives:.1%}), so a rate below that can only be met with no false alarm at all.",
    ]

    thresholds = results["thresholds"]
    given = thresholds["given"]
    lines += [
        "",
        f"At the evaluated threshold {given['threshold']:.3f}: detection {_rate(given['detection'])}, "
        f"false alarms {_rate(given['false_alarm'])}.",
    ]
    if "calibrated" in thresholds:
        calibrated = thresholds["calibrated"]
        lines.append(
            f"Calibrated on the validation negatives for {calibrated['target_false_alarm']:.0%} false alarms, the threshold "
            f"is {calibrated['threshold']:.4f} ({_rate(calibrated['validation_false_alarm'])} on "
            f"{calibrated['validation_negatives']} validation negatives); on the test scans it detects "
            f"{_rate(calibrated['detection'])} with {_rate(calibrated['false_alarm'])} false alarms."
        )
    if "baseline" in results:
        lines.append(
            f"The size-only baseline was fitted on {results['baseline']['trained_on']}; its accuracy at probability 0.5 "
            f"is {_rate(results['baseline']['accuracy_at_half'])}."
        )
    lines += ["", "![ROC curves](roc.png)", "", "![nearest-positive distances](distances.png)"]
    return lines


def _rate(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "undefined"
    return f"{value:.3f}"
