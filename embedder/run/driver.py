"""The job's driver: shards go out to workers, tables go from workers to the sink, markers go to the ledger.

Data flows one way. The driver holds shard metadata, ObjectRefs and counters — never the vectors: a worker's table
travels as an ObjectRef straight into the sink actor. At most ``max_shards_in_flight`` shards are embedded or
being written at once, which bounds memory whatever the corpus size.

What can fail, and what happens:
- a worker dies → Ray restarts it; its shard is given out again (and its half-finished work is lost, unpaid for
  only if the API had not answered yet);
- the sink actor dies → Ray restarts it; the shard it was writing is written again from the same table;
- a fatal API error (bad key, no balance, invalid request fields) → the job stops at once, keeping every shard
  already marked done;
- a transient error that outlived the client's retries → the shard is tried again, up to ``SHARD_ATTEMPTS``;
- Ctrl-C → stops handing out work, keeps everything finished, exits 130 with the ledger consistent.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError, WorkerCrashedError

from embedder.errors import EmbedderError, FatalError, InputError, PermanentError, SinkError
from embedder.ledger.checkpoint import Ledger
from embedder.run import actors as actors
from embedder.run.progress import ProgressDisplay, ProgressState
from embedder.sinks.base import Sink, SinkStartInfo
from embedder.source.shards import Shard

log = logging.getLogger(__name__)

SHARD_ATTEMPTS = 3
"""Times a shard is tried when transient errors outlive the client's own retries, or its worker dies."""
LOST_WORKER_ATTEMPTS = 20
"""Times a shard is given out again because its worker died (a lost node takes several actors at once)."""
LOST_WORKER_PAUSE_S = 5.0
ACTOR_LOST = (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError)


@dataclass
class DriverSettings:
    workers: int
    cpus_per_worker: float
    max_shards_in_flight: int
    heartbeat_s: float = 5.0


@dataclass
class _InFlight:
    shard: Shard
    worker: int
    table_ref: Any = None
    stats: dict | None = None
    attempts: int = 1
    lost: int = 0


@dataclass
class RunOutcome:
    status: str  # "completed" | "failed" | "interrupted"
    progress: ProgressState
    error: str | None = None
    commit: list = field(default_factory=list)


def unwrap(exc: BaseException) -> BaseException:
    """The error a remote task raised, without Ray's wrapper."""
    if isinstance(exc, RayTaskError) and exc.cause is not None:
        return exc.cause
    return exc


