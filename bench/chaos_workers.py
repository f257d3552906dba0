"""Start, kill and scrape the ``celery -A worker worker --pool solo`` processes of the chaos run."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
SCRAPE_TIMEOUT_S = 3.0

# Counters read from each worker's /metrics; a killed worker keeps its last scraped values.
SCRAPED_COUNTERS = (
    'cargoscan_scans_total{outcome="scored"}',
    'cargoscan_scans_total{outcome="failed"}',
    "cargoscan_scans_redelivered_total",
    "cargoscan_batches_failed_total",
)

# Log lines that show the reliability paths at work, counted over all worker logs.
LOG_EVENTS = {
    "database retries": re.compile(r"database write failed, retrying"),
    "batches sent back": re.compile(r"sent back to the queue"),
    "scans screened alone": re.compile(r"screening scan \d+ alone"),
    "scans failed after deliveries": re.compile(r"failed after \d+ unfinished deliveries"),
    "broker connection lost": re.compile(r"[Cc]onnection to broker lost"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log_path: Path
    metrics_port: int
    counters: dict[str, float] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class WorkerPool:
    """Solo-pool workers sharing one environment; each gets its own name, log and metrics port."""

    def __init__(self, folder: Path, environment: dict[str, str]) -> None:
        self.folder = folder
        self.environment = environment
        self.workers: list[Worker] = []
        self.kills = 0

    def start(self) -> Worker:
        name = f"chaos{len(self.workers)}"
        port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("CARGOSCAN_")}
        env.update(self.environment, CARGOSCAN_METRICS_PORT=str(port), PYTHONUNBUFFERED="1")
        log_path = self.folder / f"worker-{name}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool", "solo", "--hostname", f"{name}@%h",
            "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]
        with open(log_path, "w") as log:
            process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        worker = Worker(name=name, process=process, log_path=log_path, metrics_port=port)
        self.workers.append(worker)
        logger.info("started worker %s (pid %d, metrics port %d)", name, process.pid, port)
        return worker

    def wait_ready(self, worker: Worker, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Wait for Celery's " ready." line; returns the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if not worker.alive():
                raise RuntimeError(f"worker {worker.name} exited with {worker.process.returncode}:\n{worker.log_text()[-3000:]}")
            if " ready." in worker.log_text():
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(f"worker {worker.name} not ready within {timeout_s} s:\n{worker.log_text()[-3000:]}")

    def live(self) -> list[Worker]:
        return [worker for worker in self.workers if worker.alive()]

    def busiest(self, workers: list[Worker], window_s: float = 0.3) -> Worker:
        """Return the worker that used the most CPU time over ``window_s``: likely the one screening a batch."""
        before = {worker.name: cpu_seconds(worker.process.pid) for worker in workers}
        time.sleep(window_s)
        return max(workers, key=lambda worker: cpu_seconds(worker.process.pid) - before[worker.name])

    def kill(self, worker: Worker) -> None:
        """Scrape the worker's counters one last time, then SIGKILL it."""
        self.scrape(worker)
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=STOP_TIMEOUT_S)
        self.kills += 1
        logger.info("killed worker %s (pid %d) with SIGKILL", worker.name, worker.process.pid)

    def scrape(self, worker: Worker) -> None:
        """Update the worker's counters from its /metrics; keeps the previous values when the request fails."""
        url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
                text = response.read().decode()
        except OSError:
            return
        for name in SCRAPED_COUNTERS:
            worker.counters[name] = metric_value(text, name)

    def scrape_all(self) -> None:
        for worker in self.live():
            self.scrape(worker)

    def counter_sum(self, name: str) -> float:
        return sum(worker.counters.get(name, 0.0) for worker in self.workers)

    def log_events(self) -> dict[str, int]:
        text = "\n".join(worker.log_text() for worker in self.workers)
        return {label: len(pattern.findall(text)) for label, pattern in LOG_EVENTS.items()}

    def stop_all(self) -> None:
        for worker in self.live():
            worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("worker %s ignored SIGTERM for %.0f s; killing it", worker.name, STOP_TIMEOUT_S)
                worker.process.kill()
                worker.process.wait(timeout=STOP_TIMEOUT_S)


def cpu_seconds(pid: int) -> float:
    """Return the user and system CPU time of a process from /proc/PID/stat; 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of the stat line (utime, stime) in clock ticks; the split above drops the first two.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric_value(text: str, name: str) -> float:
    """Read one sample from Prometheus text output; 0.0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
