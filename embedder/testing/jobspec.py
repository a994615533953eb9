"""Job files for tests and benchmarks, written from Python data with ``tomli_w`` (never pasted together as text,
so a path or a value with quotes, backslashes or non-ASCII characters is written as what it is).

:func:`write_job` takes the sections as dicts (``sinks`` as a list of tables); :func:`job_tables` gives the
sections the tests share (one source, a small model size, generous limits, quick progress lines); the builders
:func:`small_job`, :func:`fault_job` and :func:`incremental_job` are the jobs the system tests run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import tomli_w

MODEL = "jina-embeddings-v3"
COLLECTION = "docs"
"""The Milvus collection of :func:`sink_table`'s ``milvus`` sink."""
GENEROUS_LIMITS: Mapping[str, int] = {"rpm": 100_000, "tpm": 100_000_000, "max_concurrency": 8}
"""Limits the local server never reaches: only its own settings make it answer 429."""


def _plain(value: Any) -> Any:
    """``value`` as TOML-writable data: paths as strings, tuples as lists, mappings as dicts (recursively)."""
    if isinstance(value, PurePath):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def job_toml(*, mode: str | None = None, sinks: Sequence[Mapping[str, Any]] | None = None,
             **sections: Mapping[str, Any] | None) -> str:
    """The TOML text of a job: top-level ``mode`` if given, then each section given (in the order given; ``None``
    leaves it out), then ``sinks`` as ``[[sinks]]`` tables."""
    document: dict[str, Any] = {} if mode is None else {"mode": mode}
    document.update((name, table) for name, table in sections.items() if table is not None)
    if sinks is not None:
        document["sinks"] = list(sinks)
    return tomli_w.dumps(_plain(document))


def write_job(path: str | Path, *, mode: str | None = None, sinks: Sequence[Mapping[str, Any]] | None = None,
              **sections: Mapping[str, Any] | None) -> Path:
    """Write :func:`job_toml` of the arguments to ``path``; returns the path.

    ``write_job(path, source={"path": corpus}, sink={"kind": "parquet", "path": out})``
    """
    path = Path(path)
    path.write_text(job_toml(mode=mode, sinks=sinks, **sections), encoding="utf-8")
    return path


def job_tables(source: str | Path, *, dimensions: int = 64, shard_rows: int = 500,
               passthrough: Sequence[str] = ("title",), workers: int = 2, limits: Mapping[str, Any] | None = None,
               embedding: Mapping[str, Any] | None = None, source_extra: Mapping[str, Any] | None = None,
               workers_extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The sections the test jobs share: ``source`` (columns ``id``/``text``, the passthrough columns, the shard
    size), ``embedding`` (the model, ``dimensions``, 10 retries), ``limits`` (:data:`GENEROUS_LIMITS` unless
    given), ``workers`` (``workers`` of a quarter CPU), ``progress`` (a line a second). The ``*_extra`` mappings
    and ``embedding`` add keys to (or replace keys of) their section."""
    return {
        "source": {"path": source, "id_column": "id", "text_column": "text", "passthrough": list(passthrough),
                   "shard_rows": shard_rows, **(source_extra or {})},
        "embedding": {"model": MODEL, "dimensions": dimensions, "max_retries": 10, **(embedding or {})},
        "limits": dict(limits or GENEROUS_LIMITS),
        "workers": {"count": workers, "cpus_per_worker": 0.25, **(workers_extra or {})},
        "progress": {"interval_s": 1.0},
    }


def sink_table(sink: str | Mapping[str, Any], out: str | Path) -> dict[str, Any]:
    """A ``[[sinks]]`` table: ``"parquet"`` writes ``<out>/parquet``, ``"milvus"`` the collection
    :data:`COLLECTION` of the Milvus Lite database ``<out>/milvus.db``; a mapping is the table itself."""
    if not isinstance(sink, str):
        return dict(sink)
    if sink == "parquet":
        return {"kind": "parquet", "path": Path(out) / "parquet"}
    if sink == "milvus":
        return {"kind": "milvus", "uri": Path(out) / "milvus.db", "collection": COLLECTION}
    raise ValueError(f"unknown sink {sink!r} (parquet, milvus, or a table)")


def small_job(path: str | Path, source: str | Path, output: str | Path, *,
              checkpoint: str | Path | None = None, **options: Any) -> Path:
    """The usual test job: ``source`` → Parquet in ``output`` (the ledger in ``<output>/_checkpoint`` unless
    ``checkpoint`` is given); ``options`` are those of :func:`job_tables`."""
    return write_job(path, **job_tables(source, **options),
                     checkpoint={"path": checkpoint} if checkpoint else None,
                     sink={"kind": "parquet", "path": output})


def fault_job(path: str | Path, source: str | Path, out: str | Path, *,
              sinks: Sequence[str | Mapping[str, Any]] = ("parquet",), **options: Any) -> Path:
    """A job into one or more sinks under ``out`` (see :func:`sink_table`: ``("parquet", "milvus")`` writes both),
    the ledger in ``<out>/_checkpoint``; ``options`` are those of :func:`job_tables`."""
    return write_job(path, **job_tables(source, **options), checkpoint={"path": Path(out) / "_checkpoint"},
                     sinks=[sink_table(sink, out) for sink in sinks])


def incremental_job(path: str | Path, source: str | Path, out: str | Path, **options: Any) -> Path:
    """``mode = "incremental"`` into Parquet (``<out>/parquet``) and Milvus Lite (``<out>/milvus.db``), the ledger
    where the job puts it by default (``<out>/parquet/_checkpoint``); ``options`` are those of :func:`job_tables`."""
    return write_job(path, mode="incremental", **job_tables(source, **options),
                     sinks=[sink_table("parquet", out), sink_table("milvus", out)])
