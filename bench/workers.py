"""Start real ``celery -A worker worker --pool solo`` processes for the benchmarks, and feed them.

Workers use the local Redis (a private database number and a private queue) and the
database the caller passes. They are stopped with SIGTERM when the block ends.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import func, select

from bench.common import REDIS_URL, REPO_ROOT, free_port
from db import repository
from db.schema import SCAN_QUEUED, Scan

_BATCH_LINE = re.compile(
    r"batch screened: (\d+) jobs.*?([\d.]+) s \(decode ([\d.]+), inference ([\d.]+), write ([\d.]+)\)$"
)


class LoggedBatch(NamedTuple):
    """One ``batch screened`` line of a worker's log: its size and where its seconds went."""

    jobs: int
    seconds: float
    decode_s: float
    inference_s: float
    write_s: float


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    log_path: Path
    metrics_port: int

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def batches(self) -> list[LoggedBatch]:
        """Return every batch this worker logged so far."""
        found = []
        for line in self.log_text().splitlines():
            match = _BATCH_LINE.search(line.strip())
            if match:
                found.append(LoggedBatch(int(match.group(1)), *(float(group) for group in match.groups()[1:])))
        return found


@contextmanager
def celery_workers(count: int, database_url: str, workdir: Path, **settings: str):
    """Run ``count`` solo-pool workers on a private queue; yields (queue, workers)."""
    queue = f"cargoscan.bench.{uuid.uuid4().hex[:8]}"
    workers: list[WorkerProcess] = []
    try:
        for index in range(count):
            workers.append(_start(index, queue, database_url, workdir, settings))
        for worker in workers:
            _wait_ready(worker)
        yield queue, workers
    finally:
        for worker in workers:
            _stop(worker.process)
        _delete_queue_keys(queue)


def _start(index: int, queue: str, database_url: str, workdir: Path, settings: dict[str, str]) -> WorkerProcess:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CARGOSCAN_")}
    env.update(
        CARGOSCAN_DATABASE_URL=database_url,
        CARGOSCAN_BROKER_URL=REDIS_URL,
        CARGOSCAN_QUEUE=queue,
        CARGOSCAN_METRICS_PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    env.update({f"CARGOSCAN_{key.upper()}": value for key, value in settings.items()})

    log_path = workdir / f"worker-{queue}-{index}.log"
    command = [
        sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool", "solo", "--queues", queue,
        "--hostname", f"bench{index}.{queue}@%h", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return WorkerProcess(process=process, log_path=log_path, metrics_port=port)


def _wait_ready(worker: WorkerProcess, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise RuntimeError(f"celery worker exited with {worker.process.returncode}:\n{worker.log_text()[-3000:]}")
        if " ready." in worker.log_text():
            return
        time.sleep(0.2)
    raise TimeoutError(f"celery worker not ready within {timeout_s} s:\n{worker.log_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _delete_queue_keys(queue: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = [key for key in client.scan_iter(match=f"*{queue}*")]
    if keys:
        client.delete(*keys)
    client.close()


def requeue(database, scan_ids: list[int]) -> None:
    with database.sessions.begin() as session:
        repository.requeue_scans(session, scan_ids)


def send_jobs(queue: str, jobs: list[tuple[int, str]]) -> None:
    from scheduler.enqueue import send_job
    from worker.tasks import screen

    for scan_id, uri in jobs:
        send_job(screen, scan_id, uri, queue)


def wait_settled(database, scan_ids: list[int], timeout_s: float, interval_s: float = 0.1) -> None:
    """Wait until none of ``scan_ids`` is queued any more."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with database.sessions() as session:
            queued = session.execute(
                select(func.count()).select_from(Scan).where(Scan.id.in_(scan_ids), Scan.status == SCAN_QUEUED)
            ).scalar_one()
        if queued == 0:
            return
        time.sleep(interval_s)
    raise TimeoutError(f"{queued} of {len(scan_ids)} scans still queued after {timeout_s} s")


def scan_times(database, scan_ids: list[int]) -> list[tuple[datetime, datetime]]:
    """Return (queued_at, updated_at) per scan: enqueue time and the time its outcome was written."""
    with database.sessions() as session:
        rows = session.execute(select(Scan.queued_at, Scan.updated_at).where(Scan.id.in_(scan_ids))).tuples().all()
    return [(queued, updated) for queued, updated in rows]
