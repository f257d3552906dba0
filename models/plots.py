"""PNG figures of training and evaluation, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_training_curves(history: Sequence, out: Path, best_epoch: int | None = None) -> Path:
    """Plot per-epoch loss and pair accuracy (training, and validation where present) from ``EpochStats``."""
    epochs = [stats.epoch for stats in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))

    loss_axis.plot(epochs, [stats.loss for stats in history], marker="o", label="training")
    accuracy_axis.plot(epochs, [stats.pair_accuracy for stats in history], marker="o", label="training")
    if any(stats.validation_loss is not None for stats in history):
        loss_axis.plot(epochs, [stats.validation_loss for stats in history], marker="s", label="validation")
        accuracy_axis.plot(epochs, [stats.validation_pair_accuracy for stats in history], marker="s", label="validation")

    for axis, title in ((loss_axis, "contrastive loss"), (accuracy_axis, "pair accuracy")):
        if best_epoch:
            axis.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"kept epoch {best_epoch}")
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
    # The first epoch from random weights starts orders of magnitude higher than the rest.
    loss_axis.set_yscale("log")
    accuracy_axis.set_ylim(0.0, 1.0)
    return _save(figure, out)


def plot_confusion(counts: Mapping[str, int], out: Path, title: str) -> Path:
    """Draw a 2 x 2 heat map of pair outcomes, rows the true relation and columns the prediction."""
    matrix = np.array([
        [counts["true_positive"], counts["false_negative"]],
        [counts["false_positive"], counts["true_negative"]],
    ])
    figure, axis = plt.subplots(figsize=(4.5, 4))
    image = axis.imshow(matrix, cmap="Blues")
    for row in range(2):
        for column in range(2):
            colour = "white" if matrix[row, column] > matrix.max() / 2 else "black"
            axis.text(column, row, str(matrix[row, column]), ha="center", va="center", color=colour, fontsize=14)

    axis.set_xticks([0, 1], ["predicted similar", "predicted dissimilar"])
    axis.set_yticks([0, 1], ["similar", "dissimilar"])
    axis.set_title(title)
    figure.colorbar(image, ax=axis, fraction=0.046)
    return _save(figure, out)


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], out: Path, title: str) -> Path:
    """Draw ROC curves; ``curves`` maps a name to (false-alarm rates, detection rates, AUC)."""
    figure, axis = plt.subplots(figsize=(7, 6))
    for name, (false_alarm, detection, auc) in curves.items():
        # Straight segments between operating points, matching the trapezoidal AUC (a tie is a diagonal step).
        axis.plot(false_alarm, detection, label=f"{name} (AUC {auc:.3f})")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    for rate in (0.01, 0.05):
        axis.axvline(rate, color="grey", linestyle="--", linewidth=0.8)

    axis.set_xlabel("false-alarm rate (negatives flagged)")
    axis.set_ylabel("detection rate (positives flagged)")
    axis.set_title(title)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.01)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize="small")
    return _save(figure, out)


def plot_distance_histograms(positive: np.ndarray, negative: np.ndarray, out: Path, title: str,
                             threshold: float | None = None) -> Path:
    """Overlay histograms of the nearest-positive distances of positive and negative scans."""
    figure, axis = plt.subplots(figsize=(6, 4))
    values = np.concatenate([positive, negative])
    bins = np.linspace(float(values.min()), float(values.max()) + 1e-9, 30) if len(values) else 10
    axis.hist(negative, bins=bins, alpha=0.6, label=f"negative scans ({len(negative)})")
    axis.hist(positive, bins=bins, alpha=0.6, label=f"positive scans ({len(positive)})")
    if threshold is not None:
        axis.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}")

    axis.set_xlabel("distance to the nearest positive exemplar")
    axis.set_ylabel("scans")
    axis.set_title(title)
    axis.legend()
    return _save(figure, out)


def _save(figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
