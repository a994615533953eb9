"""The job's driver loop: shards go out to workers, tables go from workers to the sink, markers go to the ledger.

Data flows one way. The driver holds shard metadata, ObjectRefs and counters — never the vectors: a worker's table
travels as an ObjectRef straight into the sink actor. At most ``max_shards_in_flight`` shards are embedded or
being written at once, which bounds memory whatever the corpus size.

What can fail, and what happens:
- a worker dies → Ray restarts it; its shard is given out again (and its half-finished work is lost, unpaid for
  only if the API had not answered yet);
- the sink actor dies → Ray restarts it; the shard it was writing is written again from the same table, up to
  ``SINK_WRITE_ATTEMPTS`` times in all, then the job stops naming the shard;
- a storage error (``embedder.storage.errors``) → transient ones were retried where they happened; a shard whose
  read still failed is tried again like any shard, a permanent one (not found, access denied, disk full) stops the
  job naming the operation and the path; a failed heartbeat is logged and skipped;
- a fatal API error (bad key, no balance, invalid request fields) → the job stops at once, keeping every shard
  already marked done;
- a transient error that outlived the client's retries → the shard is tried again, up to ``SHARD_ATTEMPTS``;
- more than ``limits.max_failed_fraction`` of the rows dead-lettered (the budget actor, :mod:`.budget`) → the job
  stops, keeping every shard already marked done;
- Ctrl-C → stops handing out work, keeps everything finished, exits 130 with the ledger consistent.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError, WorkerCrashedError

from embedder.errors import EmbedderError, FatalError, InputError, PermanentError, SinkError
from embedder.ledger import DoneMarker, Heartbeat, Ledger
from embedder.run.budget import stop_error
from embedder.run.execution import RunOutcome
from embedder.run.exits import fatal_message
from embedder.run.progress import ProgressTracker
from embedder.run.progress_display import ProgressDisplay
from embedder.run.resilience import HeartbeatWriter, SinkDeaths, add_write_retries
from embedder.run.worker import ShardOutcome
from embedder.sinks.base import WriteReceipt
from embedder.source.shards import Shard

log = logging.getLogger(__name__)

SHARD_ATTEMPTS = 3
"""Times a shard is tried when transient errors outlive the client's own retries, or its worker dies."""
LOST_WORKER_ATTEMPTS = 20
"""Times a shard is given out again because its worker died (a lost node takes several actors at once)."""
LOST_WORKER_PAUSE_S = 5.0
SINK_WRITE_ATTEMPTS = 3
"""Times a shard's write is sent to the sink actor when the actor dies during it; then the job stops."""
HEARTBEAT_S = 5.0
ACTOR_LOST = (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError)


@dataclass
class _InFlight:
    shard: Shard
    worker: int = -1
    table_ref: Any = None
    outcome: ShardOutcome | None = None
    attempts: int = 1
    lost: int = 0
    sink_lost: int = 0
    write_number: int = 0


def unwrap(exc: BaseException) -> BaseException:
    """The error a remote task raised, without Ray's wrapper."""
    if isinstance(exc, RayTaskError) and exc.cause is not None:
        return exc.cause
    return exc


