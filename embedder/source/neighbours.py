"""The rows just outside a shard, as small shards of their own: for pre-chunked input, where documents span shards.

Shards are planned from metadata, so a shard's row range may cut a document (a run of rows with the same
``source.document_column`` value) in two. A shard owns the documents that *start* in its range: it drops leading
rows that continue the document of the row before it, and reads on past its end until its last document ends. The
ranges read here are described as :class:`~embedder.source.shards.Shard` objects, so the one reader reads them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from embedder.source.shards import RowScanner, Shard, ipc_batch_rows, shard_id

FOLLOW_ROWS = 1024
"""Rows read at a time past a Parquet or Arrow shard's end, while its last document goes on."""
FOLLOW_BYTES = 1 << 20
"""Bytes read at a time past a JSONL/CSV shard's end."""


def previous_row(shard: Shard, fs: pafs.FileSystem, path: str) -> Shard | None:
    """The row before ``shard`` in its file, or ``None`` when the shard starts the file."""
    if shard.row_start == 0:
        return None
    if shard.file.format in ("jsonl", "csv"):
        if shard.prev_row_byte is None or shard.byte_start is None:
            return None
        return _text_range(shard, shard.row_start - 1, 1, shard.prev_row_byte, shard.byte_start)
    return _grouped_range(shard, _group_rows(shard, fs, path), shard.row_start - 1, 1)


def following(shard: Shard, fs: pafs.FileSystem, path: str) -> Iterator[Shard]:
    """The rows after ``shard`` in its file, a block at a time, until the file ends."""
    if shard.file.format in ("jsonl", "csv"):
        yield from _following_text(shard, fs, path)
        return
    sizes = _group_rows(shard, fs, path)
    total, start = sum(sizes), shard.row_end
    while start < total:
        count = min(FOLLOW_ROWS, total - start)
        yield _grouped_range(shard, sizes, start, count)
        start += count


def _text_range(shard: Shard, row_start: int, row_count: int, byte_start: int, byte_end: int) -> Shard:
    return Shard(shard_id(shard.file, row_start, row_count, byte_start, byte_end), shard.file, row_start, row_count,
                 byte_end - byte_start, byte_start=byte_start, byte_end=byte_end, header_end=shard.header_end)


def _following_text(shard: Shard, fs: pafs.FileSystem, path: str) -> Iterator[Shard]:
    if shard.byte_end is None:  # a compressed file is one shard: nothing follows it
        return
    size = shard.file.size
    scanner = RowScanner(csv=shard.file.format == "csv")
    scanner.carry_start = offset = start = shard.byte_end
    row = shard.row_end
    with fs.open_input_file(path) as handle:
        while offset < size:
            block = handle.read_at(min(FOLLOW_BYTES, size - offset), offset)
            offset += len(block)
            ends = scanner.feed(block)
            if offset >= size:
                ends = np.concatenate((ends, scanner.finish()))
            if len(ends):
                yield _text_range(shard, row, len(ends), start, int(ends[-1]))
                row, start = row + len(ends), int(ends[-1])


def _grouped_range(shard: Shard, sizes: list[int], row_start: int, row_count: int) -> Shard:
    """Rows ``[row_start, row_start + row_count)`` of a Parquet or Arrow IPC file, with the groups holding them."""
    groups: list[int] = []
    first_row, position = 0, 0
    for index, rows in enumerate(sizes):
        if position + rows > row_start and position < row_start + row_count:
            if not groups:
                first_row = position
            groups.append(index)
        position += rows
    return Shard(shard_id(shard.file, row_start, row_count), shard.file, row_start, row_count, 0,
                 row_groups=tuple(groups), group_row_start=first_row)


def _group_rows(shard: Shard, fs: pafs.FileSystem, path: str) -> list[int]:
    """Rows of each Parquet row group or Arrow IPC record batch, from metadata only."""
    with fs.open_input_file(path) as handle:
        if shard.file.format == "parquet":
            meta = pq.read_metadata(handle)
            return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        return [rows for rows, _ in ipc_batch_rows(handle, shard.file.size)]
