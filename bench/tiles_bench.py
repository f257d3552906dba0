"""Tile-mode throughput on the real cargo scans: scans per second and tiles per second.

For each tile geometry, the bare forward pass over random tiles at the tile batch size is
measured first. Then the in-process pipeline (decode, scale, tile, embed, compare with the
exemplar tiles, write) screens the cargo scans, and the table shows the two side by side.
Run from the repository root: ``python -m bench.tiles_bench [--quick]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sqlalchemy import select

from bench.common import DATA_ROOT, database_url, section, temporary_database
from db import repository
from db.schema import Scan
from models.checkpoint import save_checkpoint
from models.embedder import SiameseEmbedder
from models.preprocess import PreprocessConfig
from models.scanfiles import list_scan_files
from models.tiling import tile_count
from scheduler.enroll import enroll
from scheduler.screen import screen_in_batches
from worker.pipeline import ScanJob
from worker.screener import build_screener
from worker.settings import Settings

GEOMETRIES = ((448, 112, 56), (256, 64, 32))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 scans per geometry instead of every cargo scan")
    parser.add_argument("--scan-batch", type=int, default=8, help="scans per pipeline batch (default 8)")
    parser.add_argument("--tile-batch", type=int, default=256, help="tiles per forward pass (default 256)")
    arguments = parser.parse_args()

    scans = list_scan_files(DATA_ROOT / "cargo")
    if not scans:
        print(f"no cargo scans under {DATA_ROOT / 'cargo'}; nothing to measure")
        return 1
    scans = scans[:: max(1, len(scans) // 12)][:12] if arguments.quick else scans

    with tempfile.TemporaryDirectory() as folder, section(
        "Tile mode, in-process, cargo scans",
        ["scan height / tile / stride", "scans", "tiles per scan", "scans/s", "tiles/s", "bare fwd tiles/s", "pipeline / bare"],
    ) as table:
        for height, tile, stride in GEOMETRIES:
            config = PreprocessConfig(image_size=tile, mode="tiles", tile_scan_height=height, tile_stride=stride, intensity="log")
            bare = _bare_tiles_per_second(tile, arguments.tile_batch)
            scans_per_second, tiles = _pipeline(Path(folder), config, scans, arguments)
            tiles_per_second = scans_per_second * tiles / len(scans)
            table.add(f"{height} / {tile} / {stride}", len(scans), tiles / len(scans), scans_per_second, tiles_per_second, bare,
                      f"{tiles_per_second / bare:.2f}")
        table.note(f"{torch.get_num_threads()} torch threads, scan batch {arguments.scan_batch}, tile batch {arguments.tile_batch}, "
                   "SQLite (WAL); random weights, since speed does not depend on them")
    print(table.render())
    return 0


def _bare_tiles_per_second(tile: int, batch: int, min_seconds: float = 5.0) -> float:
    torch.manual_seed(0)
    embedder = SiameseEmbedder().eval()
    images = torch.rand(batch, 3, tile, tile)
    with torch.inference_mode():
        embedder(images)
        started, done = time.perf_counter(), 0
        while time.perf_counter() - started < min_seconds:
            embedder(images)
            done += batch
    return done / (time.perf_counter() - started)


def _pipeline(folder: Path, config: PreprocessConfig, scans: list[Path], arguments) -> tuple[float, int]:
    torch.manual_seed(0)
    checkpoint = folder / f"tiles-{config.image_size}.pt"
    save_checkpoint(checkpoint, SiameseEmbedder().eval(), config, threshold=1.0, metadata={"purpose": "benchmark"})

    with temporary_database(folder, "sqlite") as database:
        # Two scans as exemplars, one with a made-up item box: enough item and clear tiles
        # for the comparison step, whose cost grows with the exemplar count.
        exemplar_positive, exemplar_negative = scans[0], scans[-1]
        enroll(database.sessions, checkpoint, [exemplar_positive], [exemplar_negative], name="benchmark",
               boxes={str(exemplar_positive): [(100, 100, 400, 400)]})
        settings = Settings(database_url=database_url(database), scan_root=DATA_ROOT, metrics_port=0, tile_batch_size=arguments.tile_batch)
        screener = build_screener(database.sessions, settings)
        try:
            uris = [str(path) for path in scans]
            with database.sessions.begin() as session:
                recorded = repository.register_scans(session, uris)
            jobs = [ScanJob(scan_id=recorded[uri][0], uri=uri) for uri in uris]

            # One batch first, so one-time costs (kernel selection, allocator) are not timed.
            list(screen_in_batches(screener, database.sessions, jobs[: arguments.scan_batch], arguments.scan_batch, prefetch=False))
            started = time.perf_counter()
            for _ in screen_in_batches(screener, database.sessions, jobs, arguments.scan_batch, prefetch=True):
                pass
            seconds = time.perf_counter() - started
        finally:
            screener.close()

        # The pipeline records each scan's full size, which is what the tiles are cut from.
        with database.sessions() as session:
            sizes = session.execute(select(Scan.width, Scan.height).where(Scan.id.in_([recorded[uri][0] for uri in uris]))).all()
    tiles = sum(tile_count(width, height, config.tiles) for width, height in sizes)
    return len(scans) / seconds, tiles


if __name__ == "__main__":
    raise SystemExit(main())
