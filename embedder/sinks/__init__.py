"""The sinks: where finished shards go. Every sink has the same life, like Ray Data's ``Datasink``:
start → write (per shard, idempotent, a typed receipt) → commit (once, after a complete run) / abort.

    base.py           the :class:`Sink` life and its receipts
    parquet.py        one part file per shard and a versioned manifest
    milvus.py         upserts by id into a Milvus collection (Milvus Lite for a local path)
    milvus_schema.py  Arrow columns as Milvus fields, the check of an existing collection, protobuf encoding
    milvus_bm25.py    BM25 full text: the function, its sparse field and index, the check of an existing collection
    milvus_search.py  searching a job's collection: dense, or hybrid (dense + BM25, RRF), by chunk or by document
    fanout.py         one shard to every sink of a job, one commit to all
    factory.py        sinks from the job's configuration (each sink takes its own config section)

May import: ``embedder.config``, ``embedder.storage``, ``embedder.errors``, ``embedder.secrets``; pymilvus only in
the Milvus modules.
"""

from __future__ import annotations

from embedder.sinks.base import CommitReceipt, Sink, SinkStartInfo, WriteReceipt, check_vector_column
from embedder.sinks.parquet import ParquetSink

__all__ = ["CommitReceipt", "ParquetSink", "Sink", "SinkStartInfo", "WriteReceipt", "check_vector_column"]