class Driver:
    """Runs the shards to embed through the worker actors and the sink actor, bounded by ``max_in_flight``."""

    def __init__(self, *, workers: list[Any], sink: Any, limiter: Any, ledger: Ledger, tracker: ProgressTracker,
                 display: ProgressDisplay, max_in_flight: int, sink_count: int, metrics: Any = None,
                 budget: Any = None) -> None:
        self.workers, self.sink, self.limiter = workers, sink, limiter
        self.metrics = metrics  # a run.metrics.JobMetrics, or None: the figures go to Ray's metrics too
        self.ledger, self.tracker, self.display = ledger, tracker, display
        self.max_in_flight = max_in_flight
        self.budget = budget  # the dead-letter budget actor (embedder.run.budget), asked after each refresh
        self.receipts: list[list[WriteReceipt]] = [[] for _ in range(sink_count)]
        self._load = [0] * len(workers)
        self._avoid_until = [0.0] * len(workers)  # a worker found lost gets no shard until it is back
        self._embedding: dict[Any, _InFlight] = {}  # outcome ObjectRef -> shard
        self._writing: dict[Any, _InFlight] = {}  # write ObjectRef -> shard
        self._beats = HeartbeatWriter(ledger)  # a failed heartbeat is logged and skipped, never fatal
        self._sink_deaths = SinkDeaths()

    # --- handing out work -------------------------------------------------------------------------------------
    def _submit(self, item: _InFlight) -> None:
        now = time.monotonic()
        worker = min(range(len(self.workers)), key=lambda w: (self._avoid_until[w] > now, self._load[w]))
        item.worker = worker
        self._load[worker] += 1
        table_ref, outcome_ref = self.workers[worker].embed_shard.options(num_returns=2).remote(item.shard)
        item.table_ref = table_ref
        self._embedding[outcome_ref] = item

    def _write(self, item: _InFlight) -> None:
        item.write_number = self._sink_deaths.submitted()
        self._writing[self.sink.write.remote(item.shard.shard_id, item.table_ref)] = item

    # --- results ----------------------------------------------------------------------------------------------
    def _on_embedded(self, ref: Any, queue: deque[_InFlight]) -> None:
        item = self._embedding.pop(ref)
        self._load[item.worker] -= 1
        try:
            item.outcome = ray.get(ref)
        except Exception as raw:
            exc = unwrap(raw)
            with contextlib.suppress(Exception):  # the table ref holds the same error: reading it keeps Ray
                ray.get(item.table_ref, timeout=0)  # from printing it as an "Unhandled error" traceback
            if isinstance(exc, PermanentError | InputError | SinkError) or (
                    isinstance(exc, EmbedderError) and not getattr(exc, "retryable", False)):
                raise exc from None
            if isinstance(raw, ACTOR_LOST) and item.lost < LOST_WORKER_ATTEMPTS:
                self._requeue_lost(item, raw, queue)
                return
            self._retry(item, queue, f"{type(exc).__name__}: {exc}")
            return
        self._write(item)

    def _requeue_lost(self, item: _InFlight, raw: BaseException, queue: deque[_InFlight]) -> None:
        # the worker (or its node) died: not the shard's fault, so it costs none of its attempts; the worker gets no
        # shard while Ray restarts it (calls to it fail at once meanwhile)
        item.lost += 1
        self._avoid_until[item.worker] = time.monotonic() + LOST_WORKER_PAUSE_S
        log.warning("worker %d lost while embedding shard %s (%s); trying it again", item.worker,
                    item.shard.shard_id, type(raw).__name__)
        item.table_ref = None
        queue.appendleft(item)

    def _on_written(self, ref: Any) -> None:
        item = self._writing.pop(ref)
        try:
            receipts: list[WriteReceipt] = ray.get(ref)
        except Exception as raw:
            exc = unwrap(raw)
            if isinstance(exc, ACTOR_LOST):
                self._on_sink_lost(item)
                return
            raise exc from None
        for mine, receipt in zip(self.receipts, receipts, strict=True):
            mine.append(receipt)
        assert item.outcome is not None
        shard, stats = item.shard, item.outcome.stats
        add_write_retries(stats, receipts)
        marker = DoneMarker(stats, file=shard.file.uri, row_start=shard.row_start, row_count=shard.row_count)
        dead = item.outcome.dead_letters
        self.ledger.mark_done(marker, dead if dead.num_rows else None)
        self.tracker.count(stats)
        item.table_ref = None  # let the object store free the vectors

    def _on_sink_lost(self, item: _InFlight) -> None:
        # charged to the write the actor was running when it died, not to those queued behind it
        pending = [(w.write_number, w) for w in (item, *self._writing.values())]
        victim = self._sink_deaths.charge(item.write_number, pending)
        if victim is not None:
            victim.sink_lost += 1
            if victim.sink_lost >= SINK_WRITE_ATTEMPTS:
                raise SinkError(f"the sink actor died {victim.sink_lost} times while writing shard "
                                f"{victim.shard.shard_id} ({victim.shard.describe()}); stopping (finished shards "
                                "are kept; see the sink actor's log for why it died)")
        log.warning("sink actor lost while writing shard %s; writing it again", item.shard.shard_id)
        self._write(item)  # the restarted sink gets the same table

    def _retry(self, item: _InFlight, queue: deque[_InFlight], reason: str) -> None:
        if item.attempts >= SHARD_ATTEMPTS:
            raise EmbedderError(f"shard {item.shard.shard_id} ({item.shard.describe()}) failed {item.attempts} "
                                f"times; last error: {reason}")
        log.warning("shard %s failed (%s); trying it again", item.shard.shard_id, reason)
        item.attempts += 1
        item.table_ref = None
        queue.appendleft(item)

    def _refresh(self, *, force: bool = False) -> None:
        progress = self.tracker.progress
        progress.shards_in_flight = len(self._embedding) + len(self._writing)
        snapshot = None
        progress.shards_writing = len(self._writing)
        with contextlib.suppress(Exception):  # a limiter restarting after a node loss: keep the last figures
            snapshot = ray.get(self.limiter.snapshot.remote(), timeout=5)
            progress.tokens_last_minute = snapshot["tokens_last_minute"]
            progress.rate_limited = snapshot["rate_limited"]
        self.display.update(force=force)
        if self.metrics is not None:
            self.metrics.report(self.tracker.snapshot(), snapshot, final=force)

    def _check_budget(self) -> None:
        if self.budget is None:
            return
        verdict = None
        with contextlib.suppress(Exception):  # a budget actor restarting: ask again next time
            verdict = ray.get(self.budget.verdict.remote(), timeout=5)
        if verdict:
            raise stop_error(verdict)

    def _heartbeat(self, *, final: bool = False) -> None:
        self._beats.write(Heartbeat(self.tracker.snapshot(), final=final))

    # --- the loop ---------------------------------------------------------------------------------------------
    def run(self, shards: list[Shard]) -> RunOutcome:
        queue = deque(_InFlight(shard) for shard in shards)
        try:
            self._loop(queue)
            outcome = RunOutcome("completed")
        except KeyboardInterrupt:
            outcome = RunOutcome("interrupted", "interrupted (Ctrl-C): finished shards are kept", "KeyboardInterrupt")
        except FatalError as exc:
            outcome = RunOutcome("failed", fatal_message(exc), type(exc).__name__)
        except EmbedderError as exc:
            outcome = RunOutcome("failed", str(exc), type(exc).__name__)
        self._settle()
        self._refresh(force=True)
        self._heartbeat(final=True)
        outcome.receipts = self.receipts
        outcome.heartbeats_failing = self._beats.failing
        return outcome

    def _settle(self, timeout_s: float = 5.0) -> None:
        """A run that stopped early: cancel the embedding still going on and read every result, so that no failed
        result is left unread (Ray prints those as "Unhandled error" tracebacks). Unmarked shards are done again by
        the next run."""
        for ref in self._embedding:
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        refs = [*self._embedding, *self._writing,
                *(item.table_ref for item in self._embedding.values() if item.table_ref is not None)]
        if refs:
            with contextlib.suppress(Exception):
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
                for ref in ready:
                    with contextlib.suppress(Exception):
                        ray.get(ref, timeout=0)
        self._embedding.clear()
        self._writing.clear()

    def _loop(self, queue: deque[_InFlight]) -> None:
        last_heartbeat = 0.0
        while queue or self._embedding or self._writing:
            while queue and len(self._embedding) + len(self._writing) < self.max_in_flight:
                self._submit(queue.popleft())
            ready, _ = ray.wait([*self._embedding, *self._writing], num_returns=1, timeout=0.5)
            for ref in ready:
                if ref in self._embedding:
                    self._on_embedded(ref, queue)
                else:
                    self._on_written(ref)
            self._refresh()
            self._check_budget()
            now = time.monotonic()
            if now - last_heartbeat >= HEARTBEAT_S:
                last_heartbeat = now
                self._heartbeat()
