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
from embedder.secrets import Secret
from embedder.source.reader import read_shard
from embedder.source.shards import Shard

FAILED_SCHEMA = pa.schema([("id", pa.string()), ("_row", pa.int64()), ("file", pa.string()),
                           ("reason", pa.string()), ("error_class", pa.string())])


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
    incremental_dir: str | None = None
    """An incremental run's classification (a location in the ledger): which rows to copy instead of embed."""
    previous_output: str | None = None
    """The Parquet output whose current version holds the vectors to copy."""
    """Hash of the fields that shape a vector (model, task, dimensions...): part of every ``content_hash``."""


class RemoteGate:
    """The client's request gate, backed by the job's rate-limiter actor."""

    def __init__(self, limiter: Any, owner: str | None = None) -> None:
        self.limiter = limiter
        self.owner = owner
        """Names the worker holding the permits, so its restarted successor can return what it held."""

    async def acquire(self, estimated_tokens: int) -> Any:
        if self.owner is None:
            ref = self.limiter.acquire.remote(estimated_tokens)
        else:
            ref = self.limiter.acquire.remote(estimated_tokens, self.owner)
        granted = asyncio.ensure_future(_await(ref))
        try:
            return await asyncio.shield(granted)
        except asyncio.CancelledError:
            # Cancelled while waiting (a sibling request of the shard failed): the limiter still grants the permit
            # later, to nobody. Hand it back when it comes, or it stays "in flight" until its lease runs out and
            # the concurrency cap starves every worker of the job.
            granted.add_done_callback(self._give_back)
            raise

    def _give_back(self, granted: asyncio.Future) -> None:
        if not granted.cancelled() and granted.exception() is None and granted.result() is not None:
            self.limiter.release.remote(granted.result(), None)

    async def release(self, permit: Any, used_tokens: int | None, rate_limited_after: float | None = None,
                      rate_limited_kind: str | None = None) -> None:
        # not awaited: the worker need not wait for the bookkeeping round trip
        self.limiter.release.remote(permit, used_tokens, rate_limited_after, rate_limited_kind)


async def _await(ref: Any) -> Any:
    return await ref


def vectors_to_arrow(vectors: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def output_table(rows: pa.Table, vectors: np.ndarray, ok: np.ndarray, passthrough: tuple[str, ...],
                 hashes: pa.Array | None = None, copied: np.ndarray | None = None) -> pa.Table:
    """``id``, ``vector`` (fixed_size_list<float32>[dim]), ``content_hash`` and the passthrough columns of the rows
    embedded."""
    mask = pa.array(ok)
    columns = {"id": rows.column("id").filter(mask), "vector": vectors_to_arrow(vectors[ok])}
    if hashes is not None:
        columns["content_hash"] = hashes.filter(mask)
    for name in passthrough:
        columns[name] = rows.column(name).filter(mask)
    if copied is not None:  # an incremental run: rows taken over from the previous version (see sinks.fanout)
        columns["_copied"] = pa.array(copied[ok])
    return pa.table(columns)


def failed_table(rows: pa.Table, shard: Shard, failures: list) -> pa.Table:
    if not failures:
        return FAILED_SCHEMA.empty_table()
    indices = pa.array([failure.index for failure in failures], type=pa.int64())
    return pa.table({
        "id": rows.column("id").take(indices).cast(pa.string()),
        "_row": rows.column("_row").take(indices),
        "file": pa.array([shard.file.uri] * len(failures), type=pa.string()),
        "reason": pa.array([failure.reason for failure in failures], type=pa.string()),
        "error_class": pa.array([failure.error_class for failure in failures], type=pa.string()),
    }, schema=FAILED_SCHEMA)


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

    async def embed_shard(self, shard: Shard) -> tuple[pa.Table, dict[str, Any]]:
        """The shard's output table and its counters (with the dead-letter rows under ``failed_rows``)."""
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
        stats = {
            "shard_id": shard.shard_id, "rows": rows.num_rows, "embedded": table.num_rows,
            "failed": len(result.failures), "tokens": result.tokens, "requests": result.requests,
            "attempts": result.attempts, "rate_limited": result.rate_limited, "splits": result.splits,
            "copied": 0 if copied is None else int(copied.sum()), "read_s": round(read_s, 3),
            "seconds": round(time.perf_counter() - started, 3),
            "failed_rows": failed_table(rows, shard, result.failures),
        }
        return table, stats

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
