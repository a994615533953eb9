"""Refuse ids that occur more than once anywhere in the input, before any API call.

A shard's own rows are checked as it is read (:func:`embedder.source.reader.read_shard`); this check spans every
file, reading only the id column of each shard.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from embedder.config import SourceConfig
from embedder.errors import InputError
from embedder.source.reader import read_ids, repeated_ids
from embedder.source.shards import Shard

SHOWN = 5
"""Repeated ids named in the message."""


def check_duplicate_ids(shards: list[Shard], source: SourceConfig, storage_options: dict[str, Any] | None, *,
                        threads: int = 8) -> None:
    """``InputError`` naming each repeated id (up to :data:`SHOWN`) and every place it occurs (file and row).

    Reads the id column of every shard (threads: on object storage each read is a round trip) and holds the ids
    of the whole input at once — about their size in bytes — which is what a global check needs.
    """
    def ids_of(numbered: tuple[int, Shard]) -> pa.Table:
        number, shard = numbered
        table = read_ids(shard, source, storage_options=storage_options)
        return table.append_column("_shard", pa.array(np.full(table.num_rows, number, dtype=np.int32)))

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(shards)))) as pool:
        tables = list(pool.map(ids_of, enumerate(shards)))
    try:
        everything = pa.concat_tables(tables)
    except pa.ArrowInvalid:  # integer ids in one file, string ids in another
        types = sorted({str(t.schema.field("id").type) for t in tables})
        raise InputError(f"the id column {source.id_column!r} has different types across files "
                         f"({', '.join(types)})") from None
    repeated = repeated_ids(everything["id"])
    if not repeated:
        return
    shard_numbers, rows = everything["_shard"].to_numpy(), everything["_row"].to_numpy()
    listed = "; ".join(
        f"id {value!r} at " + " and ".join(f"{shards[shard_numbers[p]].file.uri} row {rows[p]}" for p in positions)
        for value, positions in repeated[:SHOWN])
    raise InputError(f"{len(repeated)} duplicate id(s) in column {source.id_column!r}: {listed}. Each id must "
                     "occur once: fix the input (nothing was embedded)")
