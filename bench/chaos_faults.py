"""The faults of a chaos run: worker kills, a Redis crash and a database outage, each timed to meet jobs in flight."""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

# A fault waits until workers hold unacknowledged jobs, checking this often and this many
# times, because a fault that meets idle workers tests nothing. After that it runs anyway.
BUSY_RETRY_DELAY_S = 0.2
BUSY_MAX_TRIES = 50
# Kill times as fractions of the submission span, of which the run uses the first --kills.
KILL_FRACTIONS = (0.15, 0.7, 0.88, 0.4, 0.95)
REDIS_CRASH_FRACTION = 0.3
DATABASE_OUTAGE_FRACTION = 0.5


class Faults:
    """Schedules the faults on a :class:`bench.chaos_timeline.Timeline` and carries them out."""

    def __init__(self, timeline, pool, redis, proxy, args) -> None:
        self.timeline = timeline
        self.pool = pool
        self.redis = redis
        self.proxy = proxy
        self.args = args

    def schedule(self, chunk_count: int) -> None:
        args = self.args

        # Each fault follows a chunk's submission closely, so it meets jobs that workers have
        # fetched but not finished.
        def after_chunk(fraction: float) -> float:
            return min(round(fraction * chunk_count), chunk_count - 1) * args.submit_interval_s + BUSY_RETRY_DELAY_S

        for number, fraction in enumerate(sorted(KILL_FRACTIONS[: args.kills]), start=1):
            self._add_when_busy(after_chunk(fraction), f"kill worker {number} of {args.kills}", self.kill_busiest)
        self._add_when_busy(after_chunk(REDIS_CRASH_FRACTION), "crash Redis", self.crash_redis)
        self._add_when_busy(after_chunk(DATABASE_OUTAGE_FRACTION), f"database outage for {args.db_outage_s:.0f} s", self.cut_database)

    def _add_when_busy(self, at_s: float, label: str, fault: Callable[[dict[str, int] | None], None]) -> None:
        tries = 0

        def action() -> bool:
            nonlocal tries
            tries += 1
            depth = self.timeline.broker_depth()
            if (depth is None or depth["unacked"] == 0) and tries < BUSY_MAX_TRIES:
                return False
            fault(depth)
            return True

        self.timeline.add(at_s, label, action, retry_delay_s=BUSY_RETRY_DELAY_S, max_tries=BUSY_MAX_TRIES)

    def kill_busiest(self, depth: dict[str, int] | None) -> None:
        """Kill the ready worker that uses the most CPU with SIGKILL, and start a replacement."""
        ready = [worker for worker in self.pool.live() if " ready." in worker.log_text()]
        if not ready:
            logger.warning("no ready worker to kill; skipping this kill")
            return

        victim = self.pool.busiest(ready)
        self.timeline.expect_exit(victim.process.pid)
        self.pool.kill(victim)
        self._note(f"killed {victim.name}", depth)
        self.pool.start()

    def crash_redis(self, depth: dict[str, int] | None) -> None:
        self.redis.crash()
        self._note("crashed Redis", depth)
        self.timeline.add(self.timeline.elapsed() + self.args.redis_down_s, "start Redis again", self.redis.start)

    def cut_database(self, depth: dict[str, int] | None) -> None:
        cut = self.proxy.begin_outage()
        self._note(f"cut {cut} database connections", depth)
        self.timeline.add(self.timeline.elapsed() + self.args.db_outage_s, "end database outage", self.proxy.end_outage)

    def _note(self, what: str, depth: dict[str, int] | None) -> None:
        note = f"{what} at {self.timeline.elapsed():.1f} s while the broker held {depth}"
        self.timeline.figures.faults.append(note)
        logger.info(note)
