"""The timed part of the chaos run: submit scans in chunks while faults are injected, then wait for every scan to settle."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

logger = logging.getLogger(__name__)

TICK_S = 0.5
SCRAPE_INTERVAL_S = 5.0
PROGRESS_INTERVAL_S = 10.0
SUBMIT_RETRY_DELAY_S = 2.0
MAX_SUBMIT_TRIES = 30
# An empty broker must stay empty this long before still-queued scans count as lost messages,
# because kombu records a message as unacknowledged only a moment after a worker popped it.
EMPTY_BROKER_CONFIRM_S = 2.0


@dataclass(order=True)
class Event:
    at_s: float
    label: str = field(compare=False)
    action: Callable[[], bool | None] = field(compare=False)
    retry_delay_s: float = field(default=SUBMIT_RETRY_DELAY_S, compare=False)
    max_tries: int = field(default=MAX_SUBMIT_TRIES, compare=False)
    tries: int = field(default=1, compare=False)


@dataclass
class TimelineFigures:
    publish_failed_chunks: list[Path] = field(default_factory=list)
    # (scan id, uri) of every scan whose job was sent again because it was queued with an empty broker.
    resent: list[tuple[int, str]] = field(default_factory=list)
    resend_rounds: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    submission_s: float = 0.0
    settled_s: float | None = None
    broker_left: int | None = None


class Timeline:
    """Scheduler of the run's events, which also replaces workers that exit on their own and logs progress.

    Every loop stops at ``deadline``, a ``time.monotonic()`` value.
    """

    def __init__(self, pool, redis, monitor_database, deadline: float) -> None:
        self.pool = pool
        self.redis = redis
        self.monitor_database = monitor_database
        self.deadline = deadline
        self.figures = TimelineFigures()
        self.events: list[Event] = []
        self.started = time.monotonic()
        self._expected_exits: set[int] = set()
        self._last_scrape = 0.0
        self._last_progress = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def add(self, at_s: float, label: str, action: Callable[[], bool | None], **retry) -> None:
        """Schedule ``action`` at ``at_s``; ``retry`` may set the event's ``retry_delay_s`` and ``max_tries``."""
        self.events.append(Event(at_s, label, action, **retry))
        self.events.sort()

    def expect_exit(self, pid: int) -> None:
        self._expected_exits.add(pid)

    def run_events(self) -> None:
        """Run every event; an action that returns False is tried again a little later."""
        while self.events and time.monotonic() < self.deadline:
            if self.events[0].at_s <= self.elapsed():
                event = self.events.pop(0)
                if event.tries == 1:
                    logger.info("[%6.1f s] %s", self.elapsed(), event.label)
                if event.action() is False and event.tries < event.max_tries:
                    event.at_s = self.elapsed() + event.retry_delay_s
                    event.tries += 1
                    self.events.append(event)
                    self.events.sort()
                continue
            self.housekeeping()
            time.sleep(TICK_S)
        if self.events:
            logger.error("deadline reached with %d events not run: %s", len(self.events), [event.label for event in self.events])
        self.figures.submission_s = self.elapsed()

    def housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_scrape >= SCRAPE_INTERVAL_S:
            self._last_scrape = now
            self.pool.scrape_all()
            self._replace_unexpected_exits()
        if now - self._last_progress >= PROGRESS_INTERVAL_S:
            self._last_progress = now
            self.log_progress()

    def _replace_unexpected_exits(self) -> None:
        for worker in self.pool.workers:
            pid = worker.process.pid
            if worker.alive() or pid in self._expected_exits:
                continue
            self._expected_exits.add(pid)
            message = f"{worker.name} (pid {pid}) exited on its own with status {worker.process.returncode}"
            self.figures.unexpected_exits.append(message)
            logger.error("%s; starting a replacement. Log tail:\n%s", message, worker.log_text()[-2000:])
            self.pool.start()

    def log_progress(self) -> None:
        try:
            counts = scan_counts(self.monitor_database)
        except Exception as error:  # noqa: BLE001 - progress is informational; the audit reads the database again
            counts = {"unreadable": str(error).splitlines()[0]}
        logger.info(
            "[%6.1f s] scans %s; broker %s; %d workers alive", self.elapsed(), counts, self.broker_depth(), len(self.pool.live())
        )

    def broker_depth(self) -> dict[str, int] | None:
        """Return the messages waiting in the queues and those delivered but not acknowledged; None while Redis is down."""
        import redis

        try:
            with self.redis.client() as client:
                ready = sum(client.llen(key) for key in client.scan_iter(match="cargoscan.*", _type="list"))
                return {"ready": ready, "unacked": client.hlen("unacked")}
        except redis.RedisError:
            return None

    def settle(self, resend: Callable[[], list[tuple[int, str]]], settle_broker_s: float) -> None:
        """Wait until no scan is queued, resending lost jobs when the broker is empty, then for the broker to drain."""
        empty_since: float | None = None
        while time.monotonic() < self.deadline:
            self.housekeeping()
            queued = scan_counts(self.monitor_database).get("queued", 0)
            depth = self.broker_depth()
            empty = depth is not None and depth["ready"] == 0 and depth["unacked"] == 0
            if queued == 0:
                self.figures.settled_s = self.elapsed()
                break

            if not empty:
                empty_since = None
            elif empty_since is None:
                empty_since = time.monotonic()
            elif time.monotonic() - empty_since >= EMPTY_BROKER_CONFIRM_S:
                sent = resend()
                self.figures.resent.extend(sent)
                self.figures.resend_rounds += 1
                logger.info(
                    "[%6.1f s] broker empty with %d scans queued: resend-stale sent %d jobs, scan ids %s",
                    self.elapsed(), queued, len(sent), sorted(scan_id for scan_id, _ in sent),
                )
                empty_since = None
            time.sleep(TICK_S)

        if self.figures.settled_s is None:
            logger.error("deadline reached with scans still queued")
            return

        # Late copies of finished jobs still run, such as a killed worker's unacknowledged
        # messages restored after their scans were screened elsewhere. Wait for them, within limits.
        settle_deadline = min(self.deadline, time.monotonic() + settle_broker_s)
        while time.monotonic() < settle_deadline:
            depth = self.broker_depth()
            if depth is not None and depth["ready"] == 0 and depth["unacked"] == 0:
                break
            self.housekeeping()
            time.sleep(TICK_S)
        depth = self.broker_depth()
        self.figures.broker_left = None if depth is None else depth["ready"] + depth["unacked"]
        self.pool.scrape_all()


