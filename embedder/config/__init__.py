"""Configuration: a job file (TOML) read, overridden and validated into one frozen :class:`JobConfig`.

The job's settings are plain data, so they travel to every actor unchanged; the API key and the Milvus token are
never among them (they are read from the environment where they are used).

    schema.py   the sections of a job file as frozen dataclasses: each key, its default and its checks
    sinks.py    the [sink] / [[sinks]] sections and the default checkpoint location
    fields.py   typed sections from TOML tables: names, types and ranges checked, errors naming the key
    rules.py    rules across keys (a model's tasks and dimensions, one Milvus Lite sink per file...)
    loading.py  TOML → ``--set`` overrides → environment → validated job

May import: ``embedder.jina.models`` (model limits), ``embedder.errors``, ``embedder.secrets``.
"""

from __future__ import annotations

from embedder.config.loading import DEFAULT_JOB_DATA, default_job, load_job, parse_job
from embedder.config.schema import (
    MODES,
    SECTIONS,
    SOURCE_FORMATS,
    CheckpointConfig,
    EmbeddingConfig,
    JobConfig,
    LimitsConfig,
    ProgressConfig,
    SourceConfig,
    WorkersConfig,
    parse_template,
)
from embedder.config.sinks import (
    MILVUS_INDEX_TYPES,
    MILVUS_METRICS,
    SINK_CLASSES,
    SINK_KINDS,
    MilvusSinkConfig,
    ParquetSinkConfig,
    SinkConfig,
    default_checkpoint_path,
)

__all__ = [
    "DEFAULT_JOB_DATA", "MILVUS_INDEX_TYPES", "MILVUS_METRICS", "MODES", "SECTIONS", "SINK_CLASSES", "SINK_KINDS",
    "SOURCE_FORMATS", "CheckpointConfig", "EmbeddingConfig", "JobConfig", "LimitsConfig", "MilvusSinkConfig",
    "ParquetSinkConfig", "ProgressConfig", "SinkConfig", "SourceConfig", "WorkersConfig", "default_checkpoint_path",
    "default_job", "load_job", "parse_job", "parse_template",
]
