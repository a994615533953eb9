"""What the job's configuration means for each actor: request options, worker settings, the sinks' start info."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from embedder.config import JobConfig
from embedder.errors import FatalError
from embedder.incremental import IncrementalRun
from embedder.jina.client import EmbedOptions
from embedder.run.worker import WorkerSettings
from embedder.secrets import Secret
from embedder.sinks.base import SinkStartInfo


def api_key_or_fail(config: JobConfig) -> Secret:
    """The Jina key from the environment, wrapped so that it never prints; ``FatalError`` naming the variables."""
    key = config.api_key()
    if not key:
        names = " or ".join(f"${name}" for name in config.embedding.api_key_envs)
        raise FatalError(f"no Jina API key: set {names} (the key is read only from the environment)")
    return Secret(key)


def embed_options(config: JobConfig) -> EmbedOptions:
    emb = config.embedding
    return EmbedOptions(model=emb.model, task=emb.task, dimensions=emb.dimensions, normalized=emb.normalized,
                        truncate=emb.truncate, late_chunking=emb.late_chunking, embedding_type=emb.embedding_type)


def content_key(config: JobConfig) -> str:
    """What, besides the text, decides a vector: the part of the fingerprint every ``content_hash`` folds in."""
    emb = config.embedding
    fields = {"model": emb.model, "task": emb.task, "dimensions": emb.effective_dimensions,
              "normalized": emb.normalized, "late_chunking": emb.late_chunking, "truncate": emb.truncate}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def worker_settings(config: JobConfig, incremental: IncrementalRun | None = None) -> WorkerSettings:
    emb = config.embedding
    # each worker may run a little more than its share of the cluster's concurrency: the limiter evens it out
    per_worker = max(1, -(-config.limits.max_concurrency // config.workers.count))
    return WorkerSettings(options=embed_options(config), source=config.source, api_base=emb.api_base,
                          timeout_s=emb.timeout_s, max_attempts=emb.max_retries + 1,
                          max_inputs=emb.batch_size or None, max_tokens_per_request=emb.max_tokens_per_request or None,
                          request_concurrency=per_worker + 1, storage_options=config.storage_options,
                          content_key=content_key(config),
                          incremental_dir=incremental.workdir if incremental else None,
                          previous_output=incremental.previous_output if incremental else None)


def sink_start_info(config: JobConfig, sample: pa.Table) -> SinkStartInfo:
    names = ["id", *config.source.passthrough]
    schema = pa.schema([sample.schema.field(name) for name in names])
    return SinkStartInfo(model=config.embedding.model, task=config.embedding.task,
                         dimensions=config.embedding.effective_dimensions, fingerprint=config.fingerprint(),
                         passthrough_schema=schema, id_type=sample.schema.field("id").type)
