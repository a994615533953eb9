"""The shape of a job configuration: one frozen dataclass per section of the job file.

This module says what each key is, its default and its allowed values (in field metadata, read by the
parser), and derives the effective values. Reading, overriding and validating a job file is
:mod:`embedder.config.loading` and :mod:`embedder.config.rules`; import the public names from ``embedder.config``.

Every field is a key of the job file under its section (``[embedding] dimensions = 512``). The dataclasses
hold no secrets: the API key and the Milvus token are read from the environment when they are needed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any

from embedder.config.chunking import ChunkingConfig
from embedder.config.fields import checked
from embedder.config.sinks import MilvusSinkConfig, SinkConfig
from embedder.jina.models import API_KEY_ENVS, DEFAULT_API_BASE, EMBEDDING_TYPES, ModelSpec, is_known_model, model_spec
from embedder.jina.windows import DEFAULT_CHARS_PER_TOKEN, LATE_CHUNKING_MARGIN, WINDOW_OVERLAP_CHUNKS
from embedder.secrets import mask_uri, secret_marker

MODES = ("full", "incremental")
SOURCE_FORMATS = ("parquet", "jsonl", "csv", "arrow")
ID_TYPES = ("int64", "string")
RESERVED_COLUMNS = ("id", "text", "_row", "vector", "content_hash")
"""Names a shard's rows carry besides the passthrough columns: no passthrough column may take them."""
FINGERPRINT_VERSION = 1
"""Bumped when the meaning of a fingerprint field changes, so old ledgers are refused rather than misread."""


