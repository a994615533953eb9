"""The embedding worker: reads one shard's rows, embeds them under the job's rate limiter, returns Arrow tables.

A plain class so it can be tested without Ray; ``embedder.run.actors`` turns it into an async Ray actor. Each worker
owns one pooled client; many workers share a core because they spend their time waiting on the network.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from embedder import storage
from embedder.config import SourceConfig
from embedder.incremental.classify import content_hashes, copy_vectors, shard_assignment
from embedder.jina.client import EmbedOptions, JinaClient, RetryPolicy
from embedder.jina.embedding import Embedder, EmbedResult
from embedder.ledger import ShardStats
from embedder.run.gate import RemoteGate
from embedder.run.output import dead_letters, output_table
from embedder.secrets import Secret
from embedder.source.reader import read_shard
from embedder.source.shards import Shard


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker needs, all plain and picklable (the key travels separately as a :class:`Secret`)."""

    options: EmbedOptions
    source: SourceConfig
    api_base: str
    timeout_s: float = 120.0
    max_attempts: int = 10
    max_inputs: int | None = None
    max_tokens_per_request: int | None = None
    request_concurrency: int = 4
    storage_options: dict[str, Any] | None = field(default=None, hash=False)
    content_key: str = ""
    """Hash of the fields that shape a vector (model, task, dimensions...): part of every ``content_hash``."""
    incremental_dir: str | None = None
    """An incremental run's classification (a location in the ledger): which rows to copy instead of embed."""
    previous_output: str | None = None
    """The Parquet output whose current version holds the vectors to copy."""


@dataclass
class ShardOutcome:
    """A worker's answer besides the output table: the shard's stats and its dead-letter rows."""

    stats: ShardStats
    dead_letters: pa.Table


class EmbedWorker:
    """Embeds whole shards; the job's driver gives each worker a bounded number of shards at a time."""

    owner: str | None = None
    """The name this worker's limiter permits are held under (see ``embedder.run.actors.LimiterActor``)."""

    def __init__(self, settings: WorkerSettings, api_key: Secret, limiter: Any | None = None) -> None:
        self.settings = settings
        self._api_key = api_key
        self._limiter = limiter
        self._embedder: Embedder | None = None

    def _get_embedder(self) -> Embedder:
        # created on first use, inside the actor's event loop that will drive its connections
        if self._embedder is None:
            settings = self.settings
            client = JinaClient(self._api_key.reveal(), api_base=settings.api_base, timeout=settings.timeout_s,
                                retry=RetryPolicy(max_attempts=settings.max_attempts),
                                gate=RemoteGate(self._limiter, self.owner) if self._limiter is not None else None)
            self._embedder = Embedder(client, settings.options, max_inputs=settings.max_inputs,
                                      max_tokens_per_request=settings.max_tokens_per_request,
                                      concurrency=settings.request_concurrency)
        return self._embedder

    async def embed_shard(self, shard: Shard) -> tuple[pa.Table, ShardOutcome]:
        """The shard's output table (for the sinks), and its stats and dead letters (for the ledger)."""
        started = time.perf_counter()
        rows = await asyncio.to_thread(read_shard, shard, self.settings.source,
                                       storage_options=self.settings.storage_options)
        read_s = time.perf_counter() - started
        texts = rows.column("text").to_pylist()
        copies = await asyncio.to_thread(self._copies, shard)
        if copies is None:
            result, copied = await self._get_embedder().embed(texts), None
        else:
            result, copied = await self._embed_around(texts, *copies)
        table = output_table(rows, result.vectors, result.ok, self.settings.source.passthrough,
                             content_hashes(texts, self.settings.content_key), copied)
        stats = ShardStats(
            shard.shard_id, rows=rows.num_rows, embedded=table.num_rows, failed=len(result.failures),
            tokens=result.tokens, requests=result.requests, attempts=result.attempts,
            rate_limited=result.rate_limited, splits=result.splits, copied=0 if copied is None else int(copied.sum()),
            read_s=round(read_s, 3), seconds=round(time.perf_counter() - started, 3))
        return table, ShardOutcome(stats, dead_letters(rows, shard, result.failures))

    def _copies(self, shard: Shard) -> tuple[np.ndarray, np.ndarray] | None:
        """In an incremental run: positions of the shard's unchanged rows and their previous vectors."""
        settings = self.settings
        if settings.incremental_dir is None or settings.previous_output is None:
            return None
        ledger_fs, workdir = storage.resolve(settings.incremental_dir, settings.storage_options)
        assignment = shard_assignment(ledger_fs, workdir, shard.shard_id)
        if assignment.num_rows == 0:
            return None
        output_fs, _ = storage.resolve(settings.previous_output, settings.storage_options)
        dimensions = settings.options.spec.dimensions_or_default(settings.options.dimensions)
        return copy_vectors(output_fs, assignment, shard.row_start, dimensions)

    async def _embed_around(self, texts: list[str | None], positions: np.ndarray, vectors: np.ndarray
                            ) -> tuple[EmbedResult, np.ndarray]:
        """Embed every text but those at ``positions``, whose ``vectors`` are known already."""
        copied = np.zeros(len(texts), dtype=bool)
        copied[positions] = True
        send = np.flatnonzero(~copied)
        sent = await self._get_embedder().embed([texts[i] for i in send])
        result = EmbedResult(vectors=np.zeros((len(texts), vectors.shape[1]), dtype=np.float32),
                             ok=copied.copy(), tokens=sent.tokens, requests=sent.requests, attempts=sent.attempts,
                             rate_limited=sent.rate_limited, splits=sent.splits)
        result.vectors[positions] = vectors
        result.vectors[send] = sent.vectors
        result.ok[send] = sent.ok
        result.failures = [replace(failure, index=int(send[failure.index])) for failure in sent.failures]
        return result, copied

    async def shutdown(self) -> None:
        if self._embedder is not None:
            await self._embedder.client.aclose()
