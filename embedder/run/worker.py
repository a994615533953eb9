"""The embedding worker: reads one shard's rows, embeds them under the job's rate limiter, returns Arrow tables.

A plain class so it can be tested without Ray; ``embedder.run.actors`` turns it into an async Ray actor. Each worker
owns one pooled client; many workers share a core because they spend their time waiting on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from embedder import storage
from embedder.config import EmbeddingConfig
from embedder.incremental.copies import Copies, copied_documents, shard_assignment
from embedder.jina.client import JinaClient, RetryPolicy
from embedder.jina.embedding import Embedder
from embedder.ledger import ShardStats
from embedder.run.document_embedding import DocumentObserver, embed_documents
from embedder.run.gate import RemoteGate
from embedder.run.output import dead_letters, output_table
from embedder.run.settings import WorkerSettings, embedding_options
from embedder.secrets import Secret
from embedder.source.documents import Documents, build_documents, document_hash
from embedder.source.reader import read_shard
from embedder.source.shards import Shard
from embedder.storage import retry


@dataclass
class ShardOutcome:
    """A worker's answer besides the output table: the shard's stats and its dead-letter rows."""

    stats: ShardStats
    dead_letters: pa.Table


class EmbedWorker:
    """Embeds whole shards; the job's driver gives each worker a bounded number of shards at a time."""

    owner: str | None = None
    """The name this worker's limiter permits are held under (see ``embedder.run.actors.LimiterActor``)."""

    def __init__(self, settings: WorkerSettings, api_key: Secret, limiter: Any | None = None,
                 budget: Any | None = None) -> None:
        self.settings = settings
        self._api_key = api_key
        self._limiter = limiter
        self._budget = budget  # the job's dead-letter budget (an actor handle: ``record.remote``), or None
        self._embedder: Embedder | None = None

    def _get_embedder(self) -> Embedder:
        # created on first use, inside the actor's event loop that will drive its connections
        if self._embedder is None:
            gate = RemoteGate(self._limiter, self.owner) if self._limiter is not None else None
            self._embedder = build_embedder(self.settings.config.embedding, self._api_key, gate,
                                            self.settings.request_concurrency)
        return self._embedder

    async def embed_shard(self, shard: Shard) -> tuple[pa.Table, ShardOutcome]:
        """The shard's output table (for the sinks), and its stats and dead letters (for the ledger)."""
        started = time.perf_counter()
        config = self.settings.config
        retries = retry.RetryCounter()  # this shard's storage retries, reported in its stats
        rows = await asyncio.to_thread(read_shard, shard, config.source, storage_options=config.storage_options,
                                       counter=retries)
        read_s = time.perf_counter() - started
        documents = await asyncio.to_thread(build_documents, rows, config)
        copies = await asyncio.to_thread(self._copies, shard, rows, documents)
        copied = np.zeros(documents.count, dtype=bool) if copies is None else copies.documents
        embedded = await embed_documents(self._get_embedder(), documents, copied, self.settings.late_chunking,
                                         self._budget_observer(shard, rows, documents))
        vectors, written = embedded.vectors, embedded.written
        if copies is not None and copies.documents.any():
            vectors = _with_copies(vectors, documents, copies)
            written = written | copies.documents
        hashes = [None if text is None else document_hash(text, self.settings.content_key)
                  for text in documents.hashes]
        table = output_table(rows, documents, vectors, written, hashes, passthrough=config.source.passthrough,
                             as_documents=config.documents, store_text=self.settings.store_text,
                             copied=copied if copies is not None else None)
        result = embedded.result
        stats = ShardStats(
            shard.shard_id, rows=rows.num_rows, documents=documents.count, chunks=table.num_rows,
            embedded=int(embedded.written.sum()), copied=int(copied.sum()), failed=len(embedded.failures),
            tokens=result.tokens if result else 0, requests=result.requests if result else 0,
            attempts=result.attempts if result else 0, rate_limited=result.rate_limited if result else 0,
            splits=result.splits if result else 0, read_s=round(read_s, 3),
            seconds=round(time.perf_counter() - started, 3), storage_retries=retries.counts())
        return table, ShardOutcome(stats, dead_letters(rows, shard, documents, embedded.failures))

    def _get_budget(self) -> Any | None:
        return self._budget

    def _budget_observer(self, shard: Shard, rows: pa.Table, documents: Documents) -> DocumentObserver | None:
        """Tells the job's dead-letter budget each outcome as it comes, failures as (reason, file, row)."""
        budget = self._get_budget()
        if budget is None:
            return None
        file, row_numbers, doc_rows = shard.file.uri, rows.column("_row"), documents.doc_rows

        def seen(ok: int, failures: list[tuple[int, str]]) -> None:
            located = [(reason, file, row_numbers[int(doc_rows[d])].as_py()) for d, reason in failures]
            with contextlib.suppress(Exception):  # bookkeeping: never fails the shard
                budget.record.remote(ok, located)
        return seen

    def _copies(self, shard: Shard, rows: pa.Table, documents: Documents) -> Copies | None:
        """In an incremental run: the shard's unchanged documents and their previous vectors."""
        settings = self.settings
        if settings.incremental_dir is None or settings.previous_output is None:
            return None
        options = settings.config.storage_options
        ledger_fs, workdir = storage.resolve(settings.incremental_dir, options)
        assignment = shard_assignment(ledger_fs, workdir, shard.shard_id)
        if assignment.num_rows == 0:
            return None
        output_fs, _ = storage.resolve(settings.previous_output, options)
        return copied_documents(output_fs, assignment, rows, documents)

    async def shutdown(self) -> None:
        if self._embedder is not None:
            await self._embedder.client.aclose()


def build_embedder(emb: EmbeddingConfig, api_key: Secret, gate: RemoteGate | None, concurrency: int) -> Embedder:
    """The project's client and batching for ``[embedding]``: base64, retries, splitting, every attempt through
    ``gate`` (the job's rate limiter). Call it inside the event loop that will drive its connections."""
    client = JinaClient(api_key.reveal(), api_base=emb.api_base, timeout=emb.timeout_s,
                        retry=RetryPolicy(max_attempts=emb.max_retries + 1), gate=gate)
    return Embedder(client, embedding_options(emb), max_inputs=emb.batch_size or None,
                    max_tokens_per_request=emb.max_tokens_per_request or None, concurrency=concurrency)


def _with_copies(vectors: np.ndarray, documents: Documents, copies: Copies) -> np.ndarray:
    """The chunk vectors with the copied documents' previous vectors in place."""
    if vectors.shape[1] != copies.vectors.shape[1]:
        vectors = np.zeros((len(documents.texts), copies.vectors.shape[1]), dtype=np.float32)
    vectors = vectors.copy()
    vectors[copies.chunks] = copies.vectors
    return vectors
