"""embedder: a corpus of documents into embedding vectors with Jina AI's embeddings API, on a Ray cluster, into
Parquet or Milvus — within the API's rate limits, and resumable.

The public API (imported lazily: ``import embedder`` loads neither Ray, nor pymilvus, nor pyarrow)::

    from embedder import load_job, run_job, RunOptions
    code = run_job(load_job("jobs/configs/laptop.toml"), RunOptions(incremental=True))

    from embedder import read_manifest_dataset
    table = read_manifest_dataset("out/embeddings").to_table()

    from embedder import JinaEmbeddingFunction          # the API of pymilvus' class of the same name
    vectors = JinaEmbeddingFunction("jina-embeddings-v3").encode_documents(["some text"])

The data flows through the packages in one direction: source → run (workers under one rate limiter) → sinks →
ledger; see docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "ConfigError": "embedder.errors",
    "EmbedderError": "embedder.errors",
    "FatalError": "embedder.errors",
    "InputError": "embedder.errors",
    "InputRejected": "embedder.errors",
    "JinaEmbeddingFunction": "embedder.jina.function",
    "JinaError": "embedder.errors",
    "JobConfig": "embedder.config",
    "LedgerError": "embedder.errors",
    "PermanentError": "embedder.errors",
    "RateLimited": "embedder.errors",
    "ResponseMismatch": "embedder.errors",
    "RunOptions": "embedder.run.prepare",
    "SinkError": "embedder.errors",
    "TransientError": "embedder.errors",
    "ValidationError": "embedder.errors",
    "load_job": "embedder.config",
    "read_manifest_dataset": "embedder.sinks.parquet",
    "run_job": "embedder.run.job",
}

__all__ = [
    "ConfigError", "EmbedderError", "FatalError", "InputError", "InputRejected", "JinaEmbeddingFunction", "JinaError",
    "JobConfig", "LedgerError", "PermanentError", "RateLimited", "ResponseMismatch", "RunOptions", "SinkError",
    "TransientError", "ValidationError", "__version__", "load_job", "read_manifest_dataset", "run_job",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'embedder' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from embedder.config import JobConfig, load_job
    from embedder.errors import (
        ConfigError,
        EmbedderError,
        FatalError,
        InputError,
        InputRejected,
        JinaError,
        LedgerError,
        PermanentError,
        RateLimited,
        ResponseMismatch,
        SinkError,
        TransientError,
        ValidationError,
    )
    from embedder.jina.function import JinaEmbeddingFunction
    from embedder.run.job import run_job
    from embedder.run.prepare import RunOptions
    from embedder.sinks.parquet import read_manifest_dataset
