"""``JinaEmbed``: embedding as one step of a Ray Data pipeline, under the job's cluster-wide rate limiter.

    ds.map_batches(JinaEmbed, fn_constructor_kwargs=dict(model="jina-embeddings-v3", dimensions=256,
                   text_column="text", output_column="vector",
                   limits=dict(rpm=500, tpm=1_000_000, max_concurrency=5)), concurrency=4, batch_size=512)

Ray Data's own HTTP steps pace each actor alone, so four actors at "500 RPM" send 2,000. Here every actor of the
map (and of any other pipeline using the same ``limiter_name``) asks one limiter actor for a permit before each
request: the job's :class:`~embedder.run.limiter.SharedLimiter`, started as a detached actor named
``limiter_name`` in the namespace ``embedder`` by the first actor and found by the others. Requests go through the
job's client (:mod:`embedder.jina`): base64 vectors, retries of 429s and transient errors, a rejected request split
until the bad input is alone. The key is read from the environment of the actor (``api_key_env``, then
``JINA_API_KEY``, ``JINAAI_API_KEY``), never passed as an argument. See docs/ray-data.md.

Imports Ray (an import contract allows it) for the batch conversion of Ray Data; the limiter actor is started in
:mod:`embedder.run.actors`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
from ray.data.block import BlockAccessor, BlockType

from embedder.config import EmbeddingConfig, parse_job
from embedder.errors import ConfigError, InputError
from embedder.run.actors import named_limiter
from embedder.run.gate import RemoteGate
from embedder.run.limiter import Limits
from embedder.run.settings import embedding_key_or_fail
from embedder.run.worker import build_embedder

ON_ERROR = ("raise", "null")


def embedding_config(settings: Mapping[str, Any], limits: Mapping[str, Any] | None) -> tuple[EmbeddingConfig, Limits]:
    """``[embedding]`` and ``[limits]`` of a job with these keys, validated as a job file's are (the same
    defaults, the same checks, ``JINA_API_BASE`` from the environment); ``ConfigError`` naming the key."""
    job = parse_job({"source": {"path": "-"}, "sink": {"path": "-"}, "embedding": dict(settings),
                     "limits": dict(limits or {})}, source_name="JinaEmbed's arguments")
    return job.embedding, Limits(rpm=job.limits.rpm, tpm=job.limits.tpm, max_concurrency=job.limits.max_concurrency)


class JinaEmbed:
    """A callable class for ``Dataset.map_batches``: adds ``output_column``, a ``fixed_size_list<float32>[dim]``
    vector of each row's ``text_column``.

    ``limits`` (``rpm``, ``tpm``, ``max_concurrency``) are the key's quota for the whole cluster, as in a job's
    ``[limits]``; ``embedding`` keys (``task``, ``normalized``, ``truncate``, ``batch_size`` inputs per request,
    ``timeout_s``, ``max_retries``, ``api_base``...) as in a job's ``[embedding]``. A row that cannot be embedded
    (empty text, an input the API rejects) fails the batch with ``on_error="raise"``; with ``"null"`` its vector
    is null and ``error_column`` says why (that column is null for every other row).
    """

    def __init__(self, *, model: str = "jina-embeddings-v3", dimensions: int | None = None,
                 text_column: str = "text", output_column: str = "vector",
                 limits: Mapping[str, Any] | None = None, on_error: str = "raise",
                 error_column: str = "embedding_error", api_base: str | None = None,
                 api_key_env: str = "JINA_API_KEY", limiter_name: str = "jina", **embedding: Any) -> None:
        if on_error not in ON_ERROR:
            raise ConfigError(f"JinaEmbed: on_error must be 'raise' or 'null', got {on_error!r}")
        settings = {"model": model, "api_key_env": api_key_env, **embedding}
        if dimensions is not None:
            settings["dimensions"] = dimensions
        if api_base is not None:
            settings["api_base"] = api_base
        self.config, self.limits = embedding_config(settings, limits)
        self.text_column, self.output_column = text_column, output_column
        self.on_error, self.error_column = on_error, error_column
        self.dimensions = self.config.effective_dimensions
        key = embedding_key_or_fail(self.config)  # from the actor's environment: never an argument
        # a permit held far longer than one request can take belongs to a lost request: the limiter takes it back
        lease_s = 2 * self.config.timeout_s + 60
        self.limiter = named_limiter(f"embedder-limiter-{limiter_name}", self.limits, lease_s)
        self._loop = asyncio.new_event_loop()  # drives this actor's connections, batch after batch
        self._embedder = build_embedder(self.config, key, RemoteGate(self.limiter), self.limits.max_concurrency)

    def __call__(self, batch: Any) -> pa.Table:
        table = to_arrow(batch)
        if self.text_column not in table.column_names:
            raise InputError(f"JinaEmbed: the batch has no column {self.text_column!r} (text_column); its columns: "
                             f"{', '.join(table.column_names)}")
        texts = table.column(self.text_column).to_pylist()
        result = self._loop.run_until_complete(self._embedder.embed(texts))
        if result.failures and self.on_error == "raise":
            first = result.failures[0]
            raise InputError(f"JinaEmbed: {len(result.failures)} of {len(texts)} rows of a batch cannot be embedded; "
                             f"row {first.index} of the batch: {first.reason} ({first.error_class}). Pass "
                             f"on_error='null' to keep such rows with a null vector")
        table = table.append_column(pa.field(self.output_column, pa.list_(pa.float32(), self.dimensions)),
                                    vector_array(result.vectors, result.ok))
        if self.on_error == "null":
            reasons: list[str | None] = [None] * len(texts)
            for failure in result.failures:
                reasons[failure.index] = f"{failure.error_class}: {failure.reason}"
            table = table.append_column(pa.field(self.error_column, pa.string()), pa.array(reasons, pa.string()))
        return table

    def __del__(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):  # the actor is going away: its connections go with it
                loop.run_until_complete(self._embedder.client.aclose())
            loop.close()


def to_arrow(batch: Any) -> pa.Table:
    """A batch of any of Ray Data's formats (``pyarrow``, ``pandas``, ``numpy``: a dict of arrays) as a table."""
    if isinstance(batch, pa.Table):
        return batch
    return BlockAccessor.batch_to_block(batch, block_type=BlockType.ARROW)


def vector_array(vectors: np.ndarray, ok: np.ndarray) -> pa.FixedSizeListArray:
    """``fixed_size_list<float32>[dim]``, null where ``ok`` is false; the values are not copied."""
    rows, dim = vectors.shape
    values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(rows * dim))
    mask = None if ok.all() else pa.array(~ok)
    return pa.FixedSizeListArray.from_arrays(values, dim, mask=mask)
