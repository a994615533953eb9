"""Sinks from the job's configuration."""

from __future__ import annotations

from embedder.config import JobConfig
from embedder.errors import ConfigError
from embedder.sinks.base import Sink
from embedder.sinks.parquet import ParquetSink


def build_sinks(config: JobConfig) -> list[Sink]:
    sinks: list[Sink] = []
    for number, sink_config in enumerate(config.sinks):
        if sink_config.kind == "parquet":
            endpoint = getattr(config.source, "s3_endpoint", "") or None
            sinks.append(ParquetSink(sink_config.path,
                                     filesystem_options={"endpoint_override": endpoint} if endpoint else None))
        else:
            raise ConfigError(f"sinks[{number}].kind = {sink_config.kind!r} is not supported yet")
    return sinks
