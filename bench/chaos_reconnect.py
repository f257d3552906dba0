"""Check that a worker still flushes part-filled batches after its broker connection was lost.

Run from the repository root:

    .venv/bin/python bench/chaos_reconnect.py

It starts a private redis-server on 127.0.0.1 (--redis-port, with an append-only file), one
solo-pool worker with a SQLite database, and sends a few jobs, fewer than a batch, so only
the flush interval (CARGOSCAN_MAX_BATCH_DELAY_MS) can flush them. Then it kills Redis, starts
it again, waits for the worker to reconnect, and sends a few more. Celery 5.6 clears the
event loop's timers when the connection is lost, and celery-batches 0.11 starts its flush
timer only when it has none, so without a fix in the task class the second jobs wait for a
full batch. Exit status 1 means they were not screened within --wait-s.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chaos_redis import PrivateRedis  # noqa: E402
from bench.chaos_workers import WorkerPool  # noqa: E402

logger = logging.getLogger("chaos_reconnect")

JOBS_PER_ROUND = 3
RECONNECT_TIMEOUT_S = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-port", type=int, default=6392, help="port of the private redis-server on 127.0.0.1")
    parser.add_argument("--wait-s", type=float, default=20.0, help="seconds each round's jobs may take")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="cargoscan-reconnect-") as folder_name:
        folder = Path(folder_name)
        redis = PrivateRedis(args.redis_port, folder / "redis", appendonly=True)
        pool = None
        try:
            redis.start()
            pool, database, scans = _start_worker(folder, redis)
            worker = pool.workers[0]

            first = _send_and_wait(database, scans[:JOBS_PER_ROUND], args.wait_s)
            redis.crash()
            redis.start()
            _wait_for_reconnect(worker)
            second = _send_and_wait(database, scans[JOBS_PER_ROUND:], args.wait_s)
        finally:
            if pool is not None:
                pool.stop_all()
            redis.stop()

    print(f"before the reconnect: {first} of {JOBS_PER_ROUND} jobs screened within {args.wait_s:.0f} s")
    print(f"after the reconnect:  {second} of {JOBS_PER_ROUND} jobs screened within {args.wait_s:.0f} s")
    return 0 if first == second == JOBS_PER_ROUND else 1


def _start_worker(folder: Path, redis: PrivateRedis):
    import numpy as np

    from bench.chaos_data import scene_config, write_checkpoint_and_exemplars
    from models.synthetic import render_scan, write_png16

    scan_root = folder / "scans"
    scan_root.mkdir()
    rng = np.random.default_rng(0)
    scans = []
    for index in range(2 * JOBS_PER_ROUND):
        path = scan_root / f"scan_{index}.png"
        write_png16(path, render_scan(rng, with_item=index % 2 == 0, config=scene_config()).pixels)
        scans.append(path)
    checkpoint, positives, negatives = write_checkpoint_and_exemplars(folder / "model", seed=0)

    url = f"sqlite:///{folder / 'cargoscan.db'}"
    # The Celery app reads its broker when first imported, which happens below.
    os.environ.update(CARGOSCAN_BROKER_URL=redis.url, CARGOSCAN_DATABASE_URL=url, CARGOSCAN_METRICS_PORT="0")
    from db.database import open_database
    from scheduler.enroll import enroll

    database = open_database(url)
    enroll(database.sessions, checkpoint, positives, negatives, name="reconnect")

    (folder / "logs").mkdir()
    pool = WorkerPool(folder / "logs", {
        "CARGOSCAN_DATABASE_URL": url,
        "CARGOSCAN_BROKER_URL": redis.url,
        "CARGOSCAN_TORCH_THREADS": "1",
        "CARGOSCAN_DEVICE": "cpu",
        "CARGOSCAN_SCAN_ROOT": str(scan_root),
    })
    pool.wait_ready(pool.start())
    return pool, database, scans


def _send_and_wait(database, paths: list[Path], wait_s: float) -> int:
    """Enqueue ``paths`` and return how many of them were screened within ``wait_s``."""
    from sqlalchemy import func, select

    from db.schema import SCAN_QUEUED, Scan
    from scheduler.enqueue import enqueue_folder

    folder = paths[0].parent / f"round_{paths[0].stem}"
    folder.mkdir()
    for path in paths:
        path.rename(folder / path.name)
    enqueue_folder(database, folder, "cargoscan.scans")

    uris = [str((folder / path.name).resolve()) for path in paths]
    deadline = time.monotonic() + wait_s
    while True:
        with database.sessions() as session:
            queued = session.execute(
                select(func.count()).select_from(Scan).where(Scan.uri.in_(uris), Scan.status == SCAN_QUEUED)
            ).scalar_one()
        if queued == 0 or time.monotonic() > deadline:
            return len(paths) - queued
        time.sleep(0.5)


def _wait_for_reconnect(worker) -> None:
    deadline = time.monotonic() + RECONNECT_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.log_text().count("Connected to redis") >= 2:
            return
        time.sleep(0.5)
    raise TimeoutError(f"worker did not reconnect within {RECONNECT_TIMEOUT_S} s:\n{worker.log_text()[-3000:]}")


if __name__ == "__main__":
    sys.exit(main())
