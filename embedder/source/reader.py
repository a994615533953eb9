"""Read one shard: only its rows, only the columns the job needs, as ``id, text, <passthrough>, _row``.

``id`` is int64 or string, ``text`` is string (null kept null, so the caller can dead-letter the row), and
``_row`` is the 0-based row number within the file. Every problem with the data is an :class:`InputError`
naming the file and, where known, the row and column.

Types: Parquet and Arrow columns keep their stored types. JSONL values keep their JSON types, except that
strings pyarrow would turn into timestamps stay strings. CSV columns are all read as strings (an empty
unquoted field is null), so a shard's types never depend on what its values happen to look like; set
``source.id_type = "int64"`` for integer ids from CSV.
"""

from __future__ import annotations

import re
from string import Formatter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.fs as pafs
import pyarrow.json as pjson
import pyarrow.parquet as pq

from embedder import storage
from embedder.config import SourceConfig
from embedder.errors import InputError
from embedder.source import neighbours
from embedder.source.shards import Shard, row_ends
from embedder.storage import retry
from embedder.storage.errors import is_storage_fault


def _read_raw(shard: Shard, source: SourceConfig, columns: list[str], filesystem: pafs.FileSystem | None,
              storage_options: dict[str, Any] | None, counter: retry.RetryCounter | None = None) -> pa.Table:
    fs, path = storage.resolve(shard.file.uri, storage_options, filesystem=filesystem)
    read = {"parquet": _read_parquet, "arrow": _read_ipc, "jsonl": _read_jsonl, "csv": _read_csv}[shard.file.format]
    # the whole read is one operation: a transient storage error reads it again (see embedder.storage.retry)
    raw = retry.call(retry.SHARD_READ, shard.file.uri, lambda: read(shard, fs, path, columns, source),
                     counter=counter)
    if raw.num_rows != shard.row_count:
        raise InputError(f"{shard.describe()}: expected {shard.row_count} rows, read {raw.num_rows}; did the file "
                         "change after planning (or hold two JSON objects on one line)?")
    return raw


def read_keys(shard: Shard, source: SourceConfig, *, filesystem: pafs.FileSystem | None = None,
              storage_options: dict[str, Any] | None = None, counter: retry.RetryCounter | None = None) -> pa.Table:
    """Only the shard's own rows' ``id`` (checked like :func:`read_shard` does), ``_row`` and, for pre-chunked
    input, ``_document``: for the checks of the whole input."""
    columns = list(dict.fromkeys([source.id_column, *([source.document_column] if source.document_column else [])]))
    raw = _read_raw(shard, source, columns, filesystem, storage_options, counter)
    keys = {"id": _ids(raw[source.id_column], source, shard),
            "_row": pa.array(np.arange(shard.row_start, shard.row_end, dtype=np.int64))}
    if source.document_column is not None:
        keys["_document"] = _document_values(raw[source.document_column], source.document_column, shard)
    return pa.table(keys)


def read_shard(shard: Shard, source: SourceConfig, *, filesystem: pafs.FileSystem | None = None,
               storage_options: dict[str, Any] | None = None, counter: retry.RetryCounter | None = None) -> pa.Table:
    """The shard's rows as ``id, text, <passthrough...>, _row`` (pre-chunked input: also ``_document`` and
    ``_chunk_order``, and the rows of the documents that start in the shard); see the module docstring.
    Transient storage errors are retried (counted in ``counter``); a permanent one is a ``StoragePermanent``."""
    table = _rows(shard, source, filesystem, storage_options, counter)
    if source.document_column is not None:
        table = _own_documents(shard, source, table, filesystem, storage_options, counter)
    duplicates = repeated_ids(table["id"])
    if duplicates:
        value, positions = duplicates[0]
        rows = table["_row"].to_pylist()
        at = [rows[position] for position in positions]
        listed = ", ".join(map(str, at[:-1])) + f" and {at[-1]}"
        more = f" ({len(duplicates)} ids repeat in {shard.describe()})" if len(duplicates) > 1 else ""
        raise InputError(f"{shard.file.uri}: duplicate id {value!r} at rows {listed}{more}")
    return table


