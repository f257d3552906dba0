"""``cargoscan tip``: build a labelled threat image projection set from clean scans.

The clean scans are first split into train, validation and test by family, so a test scan
never shares a background with a training scan. Within each split, half of the scans
(shuffled) receive an item and become positives. The other half are re-encoded without one
and become negatives, so no background appears in both classes.

A paired set instead writes every clean scan twice, once re-encoded as a negative and once
with an item as a positive, in the same split. The two classes then differ only by the
item, and a held-out split has twice as many scans of each class.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.families import FamilyRules, find_families, image_signature
from models.splits import SPLITS, ManifestEntry, assign_splits, write_manifest
from models.tip import TipConfig, crop_visible, generate_item, project
from models.tip_io import decode_transmission, encode_transmission


@dataclass(frozen=True)
class TipSetSummary:
    positives: int
    negatives: int
    failed: list[tuple[str, str]]
    manifest: Path


def build_tip_set(
    scans: list[Path], out: Path, items: list[Path], config: TipConfig, fractions: tuple[float, float, float],
    seed: int, max_side: int | None, report=print, paired: bool = False,
) -> TipSetSummary:
    """Write positives, negatives and ``manifest.json`` (with each item's box) under ``out``.

    With ``paired`` every scan yields a negative and a positive; otherwise each yields one.
    """
    rng = np.random.default_rng(seed)
    with ThreadPoolExecutor(max_workers=4) as executor:
        signatures = list(executor.map(image_signature, scans))
    families = find_families(signatures, FamilyRules())
    splits = assign_splits(["negative"] * len(scans), families, fractions, seed)
    item_bank = [crop_visible(decode_transmission(path)) for path in items]

    # Alternating roles along a shuffled order gives each split half positives, half negatives.
    roles: dict[int, str] = {}
    for split in SPLITS:
        members = [index for index, name in enumerate(splits) if name == split]
        for position, index in enumerate(rng.permutation(members) if members else []):
            roles[int(index)] = "positive" if position % 2 == 0 else "negative"

    entries: list[ManifestEntry] = []
    failed: list[tuple[str, str]] = []
    for index, path in enumerate(scans):
        try:
            scan = _decode(path, max_side)
        except ValueError as error:
            failed.append((str(path), str(error)))
            report(f"skipped {path}: {error}")
            continue

        for label in ("negative", "positive") if paired else (roles[index],):
            target = out / label / f"{path.stem}{'_tip' if label == 'positive' else ''}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                entry_extra = _write_one(scan, target, label, item_bank, rng, config)
            except ValueError as error:
                failed.append((str(path), str(error)))
                report(f"skipped {path} as {label}: {error}")
                continue
            entry_extra["source"] = str(path.resolve())
            entries.append(ManifestEntry(path=target, label=label, split=splits[index], family=f"f{families[index]:05d}",
                                         extra=entry_extra))

    manifest = out / "manifest.json"
    settings = {"seed": seed, "fractions": dict(zip(SPLITS, fractions)), "max_side": max_side,
                "items": [str(path) for path in items] or "procedural", "scale": list(config.scale),
                "rotation_degrees": config.rotation_degrees, "thickness": list(config.thickness), "paired": paired}
    write_manifest(manifest, entries, settings)

    counts = Counter((entry.split, entry.label) for entry in entries)
    for split in SPLITS:
        report(f"{split}: {counts[(split, 'positive')]} positive, {counts[(split, 'negative')]} negative")
    report(f"wrote {manifest}")
    positives = sum(entry.label == "positive" for entry in entries)
    return TipSetSummary(positives=positives, negatives=len(entries) - positives, failed=failed, manifest=manifest)


def _decode(source: Path, max_side: int | None) -> np.ndarray:
    from models.imaging import ScanReadError

    try:
        return decode_transmission(source, max_side)
    except ScanReadError as error:
        raise ValueError(error.reason) from error


def _write_one(scan: np.ndarray, target: Path, label: str, item_bank, rng, config: TipConfig) -> dict:
    if label == "negative":
        encode_transmission(target, scan)
        return {}

    if item_bank:
        choice = int(rng.integers(len(item_bank)))
        item, description = item_bank[choice], {"kind": "file", "index": choice}
    else:
        item, kind, material = generate_item(rng)
        description = {"kind": kind, "material": material}
    projection = project(scan, item, rng, config)
    encode_transmission(target, projection.composed)
    description.update(scale=projection.scale, angle_degrees=projection.angle_degrees, thickness=projection.thickness)
    return {"box": list(projection.box), "item": description}