class Driver:
    def __init__(self, *, settings: DriverSettings, ledger: Ledger, worker_args: tuple, limiter: Any,
                 sinks: list[Sink], sink_info: SinkStartInfo, progress: ProgressState,
                 display: ProgressDisplay) -> None:
        self.settings = settings
        self.ledger = ledger
        self.progress = progress
        self.display = display
        self.limiter = limiter
        self.workers = actors.worker_actors(settings.workers, settings.cpus_per_worker, *worker_args)
        self.sink = actors.sink_actor(sinks, sink_info)
        self._load = [0] * settings.workers
        self._avoid_until = [0.0] * settings.workers  # a worker found lost gets no shard until it is back
        self._embedding: dict[Any, _InFlight] = {}  # stats ObjectRef -> shard
        self._writing: dict[Any, _InFlight] = {}  # write ObjectRef -> shard

    # --- handing out work -------------------------------------------------------------------------------------
    def _submit(self, item: _InFlight) -> None:
        now = time.monotonic()
        worker = min(range(len(self.workers)), key=lambda w: (self._avoid_until[w] > now, self._load[w]))
        item.worker = worker
        self._load[worker] += 1
        table_ref, stats_ref = self.workers[worker].embed_shard.options(num_returns=2).remote(item.shard)
        item.table_ref = table_ref
        self._embedding[stats_ref] = item

    def _write(self, item: _InFlight) -> None:
        self._writing[self.sink.write.remote(item.shard.shard_id, item.table_ref)] = item

    # --- results ----------------------------------------------------------------------------------------------
    def _on_embedded(self, ref: Any, queue: deque[_InFlight]) -> None:
        item = self._embedding.pop(ref)
        self._load[item.worker] -= 1
        try:
            item.stats = ray.get(ref)
        except Exception as raw:
            exc = unwrap(raw)
            with contextlib.suppress(Exception):  # the table ref holds the same error: reading it keeps Ray
                ray.get(item.table_ref, timeout=0)  # from printing it as an "Unhandled error" traceback
            if isinstance(exc, PermanentError | InputError | SinkError) or (
                    isinstance(exc, EmbedderError) and not getattr(exc, "retryable", False)):
                raise exc from None
            if isinstance(raw, ACTOR_LOST) and item.lost < LOST_WORKER_ATTEMPTS:
                # the worker (or its node) died: not the shard's fault, so it costs none of its attempts; the
                # worker gets no shard while Ray restarts it (calls to it fail at once meanwhile)
                item.lost += 1
                self._avoid_until[item.worker] = time.monotonic() + LOST_WORKER_PAUSE_S
                log.warning("worker %d lost while embedding shard %s (%s); trying it again", item.worker,
                            item.shard.shard_id, type(raw).__name__)
                item.table_ref = None
                queue.appendleft(item)
                return
            self._retry(item, queue, f"{type(exc).__name__}: {exc}")
            return
        self._write(item)

    def _on_written(self, ref: Any, queue: deque[_InFlight]) -> None:
        item = self._writing.pop(ref)
        try:
            ray.get(ref)
        except Exception as raw:
            exc = unwrap(raw)
            if isinstance(exc, ACTOR_LOST):
                log.warning("sink actor lost while writing shard %s; writing it again", item.shard.shard_id)
                self._write(item)  # the restarted sink gets the same table
                return
            raise exc from None
        stats = dict(item.stats or {})
        failed_rows = stats.pop("failed_rows", None)
        shard = item.shard
        info = {**stats, "file": shard.file.uri, "row_start": shard.row_start, "row_count": shard.row_count}
        self.ledger.mark_done(shard.shard_id, info, failed_rows if failed_rows is not None and
                              failed_rows.num_rows else None)
        self._count(stats)
        item.table_ref = None  # let the object store free the vectors

    def _retry(self, item: _InFlight, queue: deque[_InFlight], reason: str) -> None:
        if item.attempts >= SHARD_ATTEMPTS:
            raise EmbedderError(f"shard {item.shard.shard_id} ({item.shard.file.uri}, rows {item.shard.row_start}"
                                f"..{item.shard.row_start + item.shard.row_count - 1}) failed {item.attempts} "
                                f"times; last error: {reason}")
        log.warning("shard %s failed (%s); trying it again", item.shard.shard_id, reason)
        item.attempts += 1
        item.table_ref = None
        queue.appendleft(item)

    def _count(self, stats: dict) -> None:
        p = self.progress
        p.shards_done += 1
        p.rows_done += stats.get("rows", 0)
        p.rows_embedded += stats.get("embedded", 0)
        p.rows_copied += stats.get("copied", 0)
        p.rows_failed += stats.get("failed", 0)
        p.tokens += stats.get("tokens", 0)
        p.requests += stats.get("requests", 0)
        p.retries += stats.get("attempts", 0) - stats.get("requests", 0)

    def _refresh(self, *, force: bool = False) -> None:
        try:
            snapshot = ray.get(self.limiter.snapshot.remote(), timeout=5)
            self.progress.tokens_last_minute = snapshot["tokens_last_minute"]
            self.progress.rate_limited = snapshot["rate_limited"]
        except Exception:
            pass
        self.display.update(force=force)

    # --- the loop ---------------------------------------------------------------------------------------------
    def run(self, shards: list[Shard]) -> RunOutcome:
        queue = deque(_InFlight(shard, -1) for shard in shards)
        last_heartbeat = 0.0
        try:
            while queue or self._embedding or self._writing:
                while queue and len(self._embedding) + len(self._writing) < self.settings.max_shards_in_flight:
                    self._submit(queue.popleft())
                ready, _ = ray.wait([*self._embedding, *self._writing], num_returns=1, timeout=0.5)
                for ref in ready:
                    if ref in self._embedding:
                        self._on_embedded(ref, queue)
                    else:
                        self._on_written(ref, queue)
                now = time.monotonic()
                self._refresh()
                if now - last_heartbeat >= self.settings.heartbeat_s:
                    last_heartbeat = now
                    self.ledger.write_heartbeat(self.progress.as_dict())
        except KeyboardInterrupt:
            self._refresh(force=True)
            return RunOutcome("interrupted", self.progress, "interrupted (Ctrl-C): finished shards are kept")
        except FatalError as exc:
            self._refresh(force=True)
            return RunOutcome("failed", self.progress, f"the embeddings API refused the job: {exc}")
        except EmbedderError as exc:
            self._refresh(force=True)
            return RunOutcome("failed", self.progress, str(exc))
        self._refresh(force=True)
        return RunOutcome("completed", self.progress)

    def commit(self, shard_ids: list[str], expected_rows: int | None = None, deleted_ids: Any = None) -> list:
        return ray.get(self.sink.commit.remote(shard_ids, expected_rows, deleted_ids))

    def shutdown(self) -> None:
        for handle in [*self.workers, self.sink]:
            with contextlib.suppress(Exception):
                ray.kill(handle, no_restart=True)
