"""The embedding worker: reads one shard's rows, embeds them under the job's rate limiter, returns Arrow tables.

A plain class so it can be tested without Ray; ``embedder.actors`` turns it into an async Ray actor. Each worker
owns one pooled client; many workers share a core because they spend their time waiting on the network.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from embedder.client import EmbedOptions, JinaClient, RetryPolicy
from embedder.embedding import Embedder
from embedder.reader import ReadSpec, read_shard
from embedder.secrets import Secret
from embedder.shards import Shard

FAILED_SCHEMA = pa.schema([("id", pa.string()), ("_row", pa.int64()), ("file", pa.string()),
                           ("reason", pa.string()), ("error_class", pa.string())])


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker needs, all plain and picklable (the key travels separately as a :class:`Secret`)."""

    options: EmbedOptions
    read_spec: ReadSpec
    api_base: str
    timeout_s: float = 120.0
    max_attempts: int = 10
    max_inputs: int | None = None
    max_tokens_per_request: int | None = None
    request_concurrency: int = 4
    filesystem_options: dict[str, Any] | None = field(default=None, hash=False)
    content_key: str = ""
    """Hash of the fields that shape a vector (model, task, dimensions...): part of every ``content_hash``."""


class RemoteGate:
    """The client's request gate, backed by the job's rate-limiter actor."""

    handles_rate_limits = True

    def __init__(self, limiter: Any) -> None:
        self.limiter = limiter

    async def acquire(self, estimated_tokens: int) -> Any:
        return await self.limiter.acquire.remote(estimated_tokens)

    async def release(self, permit: Any, used_tokens: int | None, rate_limited_after: float | None = None,
                      rate_limited_kind: str | None = None) -> None:
        # not awaited: the worker need not wait for the bookkeeping round trip
        self.limiter.release.remote(permit, used_tokens, rate_limited_after, rate_limited_kind)


def vectors_to_arrow(vectors: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def content_hashes(texts: list[str | None], content_key: str) -> pa.Array:
    """A stable hash of the exact text sent with the fields that shape its vector: equal hash, equal vector."""
    key = content_key.encode()
    return pa.array([None if text is None else
                     hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16, key=key[:64]).hexdigest()
                     for text in texts], type=pa.string())


def output_table(rows: pa.Table, vectors: np.ndarray, ok: np.ndarray, passthrough: tuple[str, ...],
                 hashes: pa.Array | None = None) -> pa.Table:
    """``id``, ``vector`` (fixed_size_list<float32>[dim]), ``content_hash`` and the passthrough columns of the rows
    embedded."""
    mask = pa.array(ok)
    columns = {"id": rows.column("id").filter(mask), "vector": vectors_to_arrow(vectors[ok])}
    if hashes is not None:
        columns["content_hash"] = hashes.filter(mask)
    for name in passthrough:
        columns[name] = rows.column(name).filter(mask)
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
                                gate=RemoteGate(self._limiter) if self._limiter is not None else None)
            self._embedder = Embedder(client, settings.options, max_inputs=settings.max_inputs,
                                      max_tokens_per_request=settings.max_tokens_per_request,
                                      concurrency=settings.request_concurrency)
        return self._embedder

    async def embed_shard(self, shard: Shard) -> tuple[pa.Table, dict[str, Any]]:
        """The shard's output table and its counters (with the dead-letter rows under ``failed_rows``)."""
        started = time.perf_counter()
        rows = await asyncio.to_thread(read_shard, shard, self.settings.read_spec,
                                       filesystem_options=self.settings.filesystem_options)
        read_s = time.perf_counter() - started
        texts = rows.column("text").to_pylist()
        result = await self._get_embedder().embed(texts)
        table = output_table(rows, result.vectors, result.ok, self.settings.read_spec.passthrough,
                             content_hashes(texts, self.settings.content_key))
        stats = {
            "shard_id": shard.shard_id, "rows": rows.num_rows, "embedded": table.num_rows,
            "failed": len(result.failures), "tokens": result.tokens, "requests": result.requests,
            "attempts": result.attempts, "rate_limited": result.rate_limited, "splits": result.splits,
            "read_s": round(read_s, 3), "seconds": round(time.perf_counter() - started, 3),
            "failed_rows": failed_table(rows, shard, result.failures),
        }
        return table, stats

    async def shutdown(self) -> None:
        if self._embedder is not None:
            await self._embedder.client.aclose()
