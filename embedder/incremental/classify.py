"""Incremental backfills: compare the input with the finished dataset and embed only what changed.

Every output row carries ``content_hash`` (the exact text sent, keyed by what shapes its vector). An incremental
run plans the input as usual; shards whose file did not change keep their shard id and their done marker, so they
are skipped as on any resume. For the other shards, each input row is classified against the dataset the last
completed run left (its manifest):

    new        the id is not in the dataset                     -> embedded
    changed    the id is there with another content_hash        -> embedded
    unchanged  the id is there with the same content_hash       -> its vector is copied, no API call
    deleted    an id of the dataset that the input no longer has -> left out of the new version (Milvus: deleted)

The comparison is done bucket by bucket (bucket = a stable hash of the id), so memory holds one bucket at a time:
each side is first spilled to Parquet files per bucket under the ledger, then each bucket is joined on its own.
The result — for every row of every shard to process, "embed" or "copy from part P row r" — is saved next to the
spill, so an interrupted incremental run resumes with the same answer.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from embedder import storage
from embedder.config import SourceConfig
from embedder.errors import InputError
from embedder.source.reader import read_shard
from embedder.source.shards import Shard

ROWS_PER_BUCKET = 2_000_000
"""About this many rows (old plus new) share a bucket: the largest table one comparison step holds."""
EMBED, COPY = 0, 1
ASSIGN_SCHEMA = pa.schema([("shard_id", pa.string()), ("_row", pa.int64()), ("action", pa.int8()),
                           ("part", pa.string()), ("part_row", pa.int64())])
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


def content_hashes(texts: Sequence[str | None], content_key: str) -> pa.Array:
    """A stable hash of the exact text sent with the fields that shape its vector: equal hash, equal vector."""
    key = content_key.encode()[:64]
    return pa.array([None if text is None else
                     hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16, key=key).hexdigest()
                     for text in texts], type=pa.string())


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
        bucket = pa.array(buckets_of(table["id"], self.buckets))
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
NEW_SCHEMA = pa.schema([("content_hash", pa.string()), ("shard_id", pa.string()), ("_row", pa.int64()),
                        ("chars", pa.int64())])


def classify(*, old_parts: Sequence[str], old_fs: pafs.FileSystem, shards: Sequence[Shard], source: SourceConfig,
             content_key: str, ledger_fs: pafs.FileSystem, workdir: str,
             storage_options: dict | None = None) -> Classification:
    """Compare ``shards`` (the input still to process) with the dataset in ``old_parts``; save the assignments."""
    storage.delete_dir_contents(ledger_fs, workdir)
    storage.ensure_dir(ledger_fs, workdir)
    old_rows = sum(pq.ParquetFile(path, filesystem=old_fs).metadata.num_rows for path in old_parts)
    new_rows = sum(shard.row_count for shard in shards)
    buckets = max(1, math.ceil((old_rows + new_rows) / ROWS_PER_BUCKET))
    id_type: pa.DataType | None = None
    old = _Spill(ledger_fs, workdir, "old", buckets)
    for path in old_parts:
        table = pq.read_table(path, filesystem=old_fs, columns=["id", "content_hash"])
        id_type = table.schema.field("id").type
        old.add(table.append_column("part", pa.array([path] * table.num_rows, pa.string()))
                .append_column("part_row", pa.array(np.arange(table.num_rows, dtype=np.int64))))
    new = _Spill(ledger_fs, workdir, "new", buckets)
    for shard in shards:
        rows = read_shard(shard, source, storage_options=storage_options)
        texts = rows["text"].to_pylist()
        if id_type is not None and rows.schema.field("id").type != id_type:
            raise InputError(f"{shard.file.uri}: ids are {rows.schema.field('id').type} but the dataset's are "
                             f"{id_type}; an incremental run needs the same id type (use --restart)")
        new.add(pa.table({"id": rows["id"], "content_hash": content_hashes(texts, content_key),
                          "shard_id": pa.array([shard.shard_id] * rows.num_rows, pa.string()), "_row": rows["_row"],
                          "chars": pc.utf8_length(rows["text"].fill_null("")).cast(pa.int64())}))
    result = Classification(workdir=workdir)
    storage.ensure_dir(ledger_fs, storage.join(workdir, "assign"))
    deleted_tables = []
    for number in range(buckets):
        id_field = pa.field("id", id_type or pa.string())
        old_bucket = old.read(number, pa.schema([id_field, *OLD_SCHEMA]))
        new_bucket = new.read(number, pa.schema([id_field, *NEW_SCHEMA]))
        assigned, deleted, counts = _classify_bucket(old_bucket, new_bucket)
        for name, value in counts.items():
            setattr(result, name, getattr(result, name) + value)
        _write(ledger_fs, storage.join(workdir, f"assign/b{number:05d}.parquet"), assigned)
        if deleted.num_rows:
            deleted_tables.append(deleted)
    if deleted_tables:
        result.deleted_ids_file = storage.join(workdir, "deleted_ids.parquet")
        _write(ledger_fs, result.deleted_ids_file, pa.concat_tables(deleted_tables))
    storage.delete_dir_contents(ledger_fs, storage.join(workdir, "old"))
    storage.delete_dir_contents(ledger_fs, storage.join(workdir, "new"))
    storage.write_json_atomic(ledger_fs, storage.join(workdir, STATE_FILE), result.as_dict())
    return result


def _classify_bucket(old: pa.Table, new: pa.Table) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    joined = new.join(old, keys="id", join_type="left outer", right_suffix="_old")
    known = pc.is_valid(joined["part"])
    same = pc.fill_null(pc.equal(joined["content_hash"], joined["content_hash_old"]), False)
    copy = pc.and_(known, same)
    assigned = pa.table({
        "shard_id": joined["shard_id"], "_row": joined["_row"],
        "action": pc.if_else(copy, pa.scalar(COPY, pa.int8()), pa.scalar(EMBED, pa.int8())),
        "part": pc.if_else(copy, joined["part"], pa.scalar(None, pa.string())),
        "part_row": pc.if_else(copy, joined["part_row"], pa.scalar(None, pa.int64())),
    }, schema=ASSIGN_SCHEMA).sort_by([("shard_id", "ascending"), ("_row", "ascending")])
    deleted = old.join(new.select(["id"]), keys="id", join_type="left anti").select(["id"])
    unchanged = pc.sum(copy).as_py() or 0
    changed = (pc.sum(known).as_py() or 0) - unchanged
    counts = {"new": new.num_rows - unchanged - changed, "changed": changed, "unchanged": unchanged,
              "deleted": deleted.num_rows}
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


def shard_assignment(fs: pafs.FileSystem, workdir: str, shard_id: str) -> pa.Table:
    """The saved actions for one shard's rows (empty when the shard was not classified)."""
    dataset = pads.dataset(storage.join(workdir, "assign"), filesystem=fs, format="parquet")
    return dataset.to_table(filter=pc.field("shard_id") == shard_id).sort_by("_row")


def copy_vectors(fs: pafs.FileSystem, assignment: pa.Table, row_start: int, dimensions: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The vectors of the rows to copy: ``(positions in the shard, vectors)``, read from the old parts (only
    their vector column)."""
    copies = assignment.filter(pc.equal(assignment["action"], COPY))
    positions = copies["_row"].to_numpy() - row_start
    vectors = np.zeros((copies.num_rows, dimensions), dtype=np.float32)
    parts = copies["part"].to_pylist()
    part_rows = copies["part_row"].to_numpy()
    for part in sorted(set(parts)):
        where = np.flatnonzero(np.asarray([p == part for p in parts]))
        column = pq.read_table(part, filesystem=fs, columns=["vector"])["vector"]
        taken = column.take(pa.array(part_rows[where])).combine_chunks()
        vectors[where] = taken.flatten().to_numpy().reshape(len(where), dimensions)
    return positions, vectors
