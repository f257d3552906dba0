"""Print the figures of a chaos run and decide whether it passed."""

from __future__ import annotations

import os
from pathlib import Path

from bench.chaos_aof import read_history

SCORED = 'cargoscan_scans_total{outcome="scored"}'
FAILED = 'cargoscan_scans_total{outcome="failed"}'
REDELIVERED = "cargoscan_scans_redelivered_total"
BATCHES_FAILED = "cargoscan_batches_failed_total"
LISTED = 10


def print_report(run, timeline, audit, total_s: float) -> bool:
    """Print the run's figures; returns True when no submitted scan was lost or duplicated."""
    args = run.args
    pool = run.pool
    figures = timeline.figures
    passed = not audit.lost and not audit.duplicated

    lines = ["", "CargoScan chaos run"]
    lines += _setup_lines(run, total_s, figures)
    lines += _outcome_lines(audit, args)
    lines += _recovery_lines(run, figures)

    counted = pool.counter_sum(SCORED) + pool.counter_sum(FAILED)
    outcomes = audit.scored + audit.failed
    lines.append(
        f"  workers' metrics: scored {pool.counter_sum(SCORED):.0f}, failed {pool.counter_sum(FAILED):.0f}, "
        f"redelivered {pool.counter_sum(REDELIVERED):.0f}, batches sent back {pool.counter_sum(BATCHES_FAILED):.0f} "
        f"(each worker's last scrape; a kill follows a scrape)"
    )
    lines.append(f"  metrics count each outcome once: {_counted_once(counted, outcomes)}")
    lines.append("  worker logs:      " + ", ".join(f"{label} {count}" for label, count in pool.log_events().items()))
    lines.append(f"  result:           {'PASS' if passed else 'FAIL'}")
    print("\n".join(lines), flush=True)
    return passed


def _setup_lines(run, total_s: float, figures) -> list[str]:
    args = run.args
    persistence = "no persistence" if args.no_appendonly else "append-only file"
    settled = "never" if figures.settled_s is None else f"{figures.settled_s:.0f} s"
    lines = [
        f"  command:          {run.command_line()}",
        f"  machine:          {os.cpu_count()} CPUs, load average {_load(run.load_before)} before, {_load(os.getloadavg())} after",
        f"  workers:          {args.workers} solo-pool processes, batch size {args.batch_size}, "
        f"visibility timeout {args.visibility_timeout_s} s, {len(run.pool.workers)} started in all",
        f"  faults:           {run.pool.kills} worker kills (SIGKILL), {run.redis.starts - 1} Redis crash (SIGKILL, {persistence}, "
        f"down {args.redis_down_s:.0f} s), {run.proxy.counters.outages} database outage ({args.db_outage_s:.0f} s, "
        f"{run.proxy.counters.cut} connections cut)",
        f"  time:             {total_s:.0f} s in all; submissions and faults {figures.submission_s:.0f} s, "
        f"all scans settled at {settled}",
    ]
    lines += [f"  fault:            {note}" for note in figures.faults]
    return lines


def _outcome_lines(audit, args) -> list[str]:
    reasons = ", ".join(f"{kind} {count}" for kind, count in sorted(audit.failed_by_reason.items())) or "none"
    lines = [
        f"  submitted:        {audit.submitted} ({args.bad_scans} bad files)",
        f"  scored:           {audit.scored}",
        f"  failed:           {audit.failed} ({reasons})",
        f"  good scans failed: {len(audit.failed_good_scans)}",
        f"  lost:             {len(audit.lost)}",
        f"  duplicated:       {len(audit.duplicated)}",
    ]
    lines += [f"  reason {kind}: {reason}" for kind, reason in sorted(audit.failed_examples.items())]
    lines += [f"  good scan failed: {uri}: {reason}" for uri, reason in audit.failed_good_scans[:LISTED]]
    lines += [f"  lost: {uri}" for uri in audit.lost[:LISTED]]
    lines += [f"  duplicated: scan id {scan_id}" for scan_id in audit.duplicated[:LISTED]]
    return lines


def _recovery_lines(run, figures) -> list[str]:
    failed_chunks = set(figures.publish_failed_chunks)
    from_failed_chunks = [scan_id for scan_id, uri in figures.resent if Path(uri).parent in failed_chunks]
    others = sorted(scan_id for scan_id, uri in figures.resent if Path(uri).parent not in failed_chunks)
    lines = [
        f"  resend-stale:     {len(figures.resent)} jobs sent again in {figures.resend_rounds} rounds: "
        f"{len(from_failed_chunks)} of scans recorded while Redis was down ({len(failed_chunks)} chunks), "
        f"{len(others)} others {others[:LISTED]}",
        f"  broker:           {figures.broker_left} messages left at the end; "
        f"workers that exited on their own: {len(figures.unexpected_exits)}",
    ]
    lines += [f"  unexpected exit:  {message}" for message in figures.unexpected_exits]

    history = read_history(run.redis.folder)
    if history is not None:
        lines.append(
            f"  broker history:   {history.published} jobs published, {history.put_back} put back by workers, "
            f"{history.restored_by_sweeps} restored by {history.sweeps_that_restored} of {history.sweeps} visibility sweeps; "
            f"popped but never recorded as unacknowledged: {len(history.popped_unrecorded)} "
            f"(scan ids {history.popped_unrecorded[:LISTED]})"
        )
    return lines


def _counted_once(counted: float, outcomes: int) -> str:
    if counted == outcomes:
        return f"yes ({outcomes} outcomes, {counted:.0f} counted)"
    if counted > outcomes:
        return f"no, at least {counted - outcomes:.0f} counted twice ({outcomes} outcomes, {counted:.0f} counted)"
    # A killed worker loses whatever it counted after its last scrape.
    return f"unknown, at least {outcomes - counted:.0f} counts lost with killed workers ({outcomes} outcomes, {counted:.0f} counted)"


def _load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{value:.1f}" for value in load)
