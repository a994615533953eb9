"""Incremental backfills: compare the input with the finished dataset and embed only what changed.

The unit of change is the document (an input row, or the rows of one document of pre-chunked input). Every output
row carries ``content_hash``: the document's content, keyed by what shapes its vectors. An incremental run plans
the input as usual; shards whose file did not change keep their shard id and their done marker, so they are skipped
as on any resume. For the other shards, each document is classified against the dataset the last completed run
left (its manifest):

    new        the document is not in the dataset                 -> embedded
    changed    it is there with another content_hash              -> embedded; all its chunks replaced
    unchanged  it is there with the same content_hash             -> its chunks' vectors are copied, no API call
    deleted    a document of the dataset the input no longer has  -> its chunks leave (Milvus: deleted)

The ids to delete are the old chunk ids that the new input does not produce again: every chunk of a deleted
document, and the chunks a changed document no longer has.

The comparison is done bucket by bucket (bucket = a stable hash of the document id), so memory holds one bucket at
a time: each side is first spilled to Parquet files per bucket under the ledger, then each bucket is joined on its
own. The result — for every document of every shard to process, "embed" or "copy n chunks from part P row r" — is
saved next to the spill, so an interrupted incremental run resumes with the same answer.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from embedder import storage
from embedder.config import JobConfig
from embedder.errors import InputError
from embedder.source.documents import build_documents, document_hash
from embedder.source.reader import read_shard
from embedder.source.shards import Shard

ROWS_PER_BUCKET = 2_000_000
"""About this many rows (old plus new) share a bucket: the largest table one comparison step holds."""
EMBED, COPY = 0, 1
ASSIGN_SCHEMA = pa.schema([("shard_id", pa.string()), ("_row", pa.int64()), ("action", pa.int8()),
                           ("part", pa.string()), ("part_row", pa.int64()), ("count", pa.int64())])
"""Per document to process: embed it, or copy its ``count`` chunks from ``part`` starting at ``part_row``."""
STATE_FILE = "classification.json"


@dataclass
class Classification:
    """The four counts and where the per-shard assignments are."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    unchanged_tokens_estimate: int = 0
    workdir: str = ""
    deleted_ids_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"new": self.new, "changed": self.changed, "unchanged": self.unchanged, "deleted": self.deleted,
                "workdir": self.workdir, "deleted_ids_file": self.deleted_ids_file}


