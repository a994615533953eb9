"""Split input files into shards of about ``shard_rows`` rows, from metadata and byte scans only.

- Parquet: whole row groups from the footer, packed up to ``shard_rows``. A row group up to 25% larger than
  ``shard_rows`` stays whole (cutting it would read it twice); a larger one is cut into equal row ranges, and
  each of those shards decodes the group up to its range. Row groups near ``shard_rows`` are what to write.
- Arrow IPC: record batches, the same way; rows per batch come from the batch headers named in the file
  footer, so the batch bodies are never read.
- JSONL / CSV: a vectorised scan for row ends (a CSV newline ends a record only outside quotes); a shard is a
  byte range of whole rows. Blank lines are not rows, as in pyarrow's readers. Compressed files cannot be
  entered in the middle: each is one shard, whose rows are still counted exactly. As in RFC 4180, a ``"``
  is expected only around a field: a stray one inside an unquoted field would flip the quote parity.

Row numbers are exact and 0-based within each file: they name rows in error messages and place rows on resume.
A file without rows contributes no shard; :func:`plan_shards` returns ``[]`` for an all-empty input and leaves
the "input is empty" error to the caller, which knows the path the user gave.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain, pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from embedder import storage
from embedder.errors import ConfigError, InputError
from embedder.source.files import SourceFile
from embedder.storage import retry
from embedder.storage.errors import is_storage_fault

SCAN_BLOCK = 8 << 20
"""Bytes per read while scanning text files: large enough for numpy to dominate, small enough for memory."""


@dataclass(frozen=True, slots=True)
class Shard:
    """A contiguous run of rows of one file; small and picklable, it is what travels to a worker."""

    shard_id: str
    """sha256 of (uri, size, version, rows, byte range), 24 hex characters: stable while the file is."""
    file: SourceFile
    row_start: int
    """First row, 0-based within the file."""
    row_count: int
    estimated_bytes: int
    """Bytes of the input file this shard covers (compressed column chunks, batch bodies, byte range)."""
    byte_start: int | None = None
    """JSONL/CSV: the shard's bytes are ``[byte_start, byte_end)``; ``None`` for a whole compressed file."""
    byte_end: int | None = None
    header_end: int = 0
    """CSV: the header row is ``[0, header_end)``, to be put in front of the byte range."""
    prev_row_byte: int | None = None
    """JSONL/CSV: where the row before the shard starts (``None`` for a file's first shard). Pre-chunked input reads
    that row to tell whether the shard's first document began in the shard before."""
    row_groups: tuple[int, ...] = ()
    """Parquet row groups or IPC record batches holding the rows, in order."""
    group_row_start: int = 0
    """File row where ``row_groups[0]`` starts; the reader slices from ``row_start - group_row_start``."""

    @property
    def row_end(self) -> int:
        return self.row_start + self.row_count

    def describe(self) -> str:
        """``<uri> rows 10–19`` for messages (rows shown 0-based, end inclusive)."""
        return f"{self.file.uri} rows {self.row_start}–{self.row_end - 1}"


def shard_id(file: SourceFile, row_start: int, row_count: int,
             byte_start: int | None = None, byte_end: int | None = None) -> str:
    """Changes when the file's size or version changes, or the rows it covers do."""
    key = "\x1f".join(map(str, (file.uri, file.size, file.version, row_start, row_count, byte_start, byte_end)))
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _shard(file: SourceFile, row_start: int, row_count: int, estimated_bytes: int, **extra: Any) -> Shard:
    sid = shard_id(file, row_start, row_count, extra.get("byte_start"), extra.get("byte_end"))
    return Shard(sid, file, row_start, row_count, int(estimated_bytes), **extra)


def plan_shards(files: list[SourceFile], shard_rows: int, *, filesystem: pafs.FileSystem | None = None,
                storage_options: dict[str, Any] | None = None, max_workers: int = 8) -> list[Shard]:
    """Shards of every file, in file order then row order.

    Returns ``[]`` when no file has a row: the caller raises ``InputError("input is empty: <path>")``.

    Files are planned on ``max_workers`` threads: on object storage each footer is a round trip.
    """
    if shard_rows < 1:
        raise ConfigError(f"source.shard_rows must be at least 1, got {shard_rows}")

    def plan_one(file: SourceFile) -> list[Shard]:
        fs, path = storage.resolve(file.uri, storage_options, filesystem=filesystem)
        if file.size == 0:
            return []
        planner = {"parquet": _plan_parquet, "arrow": _plan_ipc}.get(file.format, _plan_text)
        return retry.call(retry.PLANNING, file.uri, lambda: planner(file, fs, path, shard_rows))

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(files) or 1))) as pool:
        return [shard for shards in pool.map(plan_one, files) for shard in shards]


