"""What a worker hands to the sinks and to the ledger: the shard's output table and its dead letters.

The output has a row per chunk of every document written, in input order::

    id              the row's id (input rows), or the chunk's id (``<doc_id>#<k>`` when chunking; the row's id for
                    pre-chunked input)
    doc_id          the document's id, in the source's type                          (documents only)
    chunk_index     int32, 0..n-1 within the document                                  (documents only)
    chunk_start     int64 Python string offsets: text[chunk_start:chunk_end] was embedded  (documents only)
    chunk_end       int64                                                              (documents only)
    vector          fixed_size_list<float32>[dimensions]
    content_hash    the document's content hash (repeated per chunk): equal hash, equal vectors
    <passthrough>   the input columns, repeated per chunk
    text            the embedded text, when a sink stores it
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from embedder.ledger import DEAD_LETTER_SCHEMA
from embedder.source.documents import Documents
from embedder.source.shards import Shard

DOCUMENT_FIELDS = (("chunk_index", pa.int32()), ("chunk_start", pa.int64()), ("chunk_end", pa.int64()))


def vectors_to_arrow(vectors: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def output_table(rows: pa.Table, documents: Documents, vectors: np.ndarray, written: np.ndarray,
                 hashes: Sequence[str | None], *, passthrough: Sequence[str], as_documents: bool,
                 store_text: bool, copied: np.ndarray | None = None) -> pa.Table:
    """The rows of the chunks of the documents ``written`` (a boolean per document), in order.

    ``hashes`` are the documents' content hashes; ``copied`` (incremental runs) marks the documents whose vectors
    were taken over from the previous version: their rows carry ``_copied`` (see ``embedder.sinks.fanout``)."""
    keep = np.flatnonzero(written[documents.chunk_doc]) if len(documents.chunk_doc) else np.empty(0, np.int64)
    take = pa.array(keep, pa.int64())
    docs = documents.chunk_doc[keep]
    columns: dict[str, pa.Array | pa.ChunkedArray] = {"id": documents.ids.take(take)}
    if as_documents:
        columns["doc_id"] = documents.doc_ids.take(pa.array(docs, pa.int64()))
        columns["chunk_index"] = pa.array(documents.chunk_index[keep], pa.int32())
        columns["chunk_start"] = pa.array(documents.chunk_start[keep], pa.int64())
        columns["chunk_end"] = pa.array(documents.chunk_end[keep], pa.int64())
    columns["vector"] = vectors_to_arrow(vectors[keep]) if len(keep) else \
        pa.FixedSizeListArray.from_arrays(pa.array([], pa.float32()), vectors.shape[1])
    columns["content_hash"] = pa.array([hashes[d] for d in docs], pa.string())
    source_rows = pa.array(documents.chunk_rows[keep], pa.int64())
    for name in passthrough:
        columns[name] = rows.column(name).take(source_rows)
    if store_text:
        columns["text"] = pa.array([documents.texts[i] for i in keep], pa.string())
    if copied is not None:
        columns["_copied"] = pa.array(copied[docs], pa.bool_())
    return pa.table(columns)


def dead_letters(rows: pa.Table, shard: Shard, documents: Documents,
                 failures: dict[int, tuple[str, str]]) -> pa.Table:
    """A row per document that could not be embedded, in :data:`~embedder.ledger.records.DEAD_LETTER_SCHEMA`:
    its id, the row it starts at, why, and the class of the error."""
    failed = sorted(failures)
    first_rows = pa.array(documents.doc_rows[failed] if failed else np.empty(0, np.int64), pa.int64())
    return pa.table({
        "shard_id": pa.array([shard.shard_id] * len(failed), type=pa.string()),
        "id": documents.doc_ids.take(pa.array(failed, pa.int64())).cast(pa.string()),
        "_row": rows.column("_row").take(first_rows),
        "file": pa.array([shard.file.uri] * len(failed), type=pa.string()),
        "reason": pa.array([failures[d][0] for d in failed], type=pa.string()),
        "error_class": pa.array([failures[d][1] for d in failed], type=pa.string()),
    }, schema=DEAD_LETTER_SCHEMA)
