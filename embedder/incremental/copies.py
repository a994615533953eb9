"""The worker's side of an incremental run: a shard's unchanged documents and their previous vectors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from embedder import storage
from embedder.incremental.classify import COPY
from embedder.source.documents import Documents


@dataclass
class Copies:
    """The documents of a shard whose vectors are taken over from the previous version."""

    documents: np.ndarray
    """Per document of the shard: copied."""
    chunks: np.ndarray
    """The chunks (indices into the shard's chunk arrays) that get ``vectors``."""
    vectors: np.ndarray


def shard_assignment(fs: pafs.FileSystem, workdir: str, shard_id: str) -> pa.Table:
    """The saved actions for one shard's documents (empty when the shard was not classified)."""
    dataset = pads.dataset(storage.join(workdir, "assign"), filesystem=fs, format="parquet")
    return dataset.to_table(filter=pc.field("shard_id") == shard_id).sort_by("_row")


def copied_documents(fs: pafs.FileSystem, assignment: pa.Table, rows: pa.Table, documents: Documents) -> Copies:
    """The documents to copy and their chunks' vectors, read from the previous parts (only their vector column).

    A document is copied only when the previous version holds as many chunks as it has now (equal content hashes
    promise it); otherwise it is embedded again."""
    copies = assignment.filter(pc.equal(assignment["action"], COPY))
    first_row = rows["_row"].take(pa.array(documents.doc_rows, pa.int64())).to_pylist()
    document_at = {row: d for d, row in enumerate(first_row)}
    ranges = documents.ranges()
    copied = np.zeros(documents.count, dtype=bool)
    chunks: list[int] = []
    sources: dict[str, list[tuple[int, int, int]]] = {}  # part -> (place in `chunks`, first part row, count)
    for row, part, part_row, count in zip(copies["_row"].to_pylist(), copies["part"].to_pylist(),
                                          copies["part_row"].to_pylist(), copies["count"].to_pylist(), strict=True):
        d = document_at.get(row)
        if d is None or ranges[d][1] - ranges[d][0] != count:
            continue
        copied[d] = True
        sources.setdefault(part, []).append((len(chunks), part_row, count))
        chunks.extend(range(*ranges[d]))
    vectors: np.ndarray | None = None
    for part, spans in sources.items():
        taken = _part_vectors(fs, part, spans)
        if vectors is None:
            vectors = np.zeros((len(chunks), taken.shape[1]), dtype=np.float32)
        places = np.concatenate([np.arange(place, place + count) for place, _, count in spans])
        vectors[places] = taken
    return Copies(copied, np.asarray(chunks, dtype=np.int64),
                  vectors if vectors is not None else np.zeros((0, 0), dtype=np.float32))


def _part_vectors(fs: pafs.FileSystem, part: str, spans: list[tuple[int, int, int]]) -> np.ndarray:
    column = pq.read_table(part, filesystem=fs, columns=["vector"])["vector"]
    rows = np.concatenate([np.arange(start, start + count) for _, start, count in spans])
    taken = column.take(pa.array(rows, pa.int64())).combine_chunks()
    return taken.flatten().to_numpy().reshape(len(rows), -1)
