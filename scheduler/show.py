"""``cargoscan show SCAN_ID --out FILE.png``: draw a scan with its tile-score heat map and top box.

The tile scores are computed again with the model version and exemplar set of the scan's
latest result, so the picture matches the stored verdict. Whole-scan models have no tiles:
their picture is the scan alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from db import registry
from db.schema import Result, Scan


class ShowError(ValueError):
    """A scan that cannot be drawn; the message names the reason."""


@dataclass(frozen=True)
class ShownScan:
    scan_id: int
    uri: str
    status: str
    flagged: bool | None
    score_rule: str
    score: float
    threshold: float
    box: tuple[int, int, int, int] | None
    tiles: int
    out: Path

    @property
    def verdict(self) -> str:
        return verdict_word(self.flagged)


def verdict_word(flagged: bool | None) -> str:
    """Return the word that the caption and the command line print for a stored verdict."""
    return "flagged" if flagged else "clear"


def show_scan(database, settings, scan_id: int, out: Path) -> ShownScan:
    """Render scan ``scan_id`` to ``out`` as PNG; raises :class:`ShowError` when it cannot."""
    from models.exemplars import rule_score, score
    from models.exemplars import suspicion as tile_suspicion
    from models.heatmap import add_legend, render_heatmap, save_heatmap
    from models.imaging import ScanReadError, load_scan
    from models.inference import decode_one, decode_target
    from models.scan_scoring import embed_tiles
    from worker.scanpaths import resolve_scan_path
    from worker.screener import ScreenerSetupError, build_screener

    scan, result = _latest(database, scan_id)
    if result is None:
        raise ShowError(f"scan {scan_id} ({scan.uri}) has no result yet (status {scan.status}); screen it first")
    try:
        path = resolve_scan_path(scan.uri, settings.scan_root)
        with database.sessions() as session:
            selection = registry.selection_for_exemplar_set(session, result.exemplar_set_id)
        screener = build_screener(database.sessions, settings.model_copy(update={"exemplar_set_id": None}), selection)
    except (ScanReadError, registry.RegistryError, ScreenerSetupError) as error:
        raise ShowError(str(getattr(error, "reason", error))) from error

    try:
        config = screener.preprocess
        decoded = decode_one(path, config, settings.max_image_pixels)
        if not decoded.ok:
            raise ShowError(f"scan {scan_id} cannot be decoded: {decoded.error}")
        pixels = load_scan(path, max_image_pixels=settings.max_image_pixels, target=decode_target(config)).pixels

        box = _stored_box(result)
        if decoded.tiles is None:
            tile_boxes, suspicion = np.zeros((0, 4), dtype=np.int64), np.zeros(0)
        else:
            embeddings = embed_tiles(screener.embedder, [decoded], config, screener.device, screener.inference_options)
            tile_boxes = decoded.tiles.boxes
            verdicts = score(embeddings, screener.exemplars, screener.threshold, screener.score_rule)
            suspicion = tile_suspicion(verdicts, screener.score_rule)
        image = render_heatmap(pixels, (decoded.width, decoded.height), tile_boxes, suspicion, box)
        score_value = rule_score(result.positive_distance, result.negative_distance, screener.score_rule)
        caption = (f"scan {scan.id}: {verdict_word(result.flagged)}, {screener.score_rule} score {score_value:.4f} "
                   f"(threshold {result.threshold:.4f}), model {screener.model_sha256[:12]}")
        save_heatmap(add_legend(image, caption, suspicion if len(suspicion) else None), out)
    finally:
        screener.close()

    return ShownScan(
        scan_id=scan.id, uri=scan.uri, status=scan.status, flagged=result.flagged, score_rule=screener.score_rule,
        score=score_value, threshold=result.threshold,
        box=box, tiles=len(tile_boxes), out=out,
    )


def _latest(database, scan_id: int) -> tuple[Scan, Result | None]:
    with database.sessions() as session:
        scan = session.get(Scan, scan_id)
        if scan is None:
            raise ShowError(f"scan {scan_id} not found; see 'cargoscan results' for scan ids")
        statement = select(Result).where(Result.scan_id == scan_id).order_by(Result.scored_at.desc(), Result.id.desc()).limit(1)
        return scan, session.execute(statement).scalar_one_or_none()


def _stored_box(result: Result) -> tuple[int, int, int, int] | None:
    values = (result.box_x0, result.box_y0, result.box_x1, result.box_y1)
    return None if any(value is None for value in values) else tuple(int(value) for value in values)
