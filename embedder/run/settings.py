"""What the job's configuration means for each actor: request options, worker settings, the sinks' start info."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa

from embedder.config import EmbeddingConfig, JobConfig
from embedder.errors import FatalError
from embedder.jina.client import EmbedOptions
from embedder.run.document_embedding import LateChunking
from embedder.run.output import DOCUMENT_FIELDS
from embedder.secrets import Secret
from embedder.sinks.base import SinkStartInfo


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker needs, all plain and picklable (the key travels separately as a :class:`Secret`)."""

    config: JobConfig
    content_key: str
    """Hash of the fields that shape a vector (model, task, dimensions, chunking...): part of every content hash."""
    request_concurrency: int
    """Requests one worker keeps in flight (the limiter holds the cluster to ``limits.max_concurrency``)."""
    store_text: bool = False
    """Some sink stores the embedded text: the output table carries it."""
    incremental_dir: str | None = None
    """An incremental run's classification (a location in the ledger): which documents to copy, not embed."""
    previous_output: str | None = None
    """The Parquet output whose current version holds the vectors to copy."""

    @property
    def options(self) -> EmbedOptions:
        return embed_options(self.config)

    @property
    def late_chunking(self) -> LateChunking | None:
        emb = self.config.embedding
        if not emb.late_chunking:
            return None
        return LateChunking(emb.chars_per_token, emb.effective_window_tokens, emb.window_overlap_chunks)


def api_key_or_fail(config: JobConfig) -> Secret:
    """The Jina key from the environment, wrapped so that it never prints; ``FatalError`` naming the variables."""
    return embedding_key_or_fail(config.embedding)


def embedding_key_or_fail(emb: EmbeddingConfig) -> Secret:
    """The key ``[embedding]`` names, from this process's environment (see :func:`api_key_or_fail`)."""
    key = emb.api_key()
    if not key:
        names = " or ".join(f"${name}" for name in emb.api_key_envs)
        raise FatalError(f"no Jina API key: set {names} (the key is read only from the environment)")
    return Secret(key)


def embed_options(config: JobConfig) -> EmbedOptions:
    return embedding_options(config.embedding)


def embedding_options(emb: EmbeddingConfig) -> EmbedOptions:
    """The request fields of ``[embedding]``."""
    return EmbedOptions(model=emb.model, task=emb.task, dimensions=emb.dimensions, normalized=emb.normalized,
                        truncate=emb.truncate, late_chunking=emb.late_chunking, embedding_type=emb.embedding_type)


def content_key(config: JobConfig) -> str:
    """What, besides the text, decides a vector: the part of the fingerprint every ``content_hash`` folds in."""
    emb = config.embedding
    fields: dict[str, object] = {"model": emb.model, "task": emb.task, "dimensions": emb.effective_dimensions,
              "normalized": emb.normalized, "late_chunking": emb.late_chunking, "truncate": emb.truncate}
    if config.chunking is not None:  # chunk boundaries shape each chunk's vector
        fields["chunking"] = {**dataclasses.asdict(config.chunking), "chars_per_token": emb.chars_per_token}
    if emb.late_chunking:  # and so do the windows of a long document
        fields["windows"] = {"chars_per_token": emb.chars_per_token, "tokens": emb.effective_window_tokens,
                             "overlap": emb.window_overlap_chunks}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def worker_settings(config: JobConfig, *, incremental_dir: str | None = None,
                    previous_output: str | None = None) -> WorkerSettings:
    # each worker may run a little more than its share of the cluster's concurrency: the limiter evens it out
    per_worker = max(1, -(-config.limits.max_concurrency // config.workers.count))
    return WorkerSettings(config=config, content_key=content_key(config), request_concurrency=per_worker + 1,
                          store_text=any(sink.store_text for sink in config.sinks),
                          incremental_dir=incremental_dir, previous_output=previous_output)


def sink_start_info(config: JobConfig, sample: pa.Table) -> SinkStartInfo:
    """What the sinks learn before the first write: the model, and the columns rows will carry (from the plan's
    sample shard: the id's type and the passthrough columns' types)."""
    id_type = sample.schema.field("id").type
    fields = [pa.field("id", pa.string() if config.chunking is not None else id_type)]
    if config.documents:
        document_type = sample.schema.field("_document").type if config.source.document_column else id_type
        fields += [pa.field("doc_id", document_type), *(pa.field(name, kind) for name, kind in DOCUMENT_FIELDS)]
    fields += [sample.schema.field(name) for name in config.source.passthrough]
    schema = pa.schema(fields)
    return SinkStartInfo(model=config.embedding.model, task=config.embedding.task,
                         dimensions=config.embedding.effective_dimensions, fingerprint=config.fingerprint(),
                         passthrough_schema=schema, id_type=schema.field("id").type)
