"""The Milvus side of a job's table: which field each column becomes, the check of an existing collection, and
Arrow columns encoded into the protobuf ``FieldData`` an upsert carries.

    Arrow type                                   Milvus field
    string / large_string / dictionary<string>   VARCHAR (max_length 65,535; the id: 512)
    int8 .. int64, uint8 .. uint64               INT64 (a uint64 above 2^63-1 is refused at write)
    float16 / float32 / float64                  DOUBLE
    bool                                         BOOL
    struct / list / map                          JSON
    null (a column all null in the plan's sample) JSON, which takes whatever later rows hold
    timestamp / date / time / decimal            VARCHAR, as Arrow's string form (2024-01-31 12:00:00.000000)
    binary and anything else                     refused at start, naming the column

The id becomes the primary key (VARCHAR or INT64, ``auto_id`` off); the vector a FLOAT_VECTOR of the job's
dimensions. Passthrough fields are nullable: input columns may hold nulls. VARCHAR limits are counted in UTF-8
bytes, as Milvus does; only the type is known at start, so the id gets a fixed 512 (ids longer than that are
refused at write with the offending id named).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pymilvus import DataType
from pymilvus.grpc_gen import schema_pb2

from embedder.errors import SinkError
from embedder.sinks.milvus_bm25 import add_bm25

ID_VARCHAR_MAX_LENGTH = 512
VARCHAR_MAX_LENGTH = 65_535
ROW_OVERHEAD_BYTES = 8
"""Protobuf tags and length prefixes per value, added to the payload estimate of each row and field."""
_FLOAT_ARRAY_DATA_TAG = b"\x0a"  # FloatArray.data is field 1, packed (wire type 2)
_STRINGISH = (pa.types.is_timestamp, pa.types.is_date, pa.types.is_time, pa.types.is_decimal)


@dataclass(frozen=True)
class FieldSpec:
    """One field of the collection as this job needs it (or as an existing collection has it)."""

    name: str
    dtype: DataType
    max_length: int | None = None
    dim: int | None = None
    nullable: bool = False
    analyzer: bool = False
    """Text analysed for BM25 (``enable_analyzer``)."""

    def describe(self) -> str:
        if self.dtype == DataType.VARCHAR:
            return f"VARCHAR(max_length={self.max_length})"
        if self.dtype == DataType.FLOAT_VECTOR:
            return f"FLOAT_VECTOR(dim={self.dim})"
        return self.dtype.name


def milvus_type(arrow_type: pa.DataType) -> DataType | None:
    """The Milvus type a column of ``arrow_type`` is stored as, ``None`` when it cannot be stored."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or any(
            check(arrow_type) for check in _STRINGISH):
        return DataType.VARCHAR
    if pa.types.is_integer(arrow_type):
        return DataType.INT64
    if pa.types.is_floating(arrow_type):
        return DataType.DOUBLE
    if pa.types.is_boolean(arrow_type):
        return DataType.BOOL
    if pa.types.is_struct(arrow_type) or pa.types.is_map(arrow_type) or pa.types.is_list(arrow_type) or \
            pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type) or \
            pa.types.is_null(arrow_type):
        return DataType.JSON
    return None


def expected_fields(schema: pa.Schema, id_type: pa.DataType, dimensions: int, id_field: str,
                    vector_field: str) -> list[FieldSpec]:
    """Primary key, vector, then one nullable field per passthrough column of ``schema`` (which has ``id``)."""
    id_dtype = milvus_type(id_type)
    if id_dtype not in (DataType.VARCHAR, DataType.INT64) or pa.types.is_floating(id_type):
        raise SinkError(f"the id column is {id_type}; a Milvus primary key must be a string or an integer")
    fields = [FieldSpec(id_field, id_dtype, ID_VARCHAR_MAX_LENGTH if id_dtype == DataType.VARCHAR else None),
              FieldSpec(vector_field, DataType.FLOAT_VECTOR, dim=dimensions)]
    for column in schema:
        if column.name == "id":
            continue
        dtype = milvus_type(column.type)
        if dtype is None:
            raise SinkError(f"passthrough column '{column.name}' is {column.type}, which Milvus cannot store; "
                            "leave it out of source.passthrough")
        fields.append(FieldSpec(column.name, dtype, VARCHAR_MAX_LENGTH if dtype == DataType.VARCHAR else None,
                                nullable=True))
    return fields


