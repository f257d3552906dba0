"""Show that two workers writing the same scan at the same moment both count it in cargoscan_scans_total.

Run from the repository root:

    .venv/bin/python bench/chaos_race.py --database postgresql   # a private database on 127.0.0.1:5432, dropped after
    .venv/bin/python bench/chaos_race.py --database sqlite

The chaos run meets this when Redis's visibility timeout hands a job to a second worker
while the first one is still writing it. Two threads here screen the same scan through
``worker.pipeline.screen_batch``. A barrier stops each write transaction right after its
"is this outcome already recorded?" query until both have run it, which makes the overlap
certain instead of rare. The upsert still leaves one result row, but both batch reports call
the outcome new, so ``worker.metrics.record_batch`` would count it twice. Exit status 1 means
the double count happened.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["CARGOSCAN_METRICS_PORT"] = "0"

import numpy as np  # noqa: E402

from bench.chaos_data import create_private_database, drop_private_database, scene_config, write_checkpoint_and_exemplars  # noqa: E402

DATABASE_NAME = "cargoscan_chaos_race"
BARRIER_TIMEOUT_S = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cargoscan-race-") as folder_name:
        folder = Path(folder_name)
        if args.database == "sqlite":
            return run(f"sqlite:///{folder / 'race.db'}", folder)

        create_private_database(DATABASE_NAME)
        try:
            return run(f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE_NAME}", folder)
        finally:
            drop_private_database(DATABASE_NAME)


def run(url: str, folder: Path) -> int:
    import worker.pipeline as pipeline
    from db import repository
    from db.database import open_database
    from models.synthetic import render_scan, write_png16
    from scheduler.enroll import enroll
    from worker.screener import build_screener
    from worker.settings import Settings

    checkpoint, positives, negatives = write_checkpoint_and_exemplars(folder, seed=0)
    scan = folder / "scan.png"
    write_png16(scan, render_scan(np.random.default_rng(1), with_item=True, config=scene_config()).pixels)

    database = open_database(url)
    try:
        enroll(database.sessions, checkpoint, positives, negatives, name="race")
        with database.sessions.begin() as session:
            scan_id = repository.register_scans(session, [str(scan)])[str(scan)][0]
        job = pipeline.ScanJob(scan_id=scan_id, uri=str(scan))

        barrier = threading.Barrier(2, timeout=BARRIER_TIMEOUT_S)
        check_recorded = pipeline._already_recorded

        def check_then_wait(*args, **kwargs):
            recorded = check_recorded(*args, **kwargs)
            barrier.wait()
            return recorded

        pipeline._already_recorded = check_then_wait
        reports = []

        def screen() -> None:
            screener = build_screener(database.sessions, Settings(database_url=url, scan_root=folder))
            try:
                reports.append(pipeline.screen_batch(screener, database.sessions, [job]))
            finally:
                screener.close()

        threads = [threading.Thread(target=screen) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pipeline._already_recorded = check_recorded

        with database.sessions() as session:
            rows = repository.count_results(session, scan_id)
    finally:
        database.dispose()

    counted_as_new = sum(1 for report in reports if report.scored and scan_id not in report.repeated)
    print(f"{url.split(':')[0]}: {len(reports)} writes, {rows} result row, {counted_as_new} counted as a new outcome")
    return 1 if counted_as_new > 1 else 0


if __name__ == "__main__":
    sys.exit(main())
