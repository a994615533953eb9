"""Checks of the whole input before any API call: every id once, and (pre-chunked input) every document's rows
together.

A shard's own rows are checked as it is read (:func:`embedder.source.reader.read_shard`); these checks span every
file, reading only the id (and document) column of each shard. The job runs them once per unchanged plan.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedder.config import SourceConfig
from embedder.errors import InputError
from embedder.source.reader import read_keys, repeated_ids
from embedder.source.shards import Shard

SHOWN = 5
"""Repeated ids named in the message."""


def check_input(shards: list[Shard], source: SourceConfig, storage_options: dict[str, Any] | None, *,
                threads: int = 8) -> None:
    """``InputError`` naming each repeated id (up to :data:`SHOWN`) and every place it occurs (file and row), or a
    document whose rows are not contiguous and two of its places.

    Reads the key columns of every shard (threads: on object storage each read is a round trip) and holds them for
    the whole input at once — about their size in bytes — which is what a global check needs.
    """
    def keys_of(numbered: tuple[int, Shard]) -> pa.Table:
        number, shard = numbered
        table = read_keys(shard, source, storage_options=storage_options)
        return table.append_column("_shard", pa.array(np.full(table.num_rows, number, dtype=np.int32)))

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(shards)))) as pool:
        tables = list(pool.map(keys_of, enumerate(shards)))
    everything = _concat(tables, source)
    places = _Places(shards, everything)
    _check_ids(everything, source, places)
    if source.document_column is not None:
        _check_documents(everything, source, places)


class _Places:
    """``file row N`` for a position of the concatenated key table."""

    def __init__(self, shards: list[Shard], keys: pa.Table) -> None:
        self.shards = shards
        self.numbers, self.rows = keys["_shard"].to_numpy(), keys["_row"].to_numpy()

    def file(self, position: int) -> str:
        return self.shards[int(self.numbers[position])].file.uri

    def __call__(self, position: int) -> str:
        return f"{self.file(position)} row {self.rows[position]}"


def _concat(tables: list[pa.Table], source: SourceConfig) -> pa.Table:
    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid:  # integer ids in one file, string ids in another
        types = sorted({str(t.schema.field("id").type) for t in tables})
        raise InputError(f"the id column {source.id_column!r} has different types across files "
                         f"({', '.join(types)})") from None


def _check_ids(keys: pa.Table, source: SourceConfig, place: _Places) -> None:
    repeated = repeated_ids(keys["id"])
    if not repeated:
        return
    listed = "; ".join(f"id {value!r} at " + " and ".join(place(p) for p in positions)
                       for value, positions in repeated[:SHOWN])
    raise InputError(f"{len(repeated)} duplicate id(s) in column {source.id_column!r}: {listed}. Each id must "
                     "occur once: fix the input (nothing was embedded)")


def _check_documents(keys: pa.Table, source: SourceConfig, place: _Places) -> None:
    """A document's rows are one run of consecutive rows of one file; else name it and two of its places."""
    documents = keys["_document"].combine_chunks()
    if len(documents) < 2:
        return
    files = {uri: number for number, uri in enumerate(dict.fromkeys(s.file.uri for s in place.shards))}
    file_of = np.asarray([files[s.file.uri] for s in place.shards])[place.numbers]
    changed = pc.not_equal(documents.slice(1), documents.slice(0, len(documents) - 1)).to_numpy(zero_copy_only=False)
    # a run of rows ends where the document changes, or where a file ends
    starts = np.flatnonzero(np.concatenate(([True], changed | (file_of[1:] != file_of[:-1]))))
    runs = pa.table({"document": documents.take(pa.array(starts)), "position": pa.array(starts)})
    split = repeated_ids(runs["document"])  # a document that begins more than one run of rows
    if not split:
        return
    value, at = split[0]
    first, second = (int(runs["position"][at[0]].as_py()), int(runs["position"][at[1]].as_py()))
    raise InputError(f"document {value!r} (column {source.document_column!r}) is not contiguous: its rows are at "
                     f"{place(first)} and again at {place(second)}. The rows of a document must be consecutive in "
                     "one file (sort the input by document): nothing was embedded")
