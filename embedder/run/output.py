"""What a worker hands to the sinks and to the ledger: the shard's output table and its dead letters."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from embedder.jina.embedding import RowFailure
from embedder.ledger import DEAD_LETTER_SCHEMA
from embedder.source.shards import Shard


def vectors_to_arrow(vectors: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def output_table(rows: pa.Table, vectors: np.ndarray, ok: np.ndarray, passthrough: tuple[str, ...],
                 hashes: pa.Array | None = None, copied: np.ndarray | None = None) -> pa.Table:
    """``id``, ``vector`` (fixed_size_list<float32>[dim]), ``content_hash`` and the passthrough columns of the rows
    embedded."""
    mask = pa.array(ok)
    columns = {"id": rows.column("id").filter(mask), "vector": vectors_to_arrow(vectors[ok])}
    if hashes is not None:
        columns["content_hash"] = hashes.filter(mask)
    for name in passthrough:
        columns[name] = rows.column(name).filter(mask)
    if copied is not None:  # an incremental run: rows taken over from the previous version (see sinks.fanout)
        columns["_copied"] = pa.array(copied[ok])
    return pa.table(columns)


def dead_letters(rows: pa.Table, shard: Shard, failures: Sequence[RowFailure]) -> pa.Table:
    """The rows that could not be embedded, in :data:`~embedder.ledger.records.DEAD_LETTER_SCHEMA`."""
    indices = pa.array([failure.index for failure in failures], type=pa.int64())
    return pa.table({
        "shard_id": pa.array([shard.shard_id] * len(failures), type=pa.string()),
        "id": rows.column("id").take(indices).cast(pa.string()),
        "_row": rows.column("_row").take(indices),
        "file": pa.array([shard.file.uri] * len(failures), type=pa.string()),
        "reason": pa.array([failure.reason for failure in failures], type=pa.string()),
        "error_class": pa.array([failure.error_class for failure in failures], type=pa.string()),
    }, schema=DEAD_LETTER_SCHEMA)