def build_schema(client: Any, fields: list[FieldSpec], *, enable_dynamic_field: bool,
                 sparse_field: str | None = None) -> Any:
    """The collection's schema; ``sparse_field``: also BM25 from the analysed field into that sparse field."""
    schema = client.create_schema(auto_id=False, enable_dynamic_field=enable_dynamic_field)
    for number, spec in enumerate(fields):
        extra: dict[str, Any] = {"max_length": spec.max_length} if spec.max_length else {}
        if spec.dim:
            extra["dim"] = spec.dim
        if spec.nullable:
            extra["nullable"] = True
        if spec.analyzer:
            extra["enable_analyzer"] = True
        schema.add_field(spec.name, spec.dtype, is_primary=number == 0, **extra)
    if sparse_field is not None:
        add_bm25(schema, next(spec.name for spec in fields if spec.analyzer), sparse_field)
    return schema


def found_fields(described: Mapping[str, Any]) -> dict[str, FieldSpec]:
    """The fields of ``describe_collection``'s answer, by name."""
    found = {}
    for field in described.get("fields", []):
        params = field.get("params") or {}
        found[field["name"]] = FieldSpec(field["name"], DataType(field["type"]), _int(params.get("max_length")),
                                         _int(params.get("dim")), bool(field.get("nullable", False)))
    return found


def check_collection(described: Mapping[str, Any], expected: list[FieldSpec], where: str) -> dict[str, FieldSpec]:
    """``SinkError`` unless the existing collection can take this job's rows; returns its fields by name.

    Checked: primary key (name, type, auto_id off), vector field and dimension, every passthrough field (present,
    same type), and no other field that would need a value (not nullable, no default)."""
    found = found_fields(described)
    key, vector, *passthrough = expected
    primary = next((f for f in described.get("fields", []) if f.get("is_primary")), None)
    if primary is None or primary["name"] != key.name or found[key.name].dtype != key.dtype:
        shown = f"'{primary['name']}' {found[primary['name']].describe()}" if primary else "none"
        raise _mismatch(where, "primary key", f"'{key.name}' {key.dtype.name}", shown)
    if described.get("auto_id") or primary.get("auto_id"):
        raise _mismatch(where, f"primary key '{key.name}'", "auto_id off (rows are upserted by their id)",
                        "auto_id on")
    for spec in (vector, *passthrough):
        have = found.get(spec.name)
        if have is None:
            raise _mismatch(where, f"field '{spec.name}'", spec.describe(), "no such field")
        if have.dtype != spec.dtype or (spec.dim is not None and have.dim != spec.dim):
            raise _mismatch(where, f"field '{spec.name}'", spec.describe(), have.describe())
    known = {spec.name for spec in expected}
    for field in described.get("fields", []):
        needs_value = not field.get("nullable") and field.get("default_value") is None
        if field["name"] not in known and needs_value and not field.get("is_function_output"):
            raise _mismatch(where, f"field '{field['name']}'", "no such field (this job has no value for it)",
                            f"{found[field['name']].describe()}, required")
    return found


def _mismatch(where: str, what: str, expected: str, found: str) -> SinkError:
    return SinkError(f"{where}: {what} does not match this job: expected {expected}, found {found}. Nothing was "
                     "written; drop the collection or set another sink collection name")


