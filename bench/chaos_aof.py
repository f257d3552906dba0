"""Read the private Redis's append-only file after a chaos run, to see what the broker did with each job.

kombu's Redis transport (5.7) takes a job with BRPOP, which the append-only file records as
RPOP, and only then records it as unacknowledged with ZADD and HSET. A job popped without a
later HSET existed only in one worker's memory: if that worker or Redis died in between, the
job is gone from the broker and only ``cargoscan resend-stale`` brings it back. kombu's
visibility sweep, ``QoS.restore_visible``, sets the ``unacked_mutex`` key while it moves
expired unacknowledged jobs back to the queue, so each SET of that key marks one sweep.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

UNACKED_KEY = b"unacked"
MUTEX_KEY = b"unacked_mutex"


@dataclass
class BrokerHistory:
    published: int = 0
    # Jobs put back by a worker: rejected for requeueing, or restored when its connection closed.
    put_back: int = 0
    sweeps: int = 0
    sweeps_that_restored: int = 0
    restored_by_sweeps: int = 0
    # Scan ids of jobs popped from a queue more often than they were recorded as unacknowledged.
    popped_unrecorded: list[int] = field(default_factory=list)


def read_history(redis_folder: Path) -> BrokerHistory | None:
    """Replay the append-only files in ``redis_folder``; None when there are none or Redis rewrote them."""
    folder = redis_folder / "appendonlydir"
    manifest = folder / "appendonly.aof.manifest"
    if not manifest.is_file():
        return None

    entries = [line.split() for line in manifest.read_text().splitlines() if line.strip()]
    files = [(entry[1], entry[entry.index("type") + 1]) for entry in entries]
    bases = [name for name, kind in files if kind == "b"]
    # A rewrite folds earlier commands into a new base file, whose jobs this replay cannot see.
    if len(bases) != 1 or not bases[0].endswith(".1.base.rdb"):
        return None

    replay = _Replay()
    for name, kind in files:
        if kind == "i":
            for command in _commands((folder / name).read_bytes()):
                replay.apply(command)
    return replay.history()


class _Replay:
    """Keeps the queues as lists and counts what happens to each delivery tag."""

    def __init__(self) -> None:
        self.counts = BrokerHistory()
        self.queues: dict[bytes, list[bytes]] = {}
        self.pops: Counter[str] = Counter()
        self.records: Counter[str] = Counter()
        self.scan_by_tag: dict[str, int | None] = {}
        self.in_sweep = False
        self.sweep_restored = 0
        # kombu removes a job from the unacknowledged hash in the same transaction that pushes it back.
        self.removed_in_transaction = False

    def apply(self, command: list[bytes]) -> None:
        verb = command[0].upper()
        if verb in (b"MULTI", b"EXEC"):
            self.removed_in_transaction = False
        elif verb == b"HDEL" and command[1] == UNACKED_KEY:
            self.removed_in_transaction = True
        elif verb in (b"LPUSH", b"RPUSH"):
            self._push(verb, command[1], command[2:])
        elif verb == b"RPOP" and self.queues.get(command[1]):
            tag, scan_id = _job_identity(self.queues[command[1]].pop())
            self.pops[tag] += 1
            self.scan_by_tag[tag] = scan_id
        elif verb == b"HSET" and command[1] == UNACKED_KEY:
            self.records[command[2].decode()] += 1
        elif verb == b"SET" and command[1] == MUTEX_KEY:
            self.in_sweep = True
            self.sweep_restored = 0
            self.counts.sweeps += 1
        elif verb == b"DEL" and command[1] == MUTEX_KEY and self.in_sweep:
            self.in_sweep = False
            self.counts.sweeps_that_restored += self.sweep_restored > 0

    def _push(self, verb: bytes, key: bytes, values: list[bytes]) -> None:
        queue = self.queues.setdefault(key, [])
        for value in values:
            if verb == b"LPUSH":
                queue.insert(0, value)
            else:
                queue.append(value)

        # Transactions are contiguous in the file, but other clients' commands can fall inside a
        # sweep's mutex window. A sweep restores with RPUSH, and a rejection uses LPUSH.
        if not self.removed_in_transaction:
            self.counts.published += len(values)
        elif self.in_sweep and verb == b"RPUSH":
            self.sweep_restored += len(values)
            self.counts.restored_by_sweeps += len(values)
        else:
            self.counts.put_back += len(values)

    def history(self) -> BrokerHistory:
        self.counts.popped_unrecorded = sorted(
            self.scan_by_tag[tag] or 0 for tag, count in self.pops.items() if count > self.records[tag]
        )
        return self.counts


def _job_identity(raw: bytes) -> tuple[str, int | None]:
    """Return the delivery tag and scan id of one kombu message on a Redis list."""
    message = json.loads(raw)
    tag = message["properties"]["delivery_tag"]
    try:
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        return tag, kwargs.get("scan_id")
    except (ValueError, TypeError, KeyError):
        return tag, None


def _commands(data: bytes) -> Iterator[list[bytes]]:
    """Parse RESP arrays of bulk strings, the format of an append-only file; a torn last command is skipped."""
    position = 0
    while position < len(data):
        try:
            end = data.index(b"\r\n", position)
            count = int(data[position + 1 : end])
            position = end + 2
            arguments = []
            for _ in range(count):
                end = data.index(b"\r\n", position)
                length = int(data[position + 1 : end])
                position = end + 2
                arguments.append(data[position : position + length])
                position += length + 2
        except ValueError:
            return
        if len(arguments) == count and position <= len(data):
            yield arguments
