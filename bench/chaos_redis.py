"""A private redis-server on 127.0.0.1 that the chaos run may crash and start again."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((LOOPBACK, port)) == 0


class PrivateRedis:
    """One redis-server process on ``127.0.0.1:port`` with its data folder.

    With ``appendonly`` the server logs every write to an append-only file in ``folder`` and
    replays it on start, so queued and unacknowledged messages survive a crash. Without it,
    and with ``--save ""``, a restart starts empty.
    """

    def __init__(self, port: int, folder: Path, appendonly: bool) -> None:
        self.port = port
        self.folder = folder
        self.appendonly = appendonly
        self.url = f"redis://{LOOPBACK}:{port}/0"
        self.starts = 0
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        if port_in_use(self.port):
            raise RuntimeError(f"port {self.port} on {LOOPBACK} is already in use; pick a free one with --redis-port")

        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server", "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
            "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.folder), "--daemonize", "no",
        ]
        log = open(self.folder / "redis.log", "a")
        with log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        self._wait_ready()
        logger.info("private redis-server started on %s:%d (pid %d, appendonly %s)", LOOPBACK, self.port, self._process.pid, self.appendonly)

    def crash(self) -> None:
        """Kill the server with SIGKILL, as a crash or an OOM kill would."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=STOP_TIMEOUT_S)
        logger.info("private redis-server killed (pid %d)", self._process.pid)

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=STOP_TIMEOUT_S)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)

    def _wait_ready(self) -> None:
        import redis

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self._process.returncode}:\n{tail}")
            try:
                with self.client() as client:
                    # While the append-only file is replayed the server returns LOADING errors.
                    if client.ping():
                        return
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"redis-server on port {self.port} did not respond to PING within {START_TIMEOUT_S} s; see {self.folder / 'redis.log'}")
