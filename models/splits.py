"""Split manifests: which image belongs to train, validation or test, by family.

A manifest lists every image with its label, split and family. Families of near-duplicates
(see :mod:`models.families`) always land in one split, and each label is split separately
so every split keeps the class balance of the whole set. Paths are stored relative to the
manifest's folder, so a manifest can sit outside the repository next to data that must not
be copied into it.

Two formats carry the same columns: JSON (``.json``, with the settings that made the split)
and CSV (any other suffix, header ``path,label,split,family``). Extra columns, such as the
item boxes of a threat image projection set, are kept when reading.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "validation", "test")
LABELS = ("positive", "negative")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
MANIFEST_FORMAT = "cargoscan-split-manifest"

_COLUMNS = ("path", "label", "split", "family")


class ManifestError(ValueError):
    """A manifest that cannot be read or used as requested."""


@dataclass(frozen=True)
class ManifestEntry:
    """One image: its path (resolved against the manifest's folder on reading), label, split and family."""

    path: Path
    label: str
    split: str
    family: str
    extra: Mapping[str, Any] = field(default_factory=dict)


def parse_fractions(text: str) -> tuple[float, float, float]:
    """Parse ``"0.7,0.15,0.15"`` into train, validation and test fractions that sum to 1."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError as error:
        raise ValueError(f"fractions must be three numbers separated by commas, got {text!r}") from error
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1 (train,validation,test), got {text!r}")
    return values  # type: ignore[return-value]


def assign_splits(
    labels: Sequence[str], families: Sequence[int | str], fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0
) -> list[str]:
    """Assign each image a split so that every family lies in one split; returns one split name per image.

    Families are shuffled with ``seed`` and handed one at a time to the split that is
    furthest below its share of that label's images. A family whose images carry both
    labels counts under the label of its majority.
    """
    if len(labels) != len(families):
        raise ValueError(f"expected one family per image, got {len(labels)} labels and {len(families)} families")
    if len(fractions) != len(SPLITS):
        raise ValueError(f"expected {len(SPLITS)} fractions (train, validation, test), got {len(fractions)}")

    members: dict[int | str, list[int]] = {}
    for index, family in enumerate(families):
        members.setdefault(family, []).append(index)

    rng = np.random.default_rng(seed)
    result = [""] * len(labels)
    for label in sorted(set(labels)):
        group = [family for family, indices in members.items() if _majority_label(labels, indices) == label]
        total = sum(len(members[family]) for family in group)
        targets = np.array(fractions, dtype=np.float64) * total
        filled = np.zeros(len(SPLITS))

        for position in rng.permutation(len(group)):
            family = group[position]
            # Ties go to the earliest split in (test, validation, train) order, so small sets still get a test image.
            need = targets - filled
            order = sorted(range(len(SPLITS)), key=lambda split: (-need[split], -split))
            chosen = order[0]
            filled[chosen] += len(members[family])
            for index in members[family]:
                result[index] = SPLITS[chosen]
    return result


def _majority_label(labels: Sequence[str], indices: list[int]) -> str:
    values = [labels[index] for index in indices]
    return max(sorted(set(values)), key=values.count)


def write_manifest(path: str | os.PathLike[str], entries: Sequence[ManifestEntry], settings: Mapping[str, Any] | None = None) -> None:
    """Write entries as JSON (``.json``) or CSV, with paths relative to the manifest's folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    rows = []
    for entry in entries:
        row = {"path": os.path.relpath(Path(entry.path).resolve(), base), "label": entry.label, "split": entry.split,
               "family": entry.family}
        row.update(entry.extra)
        rows.append(row)

    if path.suffix.lower() == ".json":
        document = {"format": MANIFEST_FORMAT, "settings": dict(settings or {}), "entries": rows}
        path.write_text(json.dumps(document, indent=1) + "\n")
        return

    extra_columns = sorted({key for row in rows for key in row} - set(_COLUMNS))
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=[*_COLUMNS, *extra_columns])
        writer.writeheader()
        for row in rows:
            writer.writerow({key: json.dumps(value) if isinstance(value, (list, dict)) else value for key, value in row.items()})


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestEntry]:
    """Read a JSON or CSV manifest; raises :class:`ManifestError` naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")

    if path.suffix.lower() == ".json":
        try:
            document = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ManifestError(f"manifest {path} is not valid JSON: {error}") from error
        rows = document.get("entries") if isinstance(document, dict) else document
        if not isinstance(rows, list):
            raise ManifestError(f"manifest {path} has no 'entries' list")
    else:
        with path.open(newline="") as stream:
            rows = list(csv.DictReader(stream))

    base = path.parent
    entries = []
    for number, row in enumerate(rows, start=1):
        missing = [column for column in ("path", "label", "split") if not row.get(column)]
        if missing:
            raise ManifestError(f"manifest {path}, entry {number}: missing {', '.join(missing)}")
        if row["label"] not in LABELS:
            raise ManifestError(f"manifest {path}, entry {number}: label must be one of {LABELS}, got {row['label']!r}")
        extra = {key: value for key, value in row.items() if key not in _COLUMNS}
        entries.append(ManifestEntry(
            path=base / row["path"], label=row["label"], split=row["split"],
            family=str(row.get("family") or row["path"]), extra=extra,
        ))
    return entries


def select_split(entries: Sequence[ManifestEntry], split: str) -> list[ManifestEntry]:
    """Return the entries of one split; raises :class:`ManifestError` when it has none."""
    chosen = [entry for entry in entries if entry.split == split]
    if not chosen:
        present = sorted({entry.split for entry in entries})
        raise ManifestError(f"the manifest has no images in split {split!r}; splits present: {', '.join(present)}")
    return chosen


def split_paths(entries: Sequence[ManifestEntry], split: str) -> tuple[list[Path], list[Path]]:
    """Return the positive and the negative paths of one split."""
    chosen = select_split(entries, split)
    positives = [entry.path for entry in chosen if entry.label == "positive"]
    negatives = [entry.path for entry in chosen if entry.label == "negative"]
    return positives, negatives
