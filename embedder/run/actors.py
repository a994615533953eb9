"""The job's Ray actors: the cluster-wide rate limiter, the embedding workers and the sink writer.

Only this module and the driver import Ray, so the library stays usable (and testable) without a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import ray

from embedder.errors import ConfigError
from embedder.jina.embedding import Embedder
from embedder.run import fault_hooks, quiet
from embedder.run.budget import FailureBudget
from embedder.run.limiter import Limits, SharedLimiter
from embedder.run.worker import EmbedWorker, ShardOutcome, WorkerSettings
from embedder.secrets import Secret
from embedder.sinks.base import CommitReceipt, Sink, SinkStartInfo, WriteReceipt
from embedder.sinks.fanout import commit_sinks, write_to_sinks
from embedder.source.shards import Shard


class SinkWriter:
    """Writes each shard's table to every sink of the job; a shard counts only when all of them hold it."""

    def __init__(self, sinks: Sequence[Sink], info: SinkStartInfo) -> None:
        quiet.quiet_loggers()  # Milvus Lite, faiss and gRPC speak up in this process
        self.sinks = list(sinks)
        self.error: Exception | None = None
        try:
            for sink in self.sinks:
                sink.start(info)
        except Exception as exc:  # raised again by ready(): Ray keeps only the text of a constructor's error
            self.error = exc

    def ready(self) -> None:
        if self.error is not None:
            raise self.error

    def write(self, shard_id: str, table: pa.Table) -> list[WriteReceipt]:
        self.ready()
        fault_hooks.before_sink_write(shard_id)
        return write_to_sinks(self.sinks, shard_id, table)

    def commit(self, shard_ids: Sequence[str], expected_rows: int | None = None,
               deleted_ids: pa.Array | None = None,
               receipts: Sequence[Sequence[WriteReceipt]] = ()) -> list[CommitReceipt]:
        self.ready()
        return commit_sinks(self.sinks, shard_ids, expected_rows, deleted_ids, receipts)

    def abort(self) -> None:
        """The run failed or was interrupted: each sink lets go of what it holds (finished shards stay)."""
        for sink in self.sinks:
            sink.abort()


class RayEmbedWorker(EmbedWorker):
    """An :class:`EmbedWorker` that finds the job's limiter by name, so a restarted worker finds it again
    (an actor handle among the constructor arguments would live in the object store and could be lost)."""

    def __init__(self, settings: WorkerSettings, api_key: Secret, limiter_name: str,
                 name: str | None = None, budget_name: str | None = None) -> None:
        super().__init__(settings, api_key, None)
        quiet.quiet_loggers()  # httpx logs every request at INFO
        self._limiter_name = limiter_name
        self._budget_name = budget_name
        # __init__ runs again when Ray restarts the actor: each incarnation holds its permits under its own owner
        self.owner = f"{name}/{uuid.uuid4().hex[:12]}" if name else None
        self._registered: asyncio.Future | None = None
        if self.owner is not None:
            # a restarted incarnation gives back its predecessor's permits at once, not only when it is next given
            # a shard: the other workers may be waiting for exactly those permits (a deadlock until the lease)
            with contextlib.suppress(Exception):  # embed_shard registers again anyway
                ray.get_actor(limiter_name).register.remote(self.owner)

    def _get_embedder(self) -> Embedder:
        if self._limiter is None:
            self._limiter = ray.get_actor(self._limiter_name)
        return super()._get_embedder()

    def _get_budget(self) -> Any | None:
        if self._budget is None and self._budget_name is not None:
            with contextlib.suppress(Exception):  # without it the job still runs, only without the budget
                self._budget = ray.get_actor(self._budget_name)
        return self._budget

    async def embed_shard(self, shard: Shard) -> tuple[pa.Table, ShardOutcome]:
        # Before this incarnation asks for any permit, the limiter learns it is the live one, and takes back what
        # a dead predecessor held (only the worker of the same name can tell). Every call waits for that.
        if self._registered is None:
            self._registered = asyncio.ensure_future(self._register())
        await self._registered
        return await super().embed_shard(shard)

    async def _register(self) -> None:
        if self.owner is not None:
            self._get_embedder()
            assert self._limiter is not None  # found by name in _get_embedder
            await self._limiter.register.remote(self.owner)


LimiterActor = SharedLimiter
"""What the limiter actor runs (the permits' bookkeeping is plain Python, tested without Ray)."""


def limiter_actor(limits: Limits, name: str, lease_s: float | None = None, canary: bool = True) -> Any:
    # many concurrent acquire() calls wait inside the actor's event loop; none blocks another.
    # Restarted when its node is lost (it holds no state worth keeping: a fresh window, no permits; the workers
    # find it again by name), and calls made meanwhile wait for the restart instead of failing the shard.
    return ray.remote(LimiterActor).options(num_cpus=0, max_concurrency=10_000, max_restarts=-1,
                                            max_task_retries=-1, name=name).remote(limits, lease_s, canary)


def named_limiter(name: str, limits: Limits, lease_s: float, namespace: str = "embedder") -> Any:
    """The limiter actor ``name`` of ``namespace``, started (detached: it outlives the driver that started it) by the
    first caller and found by every other; ``ConfigError`` when it was started with other limits."""
    handle: Any = ray.remote(LimiterActor).options(
        name=name, namespace=namespace, lifetime="detached", get_if_exists=True, num_cpus=0, max_concurrency=10_000,
        max_restarts=-1, max_task_retries=-1).remote(limits, lease_s)
    snapshot = ray.get(handle.snapshot.remote())
    running = Limits(rpm=snapshot["rpm"], tpm=snapshot["tpm"], max_concurrency=snapshot["max_concurrency"])
    if running != limits:
        raise ConfigError(f"the rate limiter {namespace}/{name} already runs with {running}, not {limits}: pass "
                          f"another limiter_name, or stop it first (ray.kill(ray.get_actor({name!r}, "
                          f"namespace={namespace!r})))")
    return handle


def worker_actors(count: int, cpus: float, settings: WorkerSettings, api_key: Secret, limiter_name: str,
                  budget_name: str | None = None) -> list[Any]:
    cls = ray.remote(RayEmbedWorker).options(num_cpus=cpus, max_concurrency=64, max_restarts=-1)
    return [cls.remote(settings, api_key, limiter_name, name=f"worker-{number}", budget_name=budget_name)
            for number in range(count)]


def budget_actor(max_fraction: float, min_rows: int, name: str) -> Any:
    # found by name, like the limiter, so a restarted worker finds it again; its counts are bookkeeping only
    return ray.remote(FailureBudget).options(num_cpus=0, max_restarts=-1, name=name).remote(max_fraction, min_rows)


def sink_actor(sinks: Sequence[Sink], info: SinkStartInfo) -> Any:
    # restarted when it dies: the driver then sends the shard it was writing again
    return ray.remote(SinkWriter).options(num_cpus=0, max_restarts=-1).remote(sinks, info)
