"""Resident memory of one Celery worker process over many scans.

To keep the run short, the scans are small synthetic 16-bit PNGs (96x48) hard-linked under
many names, and the checkpoint's input is 32x32 rather than 224x224. Per-scan state (messages,
decoded tensors, result rows) is what could leak, and it passes through the same code.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from bench.common import database_url, enroll_exemplars, make_checkpoint, resident_memory_bytes, temporary_database
from bench.workers import celery_workers, send_jobs
from db import repository
from db.schema import SCAN_QUEUED, Scan
from models.synthetic import SceneConfig, render_scan, write_png16

WARM_UP_SCANS = 1000
_DISTINCT_FILES = 50


def _scan_files(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    sources = []
    for index in range(_DISTINCT_FILES):
        path = folder / f"source_{index:02d}.png"
        write_png16(path, render_scan(rng, with_item=index % 2 == 0, config=SceneConfig(width=96, height=48)).pixels)
        sources.append(path)

    paths = []
    for index in range(count):
        path = folder / f"scan_{index:05d}.png"
        os.link(sources[index % _DISTINCT_FILES], path)
        paths.append(path)
    return paths


def _done(database) -> int:
    with database.sessions() as session:
        return session.execute(select(func.count()).select_from(Scan).where(Scan.status != SCAN_QUEUED)).scalar_one()


def run(section, workdir: Path, scans: int, timeout_s: float) -> None:
    folder = workdir / "memory-scans"
    paths = _scan_files(folder, scans)
    exemplars = sorted(folder.glob("source_*.png"))
    checkpoint = make_checkpoint(workdir, 32)

    with temporary_database(workdir, "sqlite") as database:
        enroll_exemplars(database, checkpoint, exemplars[0::2][:4], exemplars[1::2][:4])
        with database.sessions.begin() as session:
            recorded = repository.register_scans(session, [str(path) for path in paths])
        jobs = [(recorded[str(path)][0], str(path)) for path in paths]

        settings = {"max_batch_size": "32", "max_batch_delay_ms": "200", "scan_root": str(folder), "worker_processes": "1"}
        with celery_workers(1, database_url(database), workdir, **settings) as (queue, workers):
            pid = workers[0].process.pid
            started_rss = resident_memory_bytes(pid)
            started = time.monotonic()
            send_jobs(queue, jobs)

            samples: list[tuple[int, int]] = []
            done = 0
            while done < scans and time.monotonic() - started < timeout_s:
                done = _done(database)
                samples.append((done, resident_memory_bytes(pid)))
                time.sleep(0.5)
            seconds = time.monotonic() - started

    after_warm_up = next((rss for count, rss in samples if count >= min(WARM_UP_SCANS, scans // 2)), samples[-1][1])
    final = samples[-1][1]
    peak = max(rss for _, rss in samples)
    mib = 2**20
    section.add(
        done, seconds, started_rss / mib, after_warm_up / mib, final / mib, peak / mib, (final - after_warm_up) / mib,
    )
    section.note(
        f"one solo-pool Celery worker, batch 32, 32x32 input, 96x48 16-bit PNG scans; warm-up = the first "
        f"{min(WARM_UP_SCANS, scans // 2)} scans; resident memory read from /proc/PID/status every 0.5 s"
    )
    if done < scans:
        section.note(f"only {done} of {scans} scans finished within {timeout_s:.0f} s")
