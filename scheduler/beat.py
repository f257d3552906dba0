"""The nightly run: Celery beat enqueues the drop folder at a set time, skipping scans already recorded.

``celery -A worker beat`` sends :data:`NIGHTLY_TASK` at ``CARGOSCAN_NIGHTLY_TIME`` in
``CARGOSCAN_TIMEZONE`` to the live queue, and a screening worker runs it through
:func:`scheduler.enqueue.enqueue_folder`. Scans already recorded get no new job, so a
repeated or late run only sends what arrived since the last one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from celery import shared_task
from celery.schedules import crontab
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError as DatabaseError

from worker.settings import Settings

logger = logging.getLogger(__name__)

NIGHTLY_TASK = "cargoscan.enqueue_nightly"
NIGHTLY_ENTRY = "cargoscan-nightly-drop-folder"

# A run that no worker started within 12 hours is dropped, so runs do not pile up while the
# workers are down. The next run sends the same files, because recorded scans are skipped.
NIGHTLY_EXPIRES_S = 12 * 3600


def parse_time_of_day(text: str) -> tuple[int, int]:
    """Split ``HH:MM`` into hour and minute; raises ValueError for anything else."""
    try:
        moment = datetime.strptime(text, "%H:%M")
    except ValueError as error:
        raise ValueError(f"invalid time of day {text!r}; expected HH:MM, for example 02:30") from error
    return moment.hour, moment.minute


def nightly_beat_schedule(settings: Settings) -> dict:
    """Return Celery's ``beat_schedule`` entry for the nightly run, or an empty schedule when no folder is set."""
    if settings.nightly_drop_folder is None:
        return {}

    ZoneInfo(settings.timezone)  # Fails here, at startup, on an unknown zone name.
    hour, minute = parse_time_of_day(settings.nightly_time)
    return {
        NIGHTLY_ENTRY: {
            "task": NIGHTLY_TASK,
            "schedule": crontab(minute=minute, hour=hour),
            "kwargs": {"folder": str(settings.nightly_drop_folder), "queue": settings.queue},
            "options": {"queue": settings.queue, "expires": NIGHTLY_EXPIRES_S},
        }
    }


def next_run(settings: Settings, now: datetime | None = None) -> datetime:
    """Return the next time the nightly run starts, in the configured time zone."""
    zone = ZoneInfo(settings.timezone)
    now = now.astimezone(zone) if now else datetime.now(zone)
    hour, minute = parse_time_of_day(settings.nightly_time)
    candidate = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return candidate if candidate > now else candidate + timedelta(days=1)


@shared_task(
    name=NIGHTLY_TASK,
    autoretry_for=(DatabaseError, BrokerError),
    retry_backoff=30,
    retry_backoff_max=600,
    max_retries=5,
)
def enqueue_nightly(folder: str, queue: str, database_url: str | None = None) -> dict[str, int]:
    """Enqueue the scans under ``folder`` that are not recorded yet; retried when the database or broker is down."""
    return asdict(run_nightly(Path(folder), queue, database_url))


def run_nightly(folder: Path, queue: str, database_url: str | None = None):
    """Record and send the new scans under ``folder``; returns the :class:`scheduler.enqueue.EnqueueSummary`."""
    from db.database import open_database
    from scheduler.enqueue import enqueue_folder
    from worker.settings import get_settings

    if not folder.is_dir():
        raise FileNotFoundError(f"nightly drop folder not found: {folder}; check CARGOSCAN_NIGHTLY_DROP_FOLDER and its mount")

    database = open_database(database_url or get_settings().database_url)
    try:
        summary = enqueue_folder(database, folder, queue)
    finally:
        database.dispose()

    logger.info(
        "nightly run of %s: found %d scans, sent %d jobs to queue %s, skipped %d already recorded",
        folder, summary.found, summary.sent, queue, summary.skipped,
    )
    return summary


def run_nightly_command(args) -> int:
    """Handle ``cargoscan nightly``: show the schedule, or with ``--now`` enqueue the drop folder at once."""
    from scheduler.commands import UserError

    settings = Settings()
    if settings.nightly_drop_folder is None:
        if args.now:
            raise UserError("no drop folder to enqueue: set CARGOSCAN_NIGHTLY_DROP_FOLDER")
        print("nightly run disabled: CARGOSCAN_NIGHTLY_DROP_FOLDER is not set")
        return 0

    if not args.now:
        print(
            f"nightly run: enqueue {settings.nightly_drop_folder} at {settings.nightly_time} {settings.timezone} "
            f"into queue {settings.queue}; next run {next_run(settings).isoformat(timespec='minutes')}"
        )
        return 0

    try:
        summary = run_nightly(settings.nightly_drop_folder, settings.queue, settings.database_url)
    except (FileNotFoundError, BrokerError) as error:
        raise UserError(str(error)) from error
    print(f"found {summary.found} scans, sent {summary.sent} jobs to queue {settings.queue}, "
          f"skipped {summary.skipped} already recorded")
    return 0
