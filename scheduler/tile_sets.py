"""Labelled scans with their item boxes, for tile training and tile evaluation.

Boxes come from a manifest's ``box`` (one item, as ``cargoscan tip`` writes it) or
``boxes`` (a list) fields, or from annotation files (Pascal VOC, YOLO or CSV) given with
``--annotations``. Boxes from annotation files take precedence.
"""

from __future__ import annotations

from pathlib import Path

from models.annotations import AnnotationError, boxes_for_images
from models.splits import ManifestError, read_manifest, select_split
from models.tile_bank import LabelledScan
from scheduler.labelled import SetError


def labelled_scans(manifest: Path, split: str, annotations: Path | None = None) -> list[LabelledScan]:
    """Read one split of a manifest as labelled scans with boxes; raises :class:`SetError` naming the problem."""
    try:
        entries = select_split(read_manifest(manifest), split)
    except ManifestError as error:
        raise SetError(str(error)) from error

    missing = [str(entry.path) for entry in entries if not entry.path.is_file()]
    if missing:
        raise SetError(f"{len(missing)} files listed in {manifest} are missing, for example {missing[0]}")

    annotated: dict[str, list] = {}
    if annotations is not None:
        try:
            annotated = boxes_for_images([entry.path for entry in entries], annotations)
        except AnnotationError as error:
            raise SetError(str(error)) from error

    scans = []
    for entry in entries:
        boxes = annotated.get(str(entry.path))
        if boxes is None:
            boxes = _manifest_boxes(entry, manifest)
        scans.append(LabelledScan(path=entry.path, positive=entry.label == "positive", boxes=tuple(boxes),
                                  material=_material(entry)))
    return scans


def _material(entry) -> str | None:
    # cargoscan tip records each procedural item's material; item files and other manifests have none.
    item = entry.extra.get("item")
    material = item.get("material") if isinstance(item, dict) else None
    return str(material) if material is not None else None


def _manifest_boxes(entry, manifest: Path) -> list[tuple[int, int, int, int]]:
    raw = entry.extra.get("boxes") or ([entry.extra["box"]] if entry.extra.get("box") else [])
    boxes = []
    for box in raw:
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise SetError(f"manifest {manifest}: invalid box {box!r} for {entry.path}; expected [x0, y0, x1, y1]")
        x0, y0, x1, y1 = (int(value) for value in box)
        if x1 <= x0 or y1 <= y0:
            raise SetError(f"manifest {manifest}: empty box {box!r} for {entry.path}")
        boxes.append((x0, y0, x1, y1))
    return boxes