def _int(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


# --- encoding ------------------------------------------------------------------------------------------------


@dataclass
class EncodedTable:
    """A shard's rows ready to be cut into upsert requests."""

    rows: int
    columns: list[tuple[FieldSpec, Any]]
    """Per field: a 2-D float32 array (the vector) or a list of Python values with ``None`` for nulls."""
    row_bytes: np.ndarray
    """Estimated payload bytes of each row, to bound requests by size."""

    def field_data(self, start: int, stop: int) -> list[Any]:
        """Rows ``start:stop`` as protobuf ``FieldData`` (for a prebuilt ``UpsertRequest``)."""
        return [_field_data(spec, values[start:stop]) for spec, values in self.columns]

    def rows_dicts(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Rows ``start:stop`` as dicts (for the public ``MilvusClient.upsert``)."""
        names = [spec.name for spec, _ in self.columns]
        columns = [[None if v is None else json.loads(v) for v in values[start:stop]]
                   if spec.dtype == DataType.JSON else values[start:stop] for spec, values in self.columns]
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def encode_table(table: pa.Table, fields: list[FieldSpec], shard_id: str) -> EncodedTable:
    """Convert ``table`` (``id``, ``vector``, passthrough columns) into values for ``fields``; ``SinkError``
    naming the shard, field and row id for a value the collection cannot take."""
    ids = table.column("id")
    row_bytes = np.full(table.num_rows, 0, dtype=np.int64)
    columns: list[tuple[FieldSpec, Any]] = []
    for number, spec in enumerate(fields):
        name = "id" if number == 0 else "vector" if number == 1 else spec.name
        column = table.column(name)
        if spec.dtype == DataType.FLOAT_VECTOR:
            values: Any = column.combine_chunks().flatten().to_numpy().reshape(-1, spec.dim).astype("<f4", copy=False)
            row_bytes += values.shape[1] * 4
        else:
            values, sizes = _scalars(column, spec, shard_id, ids)
            row_bytes += sizes
        columns.append((spec, values))
    return EncodedTable(table.num_rows, columns, row_bytes + ROW_OVERHEAD_BYTES * len(fields))


def _scalars(column: pa.ChunkedArray, spec: FieldSpec, shard_id: str, ids: pa.ChunkedArray) -> tuple[list, Any]:
    def refuse(reason: str, mask: Any) -> SinkError:
        row = int(np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))[0])
        return SinkError(f"shard {shard_id}: field '{spec.name}' of the row with id {ids[row].as_py()!r} {reason}")

    if column.null_count and not spec.nullable:
        raise refuse("is null, and the collection's field is not nullable", pc.is_null(column))
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if spec.dtype == DataType.VARCHAR:
        column = column.cast(pa.string())
        lengths = pc.fill_null(pc.binary_length(column), 0)
        if spec.max_length is not None and column.length() and pc.max(lengths).as_py() > spec.max_length:
            raise refuse(f"is longer than the field's max_length of {spec.max_length} UTF-8 bytes",
                         pc.greater(lengths, spec.max_length))
        return column.to_pylist(), lengths.to_numpy(zero_copy_only=False)
    if spec.dtype == DataType.INT64:
        try:
            column = column.cast(pa.int64())
        except pa.ArrowInvalid as exc:
            raise SinkError(f"shard {shard_id}: field '{spec.name}' has a value outside INT64: {exc}") from None
        return column.to_pylist(), 8
    if spec.dtype == DataType.DOUBLE:
        return column.cast(pa.float64()).to_pylist(), 8
    if spec.dtype == DataType.BOOL:
        return column.to_pylist(), 1
    if spec.dtype == DataType.JSON:
        values = [None if v is None else json.dumps(v, ensure_ascii=False, default=str).encode()
                  for v in column.to_pylist()]
        return values, np.fromiter((len(v) if v else 0 for v in values), dtype=np.int64, count=len(values))
    raise SinkError(f"field '{spec.name}': Milvus type {spec.dtype.name} is not supported by this sink")


_SCALAR_ATTR = {DataType.VARCHAR: "string_data", DataType.INT64: "long_data", DataType.DOUBLE: "double_data",
                DataType.BOOL: "bool_data", DataType.JSON: "json_data"}


def _field_data(spec: FieldSpec, values: Any) -> Any:
    field = schema_pb2.FieldData(type=spec.dtype, field_name=spec.name)
    if spec.dtype == DataType.FLOAT_VECTOR:
        # The packed wire form of FloatArray is exactly the little-endian floats: ~10x faster than .extend().
        raw = np.ascontiguousarray(values).tobytes()
        field.vectors.dim = spec.dim or 0
        field.vectors.float_vector.MergeFromString(_FLOAT_ARRAY_DATA_TAG + _varint(len(raw)) + raw)
        return field
    if spec.nullable:
        field.valid_data.extend([value is not None for value in values])
        values = [value for value in values if value is not None]
    getattr(field.scalars, _SCALAR_ATTR[spec.dtype]).data.extend(values)
    return field


def _varint(value: int) -> bytes:
    """Protobuf's base-128 length prefix."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def split_by_bytes(row_bytes: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges covering every row, each under ``limit`` bytes (a larger row goes alone)."""
    ranges, start, total = [], 0, len(row_bytes)
    cumulative = np.cumsum(row_bytes)
    while start < total:
        base = cumulative[start - 1] if start else 0
        stop = int(np.searchsorted(cumulative, base + limit, side="right"))
        stop = max(stop, start + 1)
        ranges.append((start, stop))
        start = stop
    return ranges