def parse_template(template: str) -> tuple[str, ...]:
    """The columns ``template`` (``"{title}\\n\\n{body}"``) names, in order of first use. ``ValueError`` says why
    it is not a template of plain ``{column}`` fields."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"not a format string: {exc}") from None
    names: list[str] = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or name.isdigit() or any(ch in name for ch in ".[]"):
            raise ValueError(f"'{{{name}}}' is not a column name; use plain {{column}} fields")
        if spec or conversion:
            raise ValueError(f"'{{{name}}}' has a conversion or format spec; use plain {{column}} fields")
        names.append(name)
    if not names:
        raise ValueError("names no column; write columns as {column}")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """``[source]``: where the rows come from and which columns make the text."""

    path: str
    """File, directory, glob, or filesystem URI (``s3://bucket/prefix``, ``gs://...``). Required."""
    format: str | None = checked(None, choices=SOURCE_FORMATS)
    """parquet | jsonl | csv | arrow; ``None``: inferred from the file extensions."""
    id_column: str = "id"
    """Column holding each row's unique id (the output's primary key)."""
    text_column: str | None = "text"
    """Column holding the text to embed; ``None`` when ``text_template`` is used."""
    text_template: str | None = None
    """``str.format`` template over columns (``"{title}\\n\\n{body}"``), instead of ``text_column``."""
    passthrough: tuple[str, ...] = ()
    """Input columns copied unchanged next to each vector."""
    shard_rows: int = checked(5000, ge=1)
    """Target rows per shard (the unit of work, of output files and of checkpoints)."""
    s3_endpoint: str = ""
    """Endpoint of an S3-compatible store for every ``s3://`` path of the job; ``""``: AWS."""
    id_type: str | None = checked(None, choices=ID_TYPES)
    """``int64`` or ``string``: convert ids to that type (CSV ids are text); ``None``: as stored."""
    document_column: str | None = None
    """Pre-chunked input: the column naming each row's document. A document's rows must be contiguous."""
    chunk_order_column: str | None = None
    """Pre-chunked input: the column ordering a document's rows (``None``: their order in the input)."""

    @property
    def template_fields(self) -> tuple[str, ...]:
        """Column names used by ``text_template``, in order of first use (``()`` without a template)."""
        return () if self.text_template is None else parse_template(self.text_template)

    @property
    def text_columns(self) -> tuple[str, ...]:
        """The columns the text is built from."""
        return (self.text_column,) if self.text_column is not None else self.template_fields

    @property
    def document_columns(self) -> tuple[str, ...]:
        """Pre-chunked input: the document column and the order column (``()`` otherwise)."""
        return tuple(c for c in (self.document_column, self.chunk_order_column) if c is not None)

    @property
    def read_columns(self) -> tuple[str, ...]:
        """Every column a worker reads: id, text columns, document columns, passthrough (no duplicates)."""
        return tuple(dict.fromkeys((self.id_column, *self.text_columns, *self.document_columns, *self.passthrough)))


@dataclass(frozen=True, kw_only=True)
class EmbeddingConfig:
    """``[embedding]``: the model, the request fields, and how requests are made."""

    model: str = "jina-embeddings-v3"
    """Jina model name; unknown names need ``allow_unknown_model``."""
    allow_unknown_model: bool = False
    """Accept a model name not in :data:`embedder.jina.models.MODELS` (its limits are then not checked)."""
    task: str | None = None
    """Task adapter; when omitted the loader picks ``retrieval.passage`` if the model has it, else none."""
    dimensions: int | None = None
    """Output size (Matryoshka truncation); ``None``: the model's default size."""
    late_chunking: bool = False
    """Embed a document's chunks as one sequence, then pool each chunk (needs a model that supports it). A request
    then holds one document's chunks only."""
    window_tokens: int = checked(0, ge=0)
    """Late chunking: estimated tokens one request (a window of a document's chunks) may hold; 0: 80% of the
    model's late-chunking cut (8,192 tokens for v3)."""
    window_overlap_chunks: int = checked(WINDOW_OVERLAP_CHUNKS, ge=0)
    """Late chunking: chunks that consecutive windows of a document longer than a window share."""
    chars_per_token: float = checked(DEFAULT_CHARS_PER_TOKEN, gt=0)
    """The job's token estimate (characters per token), for chunk sizes, late-chunking windows and plans. About 4
    for English; lower it for scripts with fewer characters per token (2 for most European languages' long
    words is safe, 1 for Chinese or Japanese)."""
    normalized: bool = True
    """Ask for L2-normalised vectors."""
    truncate: bool = False
    """Let the API cut inputs over the model's token limit (``false``: such rows are dead-lettered)."""
    embedding_type: str = checked("base64", choices=EMBEDDING_TYPES)
    """Wire format (``base64`` is ~4x smaller); the stored vector is float32 either way."""
    api_base: str = DEFAULT_API_BASE
    """Base URL of the API; the environment variable ``JINA_API_BASE`` overrides it."""
    api_key_env: str = "JINA_API_KEY"
    """NAME of the environment variable holding the key (never the key itself)."""
    batch_size: int = checked(0, ge=0)
    """Inputs per request; 0: the model's ``max_inputs``."""
    max_tokens_per_request: int = checked(0, ge=0)
    """Estimated-token budget of one request; 0: automatic."""
    timeout_s: float = checked(120.0, gt=0)
    """Seconds before one request is abandoned and retried (large requests can be slow)."""
    max_retries: int = checked(10, ge=0)
    """Retries of one request after transient failures (429, 5xx, timeouts) before it fails."""

    @property
    def spec(self) -> ModelSpec:
        """The model's limits (generic limits for a model not listed)."""
        return model_spec(self.model)

    @property
    def is_known_model(self) -> bool:
        """Whether :data:`embedder.jina.models.MODELS` lists the model (its limits are then checked)."""
        return is_known_model(self.model)

    @property
    def effective_dimensions(self) -> int:
        """The vector size the job produces."""
        return self.dimensions if self.dimensions is not None else self.spec.default_dimensions

    @property
    def effective_batch_size(self) -> int:
        """Inputs per request after applying the ``0 = model maximum`` rule."""
        return self.batch_size or self.spec.max_inputs

    @property
    def effective_window_tokens(self) -> int:
        """Late chunking: a window's budget after the ``0 = 80% of the model's cut`` rule (a margin for the
        estimate)."""
        return self.window_tokens or int(self.spec.late_chunking_max_tokens * LATE_CHUNKING_MARGIN)

    @property
    def api_key_envs(self) -> tuple[str, ...]:
        """Environment variables searched for the key, in order."""
        return tuple(dict.fromkeys((self.api_key_env, *API_KEY_ENVS)))

    def api_key_source(self, environ: Mapping[str, str] = os.environ) -> str | None:
        """Name of the first variable of :attr:`api_key_envs` that is set and non-empty."""
        return next((name for name in self.api_key_envs if environ.get(name)), None)

    def api_key(self, environ: Mapping[str, str] = os.environ) -> str | None:
        """The API key from the environment, or ``None``."""
        name = self.api_key_source(environ)
        return environ[name] if name is not None else None


@dataclass(frozen=True, kw_only=True)
class LimitsConfig:
    """``[limits]``: the key's quota, enforced for the whole cluster, and the price used for estimates."""

    rpm: int = checked(500, ge=1)
    """Requests per minute."""
    tpm: int = checked(1_000_000, ge=1)
    """Tokens per minute."""
    max_concurrency: int = checked(5, ge=1)
    """Requests in flight at once across all workers."""
    price_per_million_tokens: float = checked(0.05, ge=0)
    """USD per million tokens, for cost estimates and reports only."""
    max_failed_fraction: float = checked(0.1, ge=0, le=1)
    """Stop the job when more than this fraction of the rows handled so far was dead-lettered (1: never stop)."""
    failed_fraction_min_rows: int = checked(200, ge=0)
    """Rows handled before ``max_failed_fraction`` applies: a few bad rows at the start are not a trend."""


@dataclass(frozen=True, kw_only=True)
class WorkersConfig:
    """``[workers]``: the embedding actors."""

    count: int = checked(4, ge=1)
    """Number of EmbedWorker actors."""
    cpus_per_worker: float = checked(0.25, ge=0)
    """Ray CPUs reserved per worker (they mostly wait on the network, so a fraction)."""
    max_shards_in_flight: int = checked(0, ge=0)
    """Shards dispatched but not yet written; bounds memory. 0: ``2 × count``."""

    @property
    def effective_max_shards_in_flight(self) -> int:
        """Shards in flight after applying the ``0 = 2 × count`` rule."""
        return self.max_shards_in_flight or 2 * self.count


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """``[checkpoint]``: the ledger of finished shards."""

    path: str = ""
    """Ledger directory or URI; ``""``: derived from the first sink (see docs/configuration.md)."""


@dataclass(frozen=True, kw_only=True)
class ProgressConfig:
    """``[progress]``: live progress output."""

    interval_s: float = checked(5.0, gt=0)
    """Seconds between progress log lines when stderr is not a terminal."""


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """A whole validated job. Build it with :func:`embedder.config.loading.load_job` or ``parse_job``."""

    mode: str = checked("full", choices=MODES)
    """``full``: the whole source; ``incremental``: extend an earlier run's output with new shards."""
    name: str = ""
    """The job's name in Ray's metrics (their ``job_name`` tag); ``""``: the job file's stem. Not fingerprinted."""
    source: SourceConfig
    """``[source]``: the input rows."""
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    """``[embedding]``: model and request fields."""
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    """``[limits]``: the key's quota and price."""
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    """``[workers]``: the embedding actors."""
    sinks: tuple[SinkConfig, ...]
    """``[sink]`` or ``[[sinks]]``: one or more destinations, in file order."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """``[checkpoint]``: the ledger; its path is always filled in by the loader."""
    progress: ProgressConfig = field(default_factory=ProgressConfig)
    """``[progress]``: progress output."""
    chunking: ChunkingConfig | None = None
    """``[chunking]``: split long documents into chunks; ``None`` (no table): one vector per row."""
    config_path: str | None = None
    """The job file this came from (``None`` when built from a dict)."""

    def fingerprint_fields(self) -> dict[str, Any]:
        """What changes the vectors or their destination; a ledger of another fingerprint is refused.

        Not included: limits, workers, api_base, batch sizes, timeouts, embedding_type (the stored
        vector is the same float32 either way), the source path (shard ids already carry the file URIs).
        ``shard_rows`` is included: it decides the shard ids, so changing it would duplicate output.
        """
        emb, src = self.embedding, self.source
        fields: dict[str, Any] = {
            "fingerprint_version": FINGERPRINT_VERSION,
            "model": emb.model,
            "task": emb.task,
            "dimensions": emb.effective_dimensions,
            "normalized": emb.normalized,
            "late_chunking": emb.late_chunking,
            "truncate": emb.truncate,
            "id_column": src.id_column,
            "text_column": src.text_column,
            "text_template": src.text_template,
            # the set of output columns matters, not the order they were listed in
            "passthrough": sorted(src.passthrough),
            # shard ids hash row ranges: re-sharding the same files would write every row a second time
            "shard_rows": src.shard_rows,
            "sinks": sorted((sink.target for sink in self.sinks), key=lambda t: json.dumps(t, sort_keys=True)),
        }
        # keys added after the first release count only when set, so a job that does not use them keeps its
        # fingerprint (and its ledger) across upgrades
        if src.id_type is not None:
            fields["id_type"] = src.id_type
        fields.update(self._document_fingerprint())
        return fields

    def _document_fingerprint(self) -> dict[str, Any]:
        """What shapes chunks and late-chunking windows, when they are used."""
        emb, src = self.embedding, self.source
        fields: dict[str, Any] = {}
        if self.chunking is not None:
            fields["chunking"] = dataclasses.asdict(self.chunking)
        for name in ("document_column", "chunk_order_column"):
            if getattr(src, name) is not None:
                fields[name] = getattr(src, name)
        if self.chunking is not None or emb.late_chunking:
            fields["chars_per_token"] = emb.chars_per_token
        if emb.late_chunking:
            fields["window_tokens"] = emb.effective_window_tokens
            fields["window_overlap_chunks"] = emb.window_overlap_chunks
        return fields

    @property
    def job_name(self) -> str:
        """``name``, else the job file's stem (``jobs/nightly.toml`` → ``nightly``), else ``embedder``."""
        return self.name or (PurePath(self.config_path).stem if self.config_path else "embedder")

    @property
    def documents(self) -> bool:
        """Whether the output has a row per chunk (``doc_id``, ``chunk_index``...) rather than one per input row."""
        return self.chunking is not None or self.source.document_column is not None

    @property
    def secret_envs(self) -> tuple[str, ...]:
        """Every environment variable a secret of this job may come from: the key's and the Milvus tokens'."""
        tokens = (sink.token_env for sink in self.sinks if isinstance(sink, MilvusSinkConfig))
        return tuple(dict.fromkeys((*self.embedding.api_key_envs, *tokens)))

    @property
    def storage_options(self) -> dict[str, Any] | None:
        """Filesystem options for every ``s3://`` location of the job (source, sinks, checkpoint)."""
        return {"endpoint_override": self.source.s3_endpoint} if self.source.s3_endpoint else None

    def fingerprint(self) -> str:
        """sha256 hex of :meth:`fingerprint_fields` as canonical JSON."""
        blob = json.dumps(self.fingerprint_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def api_key(self, environ: Mapping[str, str] = os.environ) -> str | None:
        """The Jina API key: ``$<api_key_env>``, then ``$JINA_API_KEY``, then ``$JINAAI_API_KEY``."""
        return self.embedding.api_key(environ)

    def to_display_dict(self, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The effective configuration for printing; secrets appear only as set/unset markers."""
        env = os.environ if environ is None else environ
        emb = self.embedding
        embedding = asdict(emb)
        embedding.update(task=emb.task, dimensions=emb.effective_dimensions,
                         batch_size=emb.effective_batch_size, api_base=mask_uri(emb.api_base),
                         api_key=secret_marker(emb.api_key_source(env), emb.api_key_envs))
        workers = asdict(self.workers)
        workers["max_shards_in_flight"] = self.workers.effective_max_shards_in_flight
        source = asdict(self.source)
        source.update(path=mask_uri(self.source.path), passthrough=list(self.source.passthrough),
                      s3_endpoint=mask_uri(self.source.s3_endpoint))
        return {
            "config_path": self.config_path,
            "mode": self.mode,
            "name": self.job_name,
            "fingerprint": self.fingerprint(),
            "source": source,
            "embedding": embedding,
            "limits": asdict(self.limits),
            "workers": workers,
            "sinks": [sink.display(env) for sink in self.sinks],
            "checkpoint": {"path": mask_uri(self.checkpoint.path)},
            "progress": asdict(self.progress),
            "chunking": None if self.chunking is None else asdict(self.chunking),
        }


# The job file's tables, by name (``[[sinks]]`` entries pick their class by ``kind``).
SECTIONS: dict[str, type] = {"source": SourceConfig, "embedding": EmbeddingConfig, "limits": LimitsConfig,
                             "workers": WorkersConfig, "checkpoint": CheckpointConfig, "progress": ProgressConfig,
                             "chunking": ChunkingConfig}
TOP_LEVEL_KEYS = ("mode", "name", *SECTIONS, "sink", "sinks")


