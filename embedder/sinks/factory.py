"""Sinks from the job's configuration: each sink takes its own section of the job file."""

from __future__ import annotations

from embedder.config import JobConfig, MilvusSinkConfig, ParquetSinkConfig
from embedder.sinks.base import Sink
from embedder.sinks.parquet import ParquetSink


def build_sinks(config: JobConfig) -> list[Sink]:
    sinks: list[Sink] = []
    for sink_config in config.sinks:
        if isinstance(sink_config, ParquetSinkConfig):
            sinks.append(ParquetSink(sink_config, storage_options=config.storage_options))
        elif isinstance(sink_config, MilvusSinkConfig):
            from embedder.sinks.milvus import MilvusSink  # pymilvus takes ~0.5 s to import: only when used

            sinks.append(MilvusSink(sink_config))
    return sinks
