"""Destinations for embedded shards: the :class:`Sink` life (start → write → commit / abort) and its receipts."""

from __future__ import annotations

from embedder.sinks.base import CommitReceipt, Sink, SinkStartInfo, WriteReceipt, check_vector_column
from embedder.sinks.parquet import ParquetSink

__all__ = ["CommitReceipt", "ParquetSink", "Sink", "SinkStartInfo", "WriteReceipt", "check_vector_column"]
