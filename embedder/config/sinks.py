"""The ``[sink]`` / ``[[sinks]]`` sections: where vectors go, and where the checkpoint goes by default.

Each sink kind has one frozen dataclass; the sink itself (:mod:`embedder.sinks`) takes that object and restates
none of its fields.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from embedder.config.chunking import DOCUMENT_COLUMNS
from embedder.config.fields import Context, checked
from embedder.secrets import mask_uri, secret_marker

SINK_KINDS = ("parquet", "milvus")
MILVUS_INDEX_TYPES = ("AUTOINDEX", "HNSW", "IVF_FLAT", "FLAT")
MILVUS_METRICS = ("COSINE", "IP", "L2")
MIB = 1024 * 1024
# Milvus refuses gRPC messages over 64 MiB; an insert's protobuf framing adds to the raw bytes, so keep headroom.
MILVUS_MAX_BATCH_BYTES = 48 * MIB


def is_lite_uri(uri: str) -> bool:
    """A local path (Milvus Lite, one process per database file) rather than a server URL."""
    return "://" not in uri


@dataclass(frozen=True, kw_only=True)
class ParquetSinkConfig:
    """``[sink] kind = "parquet"``: one Parquet part file per shard."""

    kind: Literal["parquet"] = "parquet"
    """Sink type."""
    path: str
    """Output directory or URI (``s3://bucket/prefix``). Required."""
    store_text: bool = False
    """Also write the embedded text (the chunk's text when chunking) in a ``text`` column."""

    @property
    def target(self) -> dict[str, Any]:
        """Where the vectors go and what columns they carry, as hashed into the fingerprint."""
        return _with_text({"kind": self.kind, "path": normalise_location(self.path)}, self.store_text)

    @property
    def location(self) -> str:
        """How the output is named in messages and reports."""
        return mask_uri(self.path)

    def display(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """The section as printed at start (no secret here)."""
        return {**asdict(self), "path": mask_uri(self.path)}


@dataclass(frozen=True, kw_only=True)
class MilvusSinkConfig:
    """``[sink] kind = "milvus"``: upserts into a Milvus collection (Milvus Lite for a local path)."""

    kind: Literal["milvus"] = "milvus"
    """Sink type."""
    uri: str = "milvus.db"
    """Local ``*.db`` path (Milvus Lite) or server URL (``http://host:19530``)."""
    collection: str = "embeddings"
    """Collection name; created when missing."""
    db_name: str = ""
    """Database on a server; ``""``: the server's default database."""
    index_type: str = checked("AUTOINDEX", choices=MILVUS_INDEX_TYPES, upper=True)
    """Vector index created with the collection."""
    index_params: dict[str, Any] = field(default_factory=dict, hash=False)
    """Extra index build parameters (``{M = 16, efConstruction = 200}`` for HNSW)."""
    metric: str = checked("COSINE", choices=MILVUS_METRICS, upper=True)
    """Similarity metric of the index."""
    id_field: str = "id"
    """Primary-key field name."""
    vector_field: str = "vector"
    """FLOAT_VECTOR field name."""
    enable_dynamic_field: bool = False
    """Create the collection with Milvus' dynamic field enabled."""
    batch_bytes: int = checked(16 * MIB, ge=1, le=MILVUS_MAX_BATCH_BYTES)
    """Upper bound of one upsert's payload."""
    token_env: str = "MILVUS_TOKEN"
    """NAME of the environment variable holding the server token (``user:password`` or API key)."""
    store_text: bool = False
    """Also store the embedded text (the chunk's text when chunking) in a ``text`` VARCHAR field."""
    bm25: bool = False
    """Add Milvus' BM25 function: the ``text`` field analysed, its sparse vector in ``sparse_field`` (hybrid search).
    Needs ``store_text``."""
    sparse_field: str = "sparse"
    """SPARSE_FLOAT_VECTOR field the BM25 function fills (with ``bm25``)."""

    @property
    def is_lite(self) -> bool:
        """True for a local Milvus Lite database file (only one process may open it)."""
        return is_lite_uri(self.uri)

    @property
    def target(self) -> dict[str, Any]:
        """Where the vectors go and what fields they carry, as hashed into the fingerprint."""
        location = normalise_location(self.uri)
        target = _with_text({"kind": self.kind, "uri": location, "db_name": self.db_name or "default",
                             "collection": self.collection}, self.store_text)
        # like store_text: only a job that asks for BM25 has it in its fingerprint
        return {**target, "bm25": True, "sparse_field": self.sparse_field} if self.bm25 else target

    @property
    def location(self) -> str:
        """How the output is named in messages and reports."""
        return f"milvus://{self.collection}"

    def token(self, environ: Mapping[str, str] = os.environ) -> str | None:
        """The server token from the environment, or ``None`` (Milvus Lite needs none)."""
        return environ.get(self.token_env) or None

    def display(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """The section as printed at start: the token only as set/unset."""
        shown = {**asdict(self), "uri": mask_uri(self.uri)}
        if self.is_lite:
            shown["token"] = "<not used by Milvus Lite>"
        else:
            source = self.token_env if self.token(environ) is not None else None
            shown["token"] = secret_marker(source, (self.token_env,))
        return shown


SinkConfig = ParquetSinkConfig | MilvusSinkConfig
SINK_CLASSES: dict[str, type[ParquetSinkConfig] | type[MilvusSinkConfig]] = {
    "parquet": ParquetSinkConfig, "milvus": MilvusSinkConfig}


def _with_text(target: dict[str, Any], store_text: bool) -> dict[str, Any]:
    # a key added after the first release counts only when set: a job that does not use it keeps its fingerprint
    return {**target, "store_text": True} if store_text else target


def check_bm25(sink: MilvusSinkConfig, passthrough: Sequence[str], prefix: str, ctx: Context) -> None:
    """``bm25`` needs the stored text, and its sparse field a name no other field of the collection has."""
    if not sink.bm25:
        return
    if not sink.store_text:
        raise ctx.invalid(f"{prefix}.bm25", "BM25 is computed from the stored text: set store_text = true as well")
    taken = {sink.id_field, sink.vector_field, "text", *passthrough, *DOCUMENT_COLUMNS}
    if sink.sparse_field in taken:
        raise ctx.invalid(f"{prefix}.sparse_field", f"'{sink.sparse_field}' is already a field of collection "
                          f"'{sink.collection}' (id, vector, text, a document or passthrough field); pick another")


def normalise_location(location: str) -> str:
    """One spelling per place: ``out/x/`` and ``./out/x`` are the same directory, ``s3://b/p/`` is ``s3://b/p``."""
    if "://" in location:
        return location.rstrip("/") if not location.endswith("://") else location
    return posixpath.normpath(location)


def default_checkpoint_path(sinks: Sequence[SinkConfig]) -> str:
    """``<first parquet sink>/_checkpoint``; else next to the Milvus Lite file, or under ``embedder-state``."""
    for sink in sinks:
        if isinstance(sink, ParquetSinkConfig):
            return join_location(sink.path, "_checkpoint")
    milvus = next(sink for sink in sinks if isinstance(sink, MilvusSinkConfig))
    base = (os.path.dirname(milvus.uri) or ".") if milvus.is_lite else "embedder-state"
    return join_location(join_location(base, milvus.collection), "_checkpoint")


def join_location(base: str, name: str) -> str:
    """Join with ``/`` for local paths and URIs alike (``s3://b/p/`` + ``x`` → ``s3://b/p/x``)."""
    stripped = base.rstrip("/")
    if not stripped or stripped.endswith(":"):  # "/" or "s3://bucket" edge: keep the slashes we stripped
        return base + ("" if base.endswith("/") else "/") + name
    return f"{stripped}/{name}"