def _rows(shard: Shard, source: SourceConfig, filesystem: pafs.FileSystem | None,
          storage_options: dict[str, Any] | None, counter: retry.RetryCounter | None = None) -> pa.Table:
    raw = _read_raw(shard, source, list(source.read_columns), filesystem, storage_options, counter)
    uri = shard.file.uri
    out = {"id": _ids(raw[source.id_column], source, shard),
           "text": (_text_column(raw[source.text_column], source.text_column, uri) if source.text_column
                    else _render(raw, source.text_template or "", uri))}
    out.update({name: raw[name] for name in source.passthrough})
    if source.document_column is not None:
        out["_document"] = _document_values(raw[source.document_column], source.document_column, shard)
    if source.chunk_order_column is not None:
        out["_chunk_order"] = raw[source.chunk_order_column]
    out["_row"] = pa.array(np.arange(shard.row_start, shard.row_end, dtype=np.int64))
    return pa.table(out)


def _own_documents(shard: Shard, source: SourceConfig, table: pa.Table, filesystem: pafs.FileSystem | None,
                   storage_options: dict[str, Any] | None, counter: retry.RetryCounter | None) -> pa.Table:
    """Drop the leading rows of a document that began before the shard; add the rows after it that finish its
    last document: a shard owns the documents that start in its range."""
    fs, path = storage.resolve(shard.file.uri, storage_options, filesystem=filesystem)
    before = neighbours.previous_row(shard, fs, path)
    if before is not None and table.num_rows:
        previous = _rows(before, source, fs, None, counter)["_document"][0]
        continues = pc.equal(table["_document"], previous).to_numpy(zero_copy_only=False)
        keep = int(np.argmin(continues)) if not continues.all() else table.num_rows
        table = table.slice(keep)
    if table.num_rows == 0:
        return table
    last = table["_document"][table.num_rows - 1]
    extra = []
    for block in neighbours.following(shard, fs, path):
        rows = _rows(block, source, fs, None, counter).cast(table.schema)
        same = pc.equal(rows["_document"], last).to_numpy(zero_copy_only=False)
        run = int(np.argmin(same)) if not same.all() else rows.num_rows
        extra.append(rows.slice(0, run))
        if run < rows.num_rows:
            break
    return pa.concat_tables([table, *extra]) if extra else table


def _document_values(col: pa.ChunkedArray, name: str, shard: Shard) -> pa.ChunkedArray:
    if col.null_count:
        first = pc.index(pc.is_null(col), True).as_py()
        raise InputError(f"{shard.file.uri} row {shard.row_start + first}: the document ({name!r}) is null")
    return _decoded(col)


def repeated_ids(ids: pa.ChunkedArray | pa.Array) -> list[tuple[Any, list[int]]]:
    """Each id that occurs more than once with its positions in ``ids``, ordered by first position. Cheap (one
    distinct count) when there are none, which is the usual case."""
    if pc.count_distinct(ids, mode="all").as_py() == len(ids):
        return []
    table = pa.table({"id": ids, "position": pa.array(np.arange(len(ids), dtype=np.int64))})
    grouped = table.group_by("id").aggregate([("position", "list")])
    repeated = grouped.filter(pc.greater(pc.list_value_length(grouped["position_list"]), 1))
    found = [(value, sorted(at)) for value, at in zip(repeated["id"].to_pylist(),
                                                       repeated["position_list"].to_pylist(), strict=True)]
    return sorted(found, key=lambda item: item[1][0])


# --- columns -----------------------------------------------------------------------------------------------

