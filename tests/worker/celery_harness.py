"""Start a real Celery worker process against the test Redis and database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_environment(database_url: str, broker_url: str, queue: str, metrics_port: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CARGOSCAN_DATABASE_URL=database_url,
        CARGOSCAN_BROKER_URL=broker_url,
        CARGOSCAN_QUEUE=queue,
        CARGOSCAN_METRICS_PORT=str(metrics_port),
        CARGOSCAN_MAX_BATCH_SIZE=extra.pop("max_batch_size", "8"),
        CARGOSCAN_MAX_BATCH_DELAY_MS=extra.pop("max_batch_delay_ms", "200"),
        CARGOSCAN_TORCH_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update({key: value for key, value in extra.items()})
    return env


def private_queue() -> str:
    return f"cargoscan.test.{uuid.uuid4().hex[:8]}"


def rescore_queue(queue: str) -> str:
    return f"{queue}.rescore"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def metric_value(text: str, name: str, labels: str = "") -> float:
    """Read one sample from Prometheus text output; 0.0 when absent."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


@dataclass
class WorkerProcess:
    """A started worker: its process, queue, metrics port and log file."""

    process: subprocess.Popen
    queue: str
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch_worker(
    database_url: str,
    broker_url: str,
    tmp_path: Path,
    pool: str = "solo",
    concurrency: int | None = None,
    max_tasks_per_child: int | None = None,
    queue: str | None = None,
    crashing: bool = False,
    wait: bool = True,
    **extra: str,
) -> WorkerProcess:
    """Start ``celery -A worker worker --pool POOL`` on a private queue and wait for its metrics endpoint.

    The worker also consumes ``rescore_queue(queue)``, after the live queue, as production
    workers do. Pass ``queue`` (from :func:`private_queue`) to send jobs before it starts.
    ``crashing`` runs :mod:`tests.worker.crashing_worker` instead of plain Celery.
    """
    queue = queue or private_queue()
    port = free_port()
    log_path = tmp_path / f"worker-{queue}-{port}.log"
    env = worker_environment(database_url, broker_url, queue, port, **extra)
    env["CARGOSCAN_RESCORE_QUEUE"] = rescore_queue(queue)
    program = ["-m", "tests.worker.crashing_worker"] if crashing else ["-m", "celery", "-A", "worker"]
    command = [
        sys.executable, *program, "worker", "--pool", pool, "--queues", f"{queue},{rescore_queue(queue)}",
        "--hostname", f"{queue}-{port}@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    if max_tasks_per_child is not None:
        command += ["--max-tasks-per-child", str(max_tasks_per_child)]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    worker = WorkerProcess(process=process, queue=queue, port=port, log_path=log_path)
    if wait:
        try:
            _wait_for_metrics(port, process, log_path)
        except Exception:
            worker.stop()
            raise
    return worker


@contextmanager
def celery_worker(database_url: str, broker_url: str, tmp_path: Path, **options):
    """Run a worker (see :func:`launch_worker`) for the block; yields (queue, metrics port, log path)."""
    worker = launch_worker(database_url, broker_url, tmp_path, **options)
    try:
        yield worker.queue, worker.port, worker.log_path
    finally:
        worker.stop()


def _wait_for_metrics(port: int, process: subprocess.Popen, log_path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            scrape(port)
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"celery worker did not serve metrics within {timeout_s} s:\n{log_path.read_text()[-3000:]}")


def wait_until(condition, timeout_s: float, interval_s: float = 0.25, message: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"{message} not met within {timeout_s} s")
