"""The job's Ray actors: the cluster-wide rate limiter, the embedding workers and the sink writer.

Only this module and the driver import Ray, so the library stays usable (and testable) without a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import ray

from embedder.embedding import Embedder
from embedder.limiter import Limits, RateLimiter
from embedder.secrets import Secret
from embedder.sinks.base import CommitReceipt, Sink, SinkStartInfo, WriteReceipt
from embedder.worker import EmbedWorker, WorkerSettings


class LimiterActor(RateLimiter):
    """One per job: every worker on every node asks it before each request (async actor: no thread per call)."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)


class SinkWriter:
    """Writes each shard's table to every sink of the job; a shard counts only when all of them hold it."""

    def __init__(self, sinks: Sequence[Sink], info: SinkStartInfo) -> None:
        self.sinks = list(sinks)
        for sink in self.sinks:
            sink.start(info)

    def write(self, shard_id: str, table: pa.Table) -> list[WriteReceipt]:
        return [sink.write(shard_id, table) for sink in self.sinks]

    def commit(self, shard_ids: Sequence[str]) -> list[CommitReceipt]:
        return [sink.commit(shard_ids) for sink in self.sinks]

    def abort(self) -> None:
        for sink in self.sinks:
            sink.abort()


class RayEmbedWorker(EmbedWorker):
    """An :class:`EmbedWorker` that finds the job's limiter by name, so a restarted worker finds it again
    (an actor handle among the constructor arguments would live in the object store and could be lost)."""

    def __init__(self, settings: WorkerSettings, api_key: Secret, limiter_name: str) -> None:
        super().__init__(settings, api_key, None)
        self._limiter_name = limiter_name

    def _get_embedder(self) -> Embedder:
        if self._limiter is None:
            self._limiter = ray.get_actor(self._limiter_name)
        return super()._get_embedder()


def limiter_actor(limits: Limits, name: str) -> Any:
    # many concurrent acquire() calls wait inside the actor's event loop; none blocks another
    return ray.remote(num_cpus=0, max_concurrency=10_000)(LimiterActor).options(name=name).remote(limits)


def worker_actors(count: int, cpus: float, settings: WorkerSettings, api_key: Secret, limiter_name: str) -> list[Any]:
    cls = ray.remote(num_cpus=cpus, max_concurrency=64, max_restarts=-1)(RayEmbedWorker)
    return [cls.remote(settings, api_key, limiter_name) for _ in range(count)]


def sink_actor(sinks: Sequence[Sink], info: SinkStartInfo) -> Any:
    # restarted when it dies: the driver then sends the shard it was writing again
    return ray.remote(num_cpus=0, max_restarts=-1)(SinkWriter).remote(sinks, info)
