"""What the driver does about storage faults and a dying sink: heartbeats that may fail, the storage retries of
each shard, and which shard a sink actor's death is charged to (:class:`SinkDeaths`).

A heartbeat is a convenience for ``embedder status``, never worth a run: :class:`HeartbeatWriter` logs a failed
one (once per streak of failures, without a traceback) and skips it; the next one, a few seconds later, tries
again. Storage retries of a shard's writes come back in the sinks' receipts and join the shard's stats
(:func:`add_write_retries`), so its done marker, the progress and the run report count them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TypeVar

from embedder.errors import StorageError
from embedder.ledger import Heartbeat, Ledger, ShardStats
from embedder.sinks.base import WriteReceipt
from embedder.storage.retry import RetryCounter

log = logging.getLogger("embedder.run.driver")
T = TypeVar("T")


class HeartbeatWriter:
    """Writes heartbeats to the ledger; a storage failure is logged once per streak and skipped, never raised."""

    def __init__(self, ledger: Ledger, *, failing: int = 0) -> None:
        self.ledger = ledger
        self.failing = failing
        """Heartbeats failed in a row, up to now (a writer that takes over a streak starts with it)."""
        self.skipped = 0
        """Heartbeats skipped in the whole run."""

    def write(self, beat: Heartbeat) -> bool:
        """Whether ``beat`` was written."""
        try:
            self.ledger.write_heartbeat(beat)
        except StorageError as exc:
            if not self.failing:
                log.warning("heartbeat skipped: %s; the run goes on (not logged again until a heartbeat is "
                            "written)", exc)
            self.failing += 1
            self.skipped += 1
            return False
        if self.failing:
            log.warning("heartbeat written again after %d failed one(s)", self.failing)
            self.failing = 0
        return True


def add_write_retries(stats: ShardStats, receipts: Iterable[WriteReceipt]) -> None:
    """Add the storage retries of the sinks' writes of the shard to its stats (by operation)."""
    counter = RetryCounter(stats.storage_retries)
    for receipt in receipts:
        counter.merge(receipt.storage_retries)
    stats.storage_retries = counter.counts()


class SinkDeaths:
    """Which shard a death of the (one, sequential) sink actor is charged to.

    When the actor dies, every write queued in it fails, but only the one it was running can have killed it: the
    oldest write still in flight (an actor runs one caller's calls in order). The first failure seen of a death
    charges that write; the others of the same death (submitted before it was seen) are sent again for free.
    """

    def __init__(self) -> None:
        self._sequence = 0
        self._seen_up_to = 0  # writes numbered below this were in flight when the last death was seen

    def submitted(self) -> int:
        """The number of a write just sent to the actor."""
        self._sequence += 1
        return self._sequence

    def charge(self, failed: int, in_flight: Iterable[tuple[int, T]]) -> T | None:
        """``failed`` (a write's number) was lost with the actor; ``in_flight`` are ``(number, write)`` of the
        writes still pending, the failed one included. The write to charge, or ``None`` when this death was
        already charged."""
        if failed < self._seen_up_to:
            return None
        self._seen_up_to = self._sequence + 1
        return min(in_flight, key=lambda pair: pair[0])[1]
