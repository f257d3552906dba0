"""The size-only baseline: logistic regression on image width, height, aspect ratio and file size.

In public X-ray sets these file properties often separate the classes on their own. Any
model result is only meaningful next to what this baseline gets on the same split.
Features are logarithms because sizes span an order of magnitude. They are standardised
with the training images' mean and standard deviation, and the fit is L2-regularised
Newton's method in numpy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

FEATURE_NAMES = ("log width", "log height", "log aspect ratio", "log file size")


def size_features(paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
    """Read (N, 4) features from the image headers and file sizes, without decoding pixels."""
    rows = []
    for path in paths:
        with Image.open(path) as image:
            width, height = image.size
        rows.append([np.log(width), np.log(height), np.log(width / height), np.log(max(os.path.getsize(path), 1))])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))


@dataclass
class LogisticRegression:
    """Binary logistic regression with an L2 penalty on the weights (not the intercept)."""

    l2: float = 1e-2
    iterations: int = 100
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    weights: np.ndarray | None = None

    def fit(self, features: np.ndarray, labels: np.ndarray) -> LogisticRegression:
        """Fit on (N, F) features and (N,) labels in {0, 1} by Newton's method."""
        labels = np.asarray(labels, dtype=np.float64)
        if len(np.unique(labels)) != 2:
            raise ValueError("the size baseline needs training images of both classes")

        self.mean = features.mean(axis=0)
        self.scale = features.std(axis=0)
        self.scale[self.scale == 0] = 1.0
        design = self._design(features)
        penalty = np.eye(design.shape[1]) * self.l2 * len(labels)
        penalty[0, 0] = 0.0

        weights = np.zeros(design.shape[1])
        for _ in range(self.iterations):
            probability = _sigmoid(design @ weights)
            gradient = design.T @ (probability - labels) + penalty @ weights
            hessian = design.T @ (design * (probability * (1 - probability))[:, None]) + penalty
            step = np.linalg.solve(hessian + 1e-9 * np.eye(len(weights)), gradient)
            weights -= step
            if np.abs(step).max() < 1e-10:
                break
        self.weights = weights
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Return P(positive) for each row of (N, F) features."""
        if self.weights is None:
            raise RuntimeError("fit the model before predicting")
        return _sigmoid(self._design(features) @ self.weights)

    def _design(self, features: np.ndarray) -> np.ndarray:
        standardised = (features - self.mean) / self.scale
        return np.hstack([np.ones((len(features), 1)), standardised])


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(values, -500, 500)))
