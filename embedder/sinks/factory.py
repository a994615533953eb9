"""Sinks from the job's configuration."""

from __future__ import annotations

from embedder.config.loading import JobConfig, MilvusSinkConfig, ParquetSinkConfig
from embedder.errors import ConfigError
from embedder.sinks.base import Sink
from embedder.sinks.parquet import ParquetSink


def build_sinks(config: JobConfig) -> list[Sink]:
    sinks: list[Sink] = []
    for number, sink_config in enumerate(config.sinks):
        if isinstance(sink_config, ParquetSinkConfig):
            endpoint = getattr(config.source, "s3_endpoint", "") or None
            sinks.append(ParquetSink(sink_config.path,
                                     filesystem_options={"endpoint_override": endpoint} if endpoint else None))
        elif isinstance(sink_config, MilvusSinkConfig):
            from embedder.sinks.milvus import MilvusSink  # pymilvus takes ~0.5 s to import: only when used

            sinks.append(MilvusSink.from_config(sink_config))
        else:
            raise ConfigError(f"sinks[{number}].kind = {sink_config.kind!r} is not supported")
    return sinks