def scan_counts(database) -> dict[str, int]:
    from db.schema import Scan

    with database.sessions() as session:
        return dict(session.execute(select(Scan.status, func.count()).group_by(Scan.status)).tuples().all())


def submit_chunk(database, folder: Path, queue: str, figures: TimelineFigures) -> Callable[[], bool]:
    """Return an action that enqueues one chunk folder as ``cargoscan enqueue`` does.

    A database error records nothing, so the action returns False to be tried again. A broker
    error after the scans were recorded leaves them queued with no job, which is the case
    that ``cargoscan resend-stale`` exists for, so that chunk is not retried.
    """
    from kombu.exceptions import OperationalError as BrokerError
    from sqlalchemy.exc import DBAPIError

    from scheduler.enqueue import enqueue_folder

    def action() -> bool:
        try:
            summary = enqueue_folder(database, folder, queue)
        except DBAPIError as error:
            logger.warning("enqueue of %s failed at the database, trying again: %s", folder.name, str(error.orig or error).splitlines()[0])
            return False
        except BrokerError as error:
            figures.publish_failed_chunks.append(folder)
            logger.warning("enqueue of %s recorded the scans but could not publish: %s", folder.name, error)
            return True
        logger.info("enqueued %s: %d found, %d sent", folder.name, summary.found, summary.sent)
        return True

    return action
