"""Exemplar-only rescoring from stored embeddings against re-embedding every scan.

Run: .venv/bin/python -m bench.rescore_bench [--scans N]

Both paths give each scan a result from a new exemplar set of the same model, on the same
synthetic container scans (384x160 px, 16-bit PNG) and a 224 px random-weight checkpoint.
Re-embedding decodes, preprocesses and runs the network over every scan; the exemplar-only
path reads the embeddings stored when the scans were first screened.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from sqlalchemy import func, select, update

from bench.common import format_load, load_average
from db import registry, repository
from db.embeddings import upsert_embeddings
from db.database import open_database
from db.schema import SCAN_DONE, Result, Scan, ScanEmbedding
from models.checkpoint import save_checkpoint
from models.embedder import SiameseEmbedder
from models.preprocess import PreprocessConfig
from models.synthetic import render_dataset
from scheduler.enroll import enroll
from scheduler.rescore import rescore_archive
from scheduler.screen import screen_folder
from worker.settings import Settings


def run(scans: int, extra: int, work: Path) -> dict[str, float]:
    """Screen ``scans`` scans, then give them results from a second exemplar set both ways; returns timings.

    ``extra`` archived scans are added with copies of the stored embeddings, so the
    exemplar-only path is timed at archive scale rather than on its fixed start-up cost.
    """
    archive = work / "archive"
    render_dataset(archive, scans // 2, scans - scans // 2, seed=1)
    exemplars = render_dataset(work / "exemplars", 4, 4, seed=2)
    torch.manual_seed(0)
    checkpoint = work / "model.pt"
    save_checkpoint(checkpoint, SiameseEmbedder().eval(), PreprocessConfig(image_size=224))

    url = f"sqlite:///{work / 'bench.db'}"
    database = open_database(url)
    settings = Settings(database_url=url, metrics_port=0, scan_root=archive)
    enroll(database.sessions, checkpoint, exemplars["positive"][:2], exemplars["negative"][:2], name="first")
    screen_folder(database, settings, archive)

    _add_archived_copies(database, extra)
    second = enroll(database.sessions, checkpoint, exemplars["positive"][2:], exemplars["negative"][2:], name="second")
    with database.sessions.begin() as session:
        registry.activate(session, second.model_version_id, second.exemplar_set_id)

    started = time.perf_counter()
    summary = rescore_archive(database, settings, progress=False)
    from_embeddings_s = time.perf_counter() - started
    if summary.scored_from_embeddings != scans + extra:
        raise RuntimeError(f"expected {scans + extra} scans scored from embeddings, got {summary.scored_from_embeddings}")

    # Re-embedding the archive against the same set: the path a model update must take.
    started = time.perf_counter()
    screen_folder(database, settings.model_copy(update={"exemplar_set_id": second.exemplar_set_id}), archive)
    reembed_s = time.perf_counter() - started

    with database.sessions() as session:
        rows = session.execute(select(func.count()).select_from(Result).where(Result.exemplar_set_id == second.exemplar_set_id)).scalar_one()
    database.dispose()
    return {"scans": scans, "stored_scans": scans + extra, "rows": rows, "from_embeddings_s": from_embeddings_s, "reembed_s": reembed_s}


def _add_archived_copies(database, count: int) -> None:
    """Record ``count`` more screened scans whose stored embeddings copy those of the real ones."""
    with database.sessions.begin() as session:
        version_id = registry.active_selection(session).model_version_id
        stored = session.execute(select(ScanEmbedding.embedding)).scalars().all()
        uris = [f"/archive/copy_{index:07d}.png" for index in range(count)]
        recorded = repository.register_scans(session, uris)
        ids = [recorded[uri][0] for uri in uris]
        session.execute(update(Scan).where(Scan.id.in_(ids)).values(status=SCAN_DONE))
        upsert_embeddings(session, version_id, [(scan_id, stored[index % len(stored)]) for index, scan_id in enumerate(ids)], "float32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=200, help="scans screened from image files")
    parser.add_argument("--extra", type=int, default=20_000, help="archived scans added as copies of stored embeddings")
    args = parser.parse_args()

    before = load_average()
    with tempfile.TemporaryDirectory(prefix="cargoscan-rescore-") as folder:
        figures = run(args.scans, args.extra, Path(folder))
    after = load_average()

    reembed_rate = figures["scans"] / figures["reembed_s"]
    stored_rate = figures["stored_scans"] / figures["from_embeddings_s"]
    print(f"load average before {format_load(before)}, after {format_load(after)}")
    print(f"{'path':<34}{'scans':>8}{'seconds':>10}{'scans/s':>12}")
    print(f"{'re-embed (decode + network)':<34}{figures['scans']:>8}{figures['reembed_s']:>10.2f}{reembed_rate:>12.1f}")
    print(f"{'stored embeddings (no network)':<34}{figures['stored_scans']:>8}{figures['from_embeddings_s']:>10.2f}{stored_rate:>12.1f}")
    print(f"speed-up of the exemplar-only path per scan: {stored_rate / reembed_rate:.0f}x (goal: at least 100x)")
    print(f"result rows for the new exemplar set: {figures['rows']} (expected {figures['stored_scans']})")


if __name__ == "__main__":
    main()