def buckets_of(ids: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """A stable bucket per id (the same in every process and run)."""
    if buckets == 1:
        return np.zeros(len(ids), dtype=np.int32)
    if pa.types.is_integer(ids.type):
        return (np.asarray(ids.to_numpy(zero_copy_only=False), dtype=np.int64) % buckets).astype(np.int32)
    return np.fromiter((zlib.crc32(str(value).encode()) % buckets for value in ids.to_pylist()), dtype=np.int32,
                       count=len(ids))


class _Spill:
    """Tables appended per bucket as Parquet files under ``root/side/``."""

    def __init__(self, fs: pafs.FileSystem, root: str, side: str, buckets: int) -> None:
        self.fs, self.dir, self.buckets = fs, storage.join(root, side), buckets
        self._count = 0
        storage.ensure_dir(fs, self.dir)

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        bucket = pa.array(buckets_of(table["doc"], self.buckets))
        for number in np.unique(bucket.to_numpy()):
            part = table.filter(pc.equal(bucket, number))
            buffer = pa.BufferOutputStream()
            pq.write_table(part, buffer)
            storage.write_atomic(self.fs, storage.join(self.dir, f"b{number:05d}-{self._count:07d}.parquet"),
                                buffer.getvalue())
        self._count += 1

    def read(self, number: int, schema: pa.Schema) -> pa.Table:
        selector = pafs.FileSelector(self.dir, allow_not_found=True)
        paths = sorted(info.path for info in self.fs.get_file_info(selector)
                       if info.base_name.startswith(f"b{number:05d}-"))
        if not paths:
            return schema.empty_table()
        return pa.concat_tables([pq.read_table(path, filesystem=self.fs) for path in paths]).cast(schema)


OLD_SCHEMA = pa.schema([("content_hash", pa.string()), ("part", pa.string()), ("part_row", pa.int64())])
"""Per output row of the previous version (besides its document and its id): its document's hash, where it is."""
NEW_SCHEMA = pa.schema([("content_hash", pa.string()), ("shard_id", pa.string()), ("_row", pa.int64()),
                        ("chars", pa.int64())])
"""Per document of the input: its hash, where it starts, how long its text is."""



def classify(*, old_parts: Sequence[str], old_fs: pafs.FileSystem, shards: Sequence[Shard], config: JobConfig,
             content_key: str, ledger_fs: pafs.FileSystem, workdir: str) -> Classification:
    """Compare ``shards`` (the input still to process) with the dataset in ``old_parts``; save the assignments."""
    storage.delete_dir_contents(ledger_fs, workdir)
    storage.ensure_dir(ledger_fs, workdir)
    old_rows = sum(pq.ParquetFile(path, filesystem=old_fs).metadata.num_rows for path in old_parts)
    new_rows = sum(shard.row_count for shard in shards)
    buckets = max(1, math.ceil((old_rows + new_rows) / ROWS_PER_BUCKET))
    spills = {side: _Spill(ledger_fs, workdir, side, buckets) for side in ("old", "new", "chunks")}
    types = _spill_old(old_parts, old_fs, spills["old"], config)
    for shard in shards:
        types = _spill_new(shard, config, content_key, spills["new"], spills["chunks"], types)
    result = Classification(workdir=workdir)
    storage.ensure_dir(ledger_fs, storage.join(workdir, "assign"))
    deleted_tables = []
    doc, key = pa.field("doc", types[0] or pa.string()), pa.field("id", types[1] or pa.string())
    for number in range(buckets):
        assigned, deleted, counts = _classify_bucket(spills["old"].read(number, pa.schema([doc, key, *OLD_SCHEMA])),
                                                     spills["new"].read(number, pa.schema([doc, *NEW_SCHEMA])),
                                                     spills["chunks"].read(number, pa.schema([doc, key])))
        for name, value in counts.items():
            setattr(result, name, getattr(result, name) + value)
        _write(ledger_fs, storage.join(workdir, f"assign/b{number:05d}.parquet"), assigned)
        if deleted.num_rows:
            deleted_tables.append(deleted)
    if deleted_tables:
        result.deleted_ids_file = storage.join(workdir, "deleted_ids.parquet")
        _write(ledger_fs, result.deleted_ids_file, pa.concat_tables(deleted_tables))
    for side in spills:
        storage.delete_dir_contents(ledger_fs, storage.join(workdir, side))
    storage.write_json_atomic(ledger_fs, storage.join(workdir, STATE_FILE), result.as_dict())
    return result


Types = tuple[pa.DataType | None, pa.DataType | None]
"""The types of the document ids and of the output ids (``None`` until some table told)."""


def _spill_old(old_parts: Sequence[str], old_fs: pafs.FileSystem, spill: _Spill, config: JobConfig) -> Types:
    """Each previous output row, keyed by its document."""
    types: Types = (None, None)
    document_column = "doc_id" if config.documents else "id"
    for path in old_parts:
        table = pq.read_table(path, filesystem=old_fs, columns=list(dict.fromkeys([document_column, "id",
                                                                                    "content_hash"])))
        types = (table.schema.field(document_column).type, table.schema.field("id").type)
        spill.add(pa.table({"doc": table[document_column], "id": table["id"],
                            "content_hash": table["content_hash"], "part": pa.array([path] * table.num_rows,
                                                                                     pa.string()),
                            "part_row": pa.array(np.arange(table.num_rows, dtype=np.int64))}))
    return types


def _spill_new(shard: Shard, config: JobConfig, content_key: str, docs: _Spill, chunks: _Spill,
               types: Types) -> Types:
    """Each document of ``shard`` with its hash, and the ids of the chunks it produces."""
    rows = read_shard(shard, config.source, storage_options=config.storage_options)
    documents = build_documents(rows, config)
    if types[0] is not None and documents.doc_ids.type != types[0]:
        raise InputError(f"{shard.file.uri}: document ids are {documents.doc_ids.type} but the dataset's are "
                         f"{types[0]}; an incremental run needs the same id type (use --restart)")
    first_rows = rows["_row"].take(pa.array(documents.doc_rows, pa.int64()))
    docs.add(pa.table({"doc": documents.doc_ids, "content_hash": pa.array(
        [None if text is None else document_hash(text, content_key) for text in documents.hashes], pa.string()),
        "shard_id": pa.array([shard.shard_id] * documents.count, pa.string()), "_row": first_rows,
        "chars": pa.array([len(text or "") for text in documents.hashes], pa.int64())}))
    chunks.add(pa.table({"doc": documents.doc_ids.take(pa.array(documents.chunk_doc, pa.int64())),
                         "id": documents.ids}))
    return documents.doc_ids.type, documents.ids.type


def _classify_bucket(old: pa.Table, new: pa.Table, chunks: pa.Table) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    old = old.sort_by([("part", "ascending"), ("part_row", "ascending")])
    old_docs = old.group_by("doc", use_threads=False).aggregate(
        [("content_hash", "first"), ("part", "first"), ("part_row", "first"), ("id", "count")])
    old_docs = old_docs.rename_columns(["doc", "content_hash_old", "part", "part_row", "count"])
    joined = new.join(old_docs, keys="doc", join_type="left outer")
    known = pc.is_valid(joined["part"])
    copy = pc.and_(known, pc.fill_null(pc.equal(joined["content_hash"], joined["content_hash_old"]), False))
    assigned = pa.table({
        "shard_id": joined["shard_id"], "_row": joined["_row"],
        "action": pc.if_else(copy, pa.scalar(COPY, pa.int8()), pa.scalar(EMBED, pa.int8())),
        "part": pc.if_else(copy, joined["part"], pa.scalar(None, pa.string())),
        "part_row": pc.if_else(copy, joined["part_row"], pa.scalar(None, pa.int64())),
        "count": pc.if_else(copy, joined["count"].cast(pa.int64()), pa.scalar(None, pa.int64())),
    }, schema=ASSIGN_SCHEMA).sort_by([("shard_id", "ascending"), ("_row", "ascending")])
    deleted = old.select(["id"]).join(chunks.select(["id"]), keys="id", join_type="left anti")
    gone = old_docs.select(["doc"]).join(new.select(["doc"]), keys="doc", join_type="left anti")
    unchanged = pc.sum(copy).as_py() or 0
    changed = (pc.sum(known).as_py() or 0) - unchanged
    counts = {"new": new.num_rows - unchanged - changed, "changed": changed, "unchanged": unchanged,
              "deleted": gone.num_rows}
    return assigned, deleted, counts


def _write(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    storage.write_atomic(fs, path, buffer.getvalue())


def load_classification(fs: pafs.FileSystem, workdir: str) -> Classification | None:
    data = storage.read_json(fs, storage.join(workdir, STATE_FILE))
    if data is None:
        return None
    return Classification(**{k: v for k, v in data.items() if k in Classification.__dataclass_fields__})