def shard_summary(shards: Iterable[Shard]) -> dict[str, int]:
    """Totals for a plan: ``files``, ``shards``, ``rows``, ``bytes``."""
    shards = list(shards)
    return {"files": len({s.file.uri for s in shards}), "shards": len(shards),
            "rows": sum(s.row_count for s in shards), "bytes": sum(s.estimated_bytes for s in shards)}


# --- row groups and record batches -------------------------------------------------------------------------

def _pack_groups(file: SourceFile, rows: list[int], sizes: list[int], shard_rows: int) -> list[Shard]:
    """Greedily pack whole groups up to ``shard_rows``; cut a much larger group into equal row ranges."""
    shards: list[Shard] = []
    group: list[int] = []
    start = acc_rows = acc_bytes = 0
    row = 0

    def flush() -> None:
        nonlocal group, acc_rows, acc_bytes
        if group:
            shards.append(_shard(file, start, acc_rows, acc_bytes, row_groups=tuple(group), group_row_start=start))
        group, acc_rows, acc_bytes = [], 0, 0

    for index, (n, size) in enumerate(zip(rows, sizes, strict=True)):
        if n > shard_rows + shard_rows // 4:
            flush()
            pieces = -(-n // shard_rows)
            for k in range(pieces):
                lo, hi = n * k // pieces, n * (k + 1) // pieces
                shards.append(_shard(file, row + lo, hi - lo, size * (hi - lo) // n,
                                     row_groups=(index,), group_row_start=row))
        elif n > 0:
            if group and acc_rows + n > shard_rows:
                flush()
            if not group:
                start = row
            group.append(index)
            acc_rows += n
            acc_bytes += size
        row += n
    flush()
    return shards


def _plan_parquet(file: SourceFile, fs: pafs.FileSystem, path: str, shard_rows: int) -> list[Shard]:
    try:
        with fs.open_input_file(path) as handle:
            meta = pq.read_metadata(handle)
    except (pa.ArrowException, OSError) as exc:
        if is_storage_fault(exc):
            raise
        raise InputError(f"not a valid Parquet file: {file.uri}: {exc}") from exc
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    sizes = [sum(g.column(c).total_compressed_size for c in range(g.num_columns)) for g in groups]
    return _pack_groups(file, [g.num_rows for g in groups], sizes, shard_rows)


def _plan_ipc(file: SourceFile, fs: pafs.FileSystem, path: str, shard_rows: int) -> list[Shard]:
    try:
        with fs.open_input_file(path) as handle:
            batches = ipc_batch_rows(handle, file.size)
    except (pa.ArrowException, OSError, ValueError, struct.error) as exc:
        if is_storage_fault(exc):
            raise
        raise InputError(f"not a valid Arrow IPC file: {file.uri}: {exc}") from exc
    return _pack_groups(file, [r for r, _ in batches], [b for _, b in batches], shard_rows)


def ipc_batch_rows(handle: pa.NativeFile, size: int) -> list[tuple[int, int]]:
    """``(rows, body bytes)`` of each record batch of an Arrow IPC file, read from flatbuffer headers only.

    Layout (Arrow columnar format spec): ``... Footer, int32 footer length, "ARROW1"``; the footer lists a
    Block ``{offset: i64, metaDataLength: i32, bodyLength: i64}`` per batch; at ``offset`` the message header
    (a ``Message`` whose header is a ``RecordBatch``) gives ``length``, the batch's row count.
    """
    if size < 18:
        raise ValueError("file too short")
    tail = handle.read_at(10, size - 10)
    if tail[4:] != b"ARROW1":
        raise ValueError("no ARROW1 magic at the end of the file")
    footer_len = struct.unpack("<i", tail[:4])[0]
    footer = handle.read_at(footer_len, size - 10 - footer_len)
    vector = _fb_field(footer, _fb_root(footer), 3)  # Footer.recordBatches
    if vector is None:
        return []
    vector += struct.unpack_from("<I", footer, vector)[0]
    out = []
    for k in range(struct.unpack_from("<I", footer, vector)[0]):
        offset, meta_len, body_len = struct.unpack_from("<qi4xq", footer, vector + 4 + 24 * k)
        meta = handle.read_at(meta_len, offset)
        msg = meta[8:] if meta[:4] == b"\xff\xff\xff\xff" else meta[4:]  # continuation marker, then length
        message = _fb_root(msg)
        kind = _fb_field(msg, message, 1)  # Message.header_type
        if kind is None or msg[kind] != 3:  # 3 = RecordBatch
            raise ValueError(f"block {k} is not a record batch")
        header = _fb_field(msg, message, 2)
        assert header is not None
        header += struct.unpack_from("<I", msg, header)[0]
        length = _fb_field(msg, header, 0)  # RecordBatch.length
        out.append((0 if length is None else struct.unpack_from("<q", msg, length)[0], body_len))
    return out


def _fb_root(buf: bytes) -> int:
    return struct.unpack_from("<I", buf, 0)[0]


def _fb_field(buf: bytes, table: int, index: int) -> int | None:
    """Position of field ``index`` of the flatbuffer table at ``table``, or ``None`` when absent (default)."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    slot = 4 + 2 * index
    if slot >= struct.unpack_from("<H", buf, vtable)[0]:
        return None
    offset = struct.unpack_from("<H", buf, vtable + slot)[0]
    return table + offset if offset else None


# --- JSONL and CSV -----------------------------------------------------------------------------------------

class RowScanner:
    """Finds where rows end in a JSONL or CSV byte stream fed block by block.

    Each chunk examined starts at a row boundary (the unfinished row is carried over), so for CSV the quote
    parity is even there and a newline ends a record iff the ``"`` count before it in the chunk is even.
    """

    def __init__(self, *, csv: bool) -> None:
        self.csv = csv
        self.carry = b""
        self.carry_start = 0  # absolute offset of carry[0]

    def feed(self, block: bytes) -> np.ndarray:
        """Absolute offsets just past each non-blank row that ends in ``block`` (int64, increasing)."""
        data = self.carry + block if self.carry else block
        arr = np.frombuffer(data, np.uint8)
        ends = np.flatnonzero(arr == 10)
        if self.csv and ends.size:
            quotes = np.flatnonzero(arr == 34)
            if quotes.size:
                ends = ends[(np.searchsorted(quotes, ends) & 1) == 0]
        base = self.carry_start
        if not ends.size:
            self.carry = data
            return np.empty(0, np.int64)
        starts = np.concatenate(([0], ends[:-1] + 1))
        rows = ends[self._non_blank(data, arr, starts, ends)] + 1 + base
        cut = int(ends[-1]) + 1
        self.carry, self.carry_start = data[cut:], base + cut
        return rows.astype(np.int64)

    def finish(self) -> np.ndarray:
        """The last row when the stream does not end with a newline."""
        data, self.carry = self.carry, b""
        if self._is_blank(data):
            return np.empty(0, np.int64)
        return np.array([self.carry_start + len(data)], np.int64)

    def _non_blank(self, data: bytes, arr: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        # Almost every row starts with a visible byte; only the others are looked at in Python.
        first = arr[starts]
        suspect = (starts == ends) | (first == 13)
        if not self.csv:
            suspect |= (first == 32) | (first == 9)
        keep = np.ones(len(ends), bool)
        for i in np.flatnonzero(suspect):
            keep[i] = not self._is_blank(data[starts[i]:ends[i]])
        return keep

    def _is_blank(self, row: bytes) -> bool:
        # pyarrow's JSON reader skips whitespace-only lines; its CSV reader only empty ones.
        return row in (b"", b"\r") if self.csv else not row.strip(b" \t\r")


def row_ends(data: bytes, *, csv: bool) -> np.ndarray:
    """Offsets just past each row of a whole buffer (the last row may lack its newline)."""
    scanner = RowScanner(csv=csv)
    return np.concatenate((scanner.feed(data), scanner.finish()))


def _blocks(handle: pa.NativeFile) -> Iterator[bytes]:
    while block := handle.read(SCAN_BLOCK):
        yield block


def _plan_text(file: SourceFile, fs: pafs.FileSystem, path: str, shard_rows: int) -> list[Shard]:
    csv = file.format == "csv"
    scanner = RowScanner(csv=csv)
    header_end: int | None = None if csv else 0
    total = 0
    cuts: list[int] = []  # offset just past every shard_rows-th data row
    before: dict[int, int] = {}  # shard k -> offset just past the row two rows before its first one
    with fs.open_input_stream(path, compression=file.compression) as handle:
        for block in chain(_blocks(handle), [None]):
            ends = scanner.feed(block) if block is not None else scanner.finish()
            if header_end is None and ends.size:
                header_end, ends = int(ends[0]), ends[1:]
            # rows total+1 .. total+len(ends) end here; keep the ends of rows numbered k*shard_rows
            first = (-total - 1) % shard_rows
            cuts.extend(int(x) for x in ends[first::shard_rows])
            numbers = total + 1 + np.arange(len(ends))  # 1-based numbers of the rows ending here
            ahead = (numbers + 1) % shard_rows == 0  # the row before the last row of a shard
            before.update(zip(((numbers[ahead] + 1) // shard_rows).tolist(), ends[ahead].tolist(), strict=True))
            total += len(ends)
    if total == 0:
        return []
    if file.compression:
        return [_shard(file, 0, total, file.size)]
    bounds = [header_end or 0, *cuts]
    if total % shard_rows:
        bounds.append(file.size)
    return [
        _shard(file, k * shard_rows, min(shard_rows, total - k * shard_rows), end - start,
               byte_start=start, byte_end=end, header_end=header_end or 0,
               prev_row_byte=None if k == 0 else before.get(k, header_end or 0))
        for k, (start, end) in enumerate(pairwise(bounds))
    ]
