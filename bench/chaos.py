"""Check that CargoScan loses no scan and doubles none through worker kills, a Redis crash and a database outage.

Run from the repository root with the project's virtual environment:

    .venv/bin/python bench/chaos.py                       # 1,000 scans, 3 workers, 3 kills
    .venv/bin/python bench/chaos.py --scans 200 --kills 1 # a shorter run

Everything the run starts listens on 127.0.0.1 and is stopped at the end, also after an
error. It starts a private redis-server (--redis-port, with an append-only file) and a TCP
proxy in front of the PostgreSQL server on port 5432. It creates a private database
(--database, dropped at the end), which the workers and the producer reach through the
proxy, and starts solo-pool Celery workers. The Redis on port 6379 is never used. Scans are submitted in chunks, as `cargoscan enqueue` does, while
workers are killed with SIGKILL and replaced, Redis is killed and started again, and the
proxy cuts every database connection and refuses new ones for a while. Scans still queued
once the broker is empty get their jobs sent again, as `cargoscan resend-stale` does.

Exit status: 0 when no scan was lost or duplicated, 1 when some were, 2 when the run failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chaos_faults import KILL_FRACTIONS  # noqa: E402
from bench.chaos_proxy import TcpProxy  # noqa: E402
from bench.chaos_redis import PrivateRedis  # noqa: E402
from bench.chaos_workers import WorkerPool, free_port  # noqa: E402

logger = logging.getLogger("chaos")

POSTGRES_PORT = 5432
QUEUE = "cargoscan.scans"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=1000, help="scans submitted, bad files included")
    parser.add_argument("--bad-scans", type=int, default=10, help="scans among them that are bad files and must fail with a reason")
    parser.add_argument("--chunk-size", type=int, default=50, help="scans per enqueued folder")
    parser.add_argument("--submit-interval-s", type=float, default=4.0, help="seconds between two chunks")
    parser.add_argument("--workers", type=int, default=3, help="worker processes kept running")
    parser.add_argument("--kills", type=int, default=3, help="workers killed with SIGKILL during the run, each replaced")
    parser.add_argument("--batch-size", type=int, default=32, help="CARGOSCAN_MAX_BATCH_SIZE of the workers")
    parser.add_argument("--visibility-timeout-s", type=int, default=15, help="seconds before Redis redelivers an unacknowledged job")
    parser.add_argument("--redis-port", type=int, default=6391, help="port of the private redis-server on 127.0.0.1")
    parser.add_argument("--redis-down-s", type=float, default=5.0, help="seconds the private Redis stays down after its crash")
    parser.add_argument("--no-appendonly", action="store_true", help="run Redis without persistence, so its crash loses the queue")
    parser.add_argument("--db-outage-s", type=float, default=10.0, help="seconds the proxy refuses database connections")
    parser.add_argument("--database", default="cargoscan_chaos", help="private PostgreSQL database, created and dropped")
    parser.add_argument("--settle-broker-s", type=float, default=150.0, help="seconds to wait for late redeliveries once all scans settled")
    parser.add_argument("--deadline-s", type=float, default=900.0, help="the whole run stops after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (scans and logs); it is always kept on failure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 <= args.bad_scans <= args.scans:
        parser.error("--bad-scans must be between 0 and --scans")
    if not 0 <= args.kills <= len(KILL_FRACTIONS):
        parser.error(f"--kills must be between 0 and {len(KILL_FRACTIONS)}")
    if args.visibility_timeout_s < 10:
        parser.error("--visibility-timeout-s must be at least 10, the minimum of CARGOSCAN_VISIBILITY_TIMEOUT_S")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM then unwinds through the finally blocks, which stop everything the run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    folder = Path(tempfile.mkdtemp(prefix="cargoscan-chaos-"))
    run = ChaosRun(args, folder)
    keep = args.keep
    try:
        passed = run.execute()
        keep = keep or not passed
        return 0 if passed else 1
    except Exception:
        logger.exception("chaos run failed")
        keep = True
        return 2
    finally:
        run.cleanup()
        if keep:
            print(f"run folder kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


class ChaosRun:
    """Holds every service of one run, so :meth:`cleanup` can stop whatever was started."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.deadline = time.monotonic() + args.deadline_s
        self.redis = PrivateRedis(args.redis_port, folder / "redis", appendonly=not args.no_appendonly)
        self.proxy = TcpProxy(target_port=POSTGRES_PORT, listen_port=free_port())
        self.pool: WorkerPool | None = None
        self.database_created = False
        self.databases = []
        self.load_before = os.getloadavg()

    def execute(self) -> bool:
        from bench import chaos_data
        from bench.chaos_report import print_report

        started = time.monotonic()
        args = self.args
        scan_root = self.folder / "scans"
        chunks, bad = chaos_data.write_scans(scan_root, args.scans, args.bad_scans, args.chunk_size, args.seed)
        checkpoint, positives, negatives = chaos_data.write_checkpoint_and_exemplars(self.folder / "model", args.seed)
        logger.info("wrote %d scans in %d chunks (%d bad files) under %s", args.scans, len(chunks), len(bad), scan_root)

        self.redis.start()
        chaos_data.create_private_database(args.database)
        self.database_created = True
        self.proxy.start()
        proxied_url = f"postgresql+psycopg://postgres@127.0.0.1:{self.proxy.listen_port}/{args.database}"
        direct_url = f"postgresql+psycopg://postgres@127.0.0.1:{POSTGRES_PORT}/{args.database}"

        # The Celery app reads its settings when first imported, and that import happens below.
        os.environ.update(CARGOSCAN_BROKER_URL=self.redis.url, CARGOSCAN_DATABASE_URL=proxied_url, CARGOSCAN_METRICS_PORT="0")
        from db.database import open_database
        from models.scanfiles import list_scan_files
        from scheduler.enroll import enroll

        producer_database = self._open(open_database, proxied_url)
        monitor_database = self._open(open_database, direct_url)
        enroll(producer_database.sessions, checkpoint, positives, negatives, name="chaos")

        self.pool = WorkerPool(self.folder / "logs", self._worker_environment(proxied_url, scan_root))
        self.pool.folder.mkdir()
        for _ in range(args.workers):
            self.pool.start()
        for worker in self.pool.workers:
            self.pool.wait_ready(worker)
        logger.info("%d workers ready after %.0f s of setup", args.workers, time.monotonic() - started)

        timeline = self._timeline(chunks, producer_database, monitor_database)
        timeline.run_events()
        timeline.settle(lambda: self._resend(producer_database, monitor_database), args.settle_broker_s)

        submitted = [path for chunk in chunks for path in list_scan_files(chunk)]
        audit = chaos_data.audit(monitor_database, submitted, bad)
        return print_report(self, timeline, audit, time.monotonic() - started)

    def _open(self, open_database, url: str):
        database = open_database(url)
        self.databases.append(database)
        return database

    def _worker_environment(self, database_url: str, scan_root: Path) -> dict[str, str]:
        return {
            "CARGOSCAN_DATABASE_URL": database_url,
            "CARGOSCAN_BROKER_URL": self.redis.url,
            "CARGOSCAN_VISIBILITY_TIMEOUT_S": str(self.args.visibility_timeout_s),
            "CARGOSCAN_MAX_BATCH_SIZE": str(self.args.batch_size),
            "CARGOSCAN_TORCH_THREADS": "1",
            "CARGOSCAN_DEVICE": "cpu",
            "CARGOSCAN_SCAN_ROOT": str(scan_root),
        }

    def _timeline(self, chunks: list[Path], producer_database, monitor_database):
        from bench.chaos_faults import Faults
        from bench.chaos_timeline import Timeline, submit_chunk

        args = self.args
        timeline = Timeline(self.pool, self.redis, monitor_database, self.deadline)
        for index, chunk in enumerate(chunks):
            timeline.add(index * args.submit_interval_s, f"submit {chunk.name}", submit_chunk(producer_database, chunk, QUEUE, timeline.figures))

        Faults(timeline, self.pool, self.redis, self.proxy, args).schedule(len(chunks))
        return timeline

    def _resend(self, producer_database, monitor_database) -> list[tuple[int, str]]:
        """Send the jobs of all queued scans again, as `cargoscan resend-stale --older-than-s 0` does.

        Returns the (scan id, uri) pairs listed just before sending, for the report.
        """
        from db import repository
        from db.schema import utcnow
        from scheduler.enqueue import resend_stale

        with monitor_database.sessions() as session:
            stale = repository.stale_queued_scans(session, utcnow())
        sent = resend_stale(producer_database, QUEUE, older_than_s=0)
        if sent != len(stale):
            logger.warning("resend-stale sent %d jobs where %d scans were listed just before", sent, len(stale))
        return stale

    def cleanup(self) -> None:
        """Stop everything this run started, in dependency order. Each step runs even if an earlier one failed."""
        steps = [
            ("stop workers", self.pool.stop_all if self.pool else None),
            ("close database connections", self._dispose_databases),
            ("stop proxy", self.proxy.stop),
            ("stop private Redis", self.redis.stop),
            ("drop private database", self._drop_database if self.database_created else None),
        ]
        for label, step in steps:
            if step is None:
                continue
            try:
                step()
            except Exception:
                logger.exception("cleanup step failed: %s", label)

    def _dispose_databases(self) -> None:
        for database in self.databases:
            database.dispose()

    def _drop_database(self) -> None:
        from bench.chaos_data import drop_private_database

        drop_private_database(self.args.database)

    def command_line(self) -> str:
        return shlex.join([".venv/bin/python", "bench/chaos.py", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
