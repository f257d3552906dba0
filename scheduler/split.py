"""``cargoscan split``: write a train/validation/test manifest that keeps near-duplicate families together."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from models.families import FamilyRules, find_families, image_signature
from models.splits import SPLITS, ManifestEntry, assign_splits, write_manifest


def split_folders(
    positive: list[Path], negative: list[Path], out: Path, fractions: tuple[float, float, float], seed: int,
    rules: FamilyRules, report=print,
) -> list[ManifestEntry]:
    """Find families among the images, assign splits by family and write the manifest to ``out``."""
    paths = positive + negative
    labels = ["positive"] * len(positive) + ["negative"] * len(negative)
    with ThreadPoolExecutor(max_workers=4) as executor:
        signatures = list(executor.map(image_signature, paths))

    families = find_families(signatures, rules)
    splits = assign_splits(labels, families, fractions, seed)
    entries = [
        ManifestEntry(path=path, label=label, split=split, family=f"f{family:05d}")
        for path, label, split, family in zip(paths, labels, splits, families)
    ]
    settings = {"seed": seed, "fractions": dict(zip(SPLITS, fractions)), "similarity": rules.similarity,
                "size_tolerance": rules.size_tolerance, "same_size": rules.same_size}
    write_manifest(out, entries, settings)

    sizes = Counter(families)
    grouped = sum(size for size in sizes.values() if size > 1)
    report(f"{len(paths)} images in {len(sizes)} families; {grouped} images share a family with another "
           f"(largest family: {max(sizes.values())} images)")
    counts = Counter((entry.split, entry.label) for entry in entries)
    for split in SPLITS:
        report(f"{split}: {counts[(split, 'positive')]} positive, {counts[(split, 'negative')]} negative")
    report(f"wrote {out}")
    return entries