def _string_like(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _decoded(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col


def _ids(col: pa.ChunkedArray, source: SourceConfig, shard: Shard) -> pa.ChunkedArray:
    uri, name = shard.file.uri, source.id_column
    if col.null_count:
        first = pc.index(pc.is_null(col), True).as_py()
        more = f" ({col.null_count} null ids in {shard.describe()})" if col.null_count > 1 else ""
        raise InputError(f"{uri} row {shard.row_start + first}: id is null (column {name!r}){more}")
    col = _decoded(col)
    t = col.type
    if source.id_type == "int64" and _string_like(t):
        try:
            return pc.cast(pc.utf8_trim_whitespace(col), pa.int64())
        except pa.ArrowInvalid:
            bad = next(i for i, v in enumerate(col.to_pylist()) if not _is_int64(v))
            raise InputError(f"{uri} row {shard.row_start + bad}: id {col[bad].as_py()!r} in column {name!r} "
                             "is not an integer (source.id_type is int64)") from None
    if pa.types.is_integer(t):
        try:
            ids = col.cast(pa.int64())
        except pa.ArrowInvalid as exc:
            raise InputError(f"{uri}: id column {name!r} ({t}) does not fit int64: {exc}") from exc
        return ids.cast(pa.string()) if source.id_type == "string" else ids
    if _string_like(t) and source.id_type != "int64":
        return col.cast(pa.string())
    raise InputError(f"{uri}: id column {name!r} has type {t}; ids must be integers or strings")


def _is_int64(value: str) -> bool:
    try:
        return -(2**63) <= int(value) < 2**63
    except ValueError:
        return False


def _text_column(col: pa.ChunkedArray, name: str, uri: str) -> pa.ChunkedArray:
    col = _decoded(col)
    if not (_string_like(col.type) or pa.types.is_null(col.type)):
        raise InputError(f"{uri}: text column {name!r} has type {col.type}, not string; "
                         "use source.text_template to render other types")
    return col.cast(pa.string())


def _render(raw: pa.Table, template: str, uri: str) -> pa.ChunkedArray:
    parts: list[Any] = []
    for literal, name, _, _ in Formatter().parse(template):
        if literal:
            parts.append(literal)
        if name is not None:
            col = _decoded(raw[name])
            try:
                parts.append(col.cast(pa.string()))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InputError(f"{uri}: template column {name!r} ({col.type}) cannot be rendered as text: "
                                 f"{exc}") from exc
    return pc.binary_join_element_wise(*parts, "", null_handling="replace", null_replacement="")


def _check_columns(shard: Shard, available: list[str], needed: list[str], source: SourceConfig) -> None:
    for name in needed:
        if name not in available:
            role = ("source.id_column" if name == source.id_column else "source.text_column"
                    if name == source.text_column else "source.passthrough" if name in source.passthrough
                    else "source.text_template")
            shown = ", ".join(available[:50]) + (", ..." if len(available) > 50 else "")
            raise InputError(f"{shard.file.uri}: column {name!r} not found; columns are: {shown} "
                             f"(needed by {role})")


# --- formats -----------------------------------------------------------------------------------------------

def _read_parquet(shard: Shard, fs: pafs.FileSystem, path: str, columns: list[str], source: SourceConfig) -> pa.Table:
    uri = shard.file.uri
    with fs.open_input_file(path) as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except (pa.ArrowException, OSError) as exc:
            if is_storage_fault(exc):
                raise
            raise InputError(f"not a valid Parquet file: {uri}: {exc}") from exc
        _check_columns(shard, parquet.schema_arrow.names, columns, source)
        offset = shard.row_start - shard.group_row_start
        try:
            first = parquet.metadata.row_group(shard.row_groups[0])
            if len(shard.row_groups) == 1 and shard.row_count < first.num_rows:
                return _read_group_slice(parquet, shard, columns, offset)
            table = parquet.read_row_groups(list(shard.row_groups), columns=columns)
        except (pa.ArrowException, OSError) as exc:
            if is_storage_fault(exc):
                raise
            raise InputError(f"{shard.describe()}: cannot read Parquet data: {exc}") from exc
    return table.slice(offset, shard.row_count)


def _read_group_slice(parquet: pq.ParquetFile, shard: Shard, columns: list[str], offset: int) -> pa.Table:
    """Part of a large row group: decode batches only up to the end of the range, keep the overlap."""
    batches, seen = [], 0
    size = max(1024, min(shard.row_count, 65536))
    for batch in parquet.iter_batches(batch_size=size, row_groups=list(shard.row_groups), columns=columns):
        lo, hi = max(offset - seen, 0), min(offset + shard.row_count - seen, batch.num_rows)
        if hi > lo:
            batches.append(batch.slice(lo, hi - lo))
        seen += batch.num_rows
        if seen >= offset + shard.row_count:
            break
    return pa.Table.from_batches(batches)  # never empty: a shard has rows


def _read_ipc(shard: Shard, fs: pafs.FileSystem, path: str, columns: list[str], source: SourceConfig) -> pa.Table:
    # A local file is memory-mapped: only the pages of the needed columns are ever touched.
    handle = pa.memory_map(path) if isinstance(fs, pafs.LocalFileSystem) else fs.open_input_file(path)
    try:
        with handle:
            names = pa.ipc.open_file(handle).schema.names
            _check_columns(shard, names, columns, source)
            # Reopened to decode only the needed columns (on object storage: fetch only their buffers).
            only = pa.ipc.IpcReadOptions(included_fields=sorted(names.index(c) for c in columns))
            reader = pa.ipc.open_file(handle, options=only)
            table = pa.Table.from_batches([reader.get_batch(i) for i in shard.row_groups], schema=reader.schema)
    except (pa.ArrowException, OSError) as exc:
        if is_storage_fault(exc):
            raise
        raise InputError(f"{shard.describe()}: not a valid Arrow IPC file: {exc}") from exc
    return table.select(columns).slice(shard.row_start - shard.group_row_start, shard.row_count)


def _read_bytes(fs: pafs.FileSystem, path: str, shard: Shard) -> bytes:
    """The shard's bytes: its byte range, or a whole compressed file decompressed."""
    if shard.byte_start is None or shard.byte_end is None:
        with fs.open_input_stream(path, compression=shard.file.compression) as stream:
            return stream.read()
    with fs.open_input_file(path) as handle:
        return handle.read_at(shard.byte_end - shard.byte_start, shard.byte_start)


def _row_of(data: bytes, offset: int, *, csv: bool) -> int:
    """0-based row (within ``data``) of the byte at ``offset``."""
    return int(np.searchsorted(row_ends(data, csv=csv), offset, side="right"))


def _read_jsonl(shard: Shard, fs: pafs.FileSystem, path: str, columns: list[str], source: SourceConfig) -> pa.Table:
    data = _read_bytes(fs, path, shard)
    try:
        data.decode("utf-8")  # pyarrow reports bad UTF-8 without a row, or as a type change
    except UnicodeDecodeError as exc:
        row = shard.row_start + _row_of(data, exc.start, csv=False)
        raise InputError(f"{shard.file.uri} row {row}: invalid UTF-8 ({exc.reason})") from exc
    table = _parse_json(data, shard, None)
    _check_columns(shard, table.column_names, columns, source)
    # JSON has no date type: a string that looks like one must stay the string it was.
    dated = [c for c in columns if pa.types.is_temporal(table.schema.field(c).type)]
    if dated:
        table = _parse_json(data, shard, pa.schema([(c, pa.string()) for c in dated]))
    return table.select(columns)


def _parse_json(data: bytes, shard: Shard, schema: pa.Schema | None) -> pa.Table:
    # One block for the whole shard: types are inferred from all its rows and error rows count from its start.
    options = pjson.ReadOptions(block_size=max(len(data) + 1, 1 << 16), use_threads=False)
    try:
        return pjson.read_json(pa.BufferReader(data), read_options=options,
                               parse_options=pjson.ParseOptions(explicit_schema=schema))
    except pa.ArrowInvalid as exc:
        message = str(exc)
        found = re.search(r" in row (\d+)", message)
        if found:
            row = shard.row_start + int(found.group(1))
            raise InputError(f"{shard.file.uri} row {row}: malformed JSON line: "
                             f"{message[: found.start()]}") from exc
        raise InputError(f"{shard.describe()}: malformed JSON: {message}") from exc


def _read_csv(shard: Shard, fs: pafs.FileSystem, path: str, columns: list[str], source: SourceConfig) -> pa.Table:
    data = _read_bytes(fs, path, shard)
    if shard.byte_start is not None:
        with fs.open_input_file(path) as handle:
            data = handle.read_at(shard.header_end, 0) + data
    try:
        return _parse_csv(data, columns, pa.string())
    except pa.ArrowKeyError:  # a column is missing: name the ones there are
        _check_columns(shard, pcsv.open_csv(pa.BufferReader(data)).schema.names, columns, source)
        raise
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc):
            _raise_bad_utf8(data, columns, shard)
        raise InputError(f"{shard.describe()}: {exc}") from exc


def _parse_csv(data: bytes, columns: list[str], as_type: pa.DataType) -> pa.Table:
    return pcsv.read_csv(
        pa.BufferReader(data),
        read_options=pcsv.ReadOptions(use_threads=False, block_size=max(len(data) + 1, 1 << 16)),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(
            include_columns=columns, column_types={c: as_type for c in columns},
            strings_can_be_null=True, null_values=[""], quoted_strings_can_be_null=False),
    )


def _raise_bad_utf8(data: bytes, columns: list[str], shard: Shard) -> None:
    """Name the row and column of the first invalid UTF-8 value (error path only, so a Python loop)."""
    table = _parse_csv(data, columns, pa.binary())
    for index, row in enumerate(table.to_pylist()):
        for name, value in row.items():
            try:
                if value is not None:
                    value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{shard.file.uri} row {shard.row_start + index}, column {name!r}: "
                                 f"invalid UTF-8 ({exc.reason})") from None
    raise InputError(f"{shard.describe()}: invalid UTF-8")
