"""What every sink is: a fixed life like Ray Data's ``Datasink``, with typed receipts instead of strings.

    start(info)                     once per sink object, before any write (schema, model, fingerprint)
    write(shard_id, table)          per shard -> WriteReceipt; idempotent: the same shard again replaces it
    commit(shard_ids_in_plan, receipts=())   once, at the end of a complete run -> CommitReceipt
    abort()                         on failure; finished shards stay (the ledger refers to them on resume)

A sink's ``__init__`` keeps plain configuration only: the object is pickled into a Ray actor, which opens its
clients lazily on first use. The table a sink receives has ``id``, ``vector``
(``fixed_size_list<float32>[dimensions]``), the passthrough columns and perhaps ``content_hash``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from embedder.errors import SinkError


@dataclass(frozen=True)
class SinkStartInfo:
    """What a sink learns once before the first write."""

    model: str
    task: str | None
    dimensions: int
    fingerprint: str
    passthrough_schema: pa.Schema
    """The ``id`` field and the passthrough fields as they will arrive (may be empty)."""
    id_type: pa.DataType


@dataclass(frozen=True)
class WriteReceipt:
    """A shard the sink now holds durably."""

    shard_id: str
    rows: int
    bytes: int
    location: str
    storage_retries: dict[str, int] = field(default_factory=dict)
    """Transient storage errors retried while writing it, by operation (``{"part write": 2}``)."""


@dataclass(frozen=True)
class CommitReceipt:
    """The finished output of a run."""

    rows: int
    parts: int
    location: str
    extra: dict[str, Any] = field(default_factory=dict)


class Sink(abc.ABC):
    """A destination for embedded shards."""

    name: str = "sink"

    @abc.abstractmethod
    def start(self, info: SinkStartInfo) -> None:
        """Prepare the destination (create the folder, the collection...). Called once per sink object."""

    @abc.abstractmethod
    def write(self, shard_id: str, table: pa.Table) -> WriteReceipt:
        """Store one shard durably; writing the same shard again replaces it (never duplicates rows)."""

    @abc.abstractmethod
    def commit(self, shard_ids: Sequence[str], receipts: Iterable[WriteReceipt] = (), *,
               expected_rows: int | None = None) -> CommitReceipt:
        """Finish a complete run whose plan is exactly ``shard_ids``. ``receipts`` are write receipts of other
        sink objects of the same output (a sink may use them instead of asking the destination)."""

    def abort(self) -> None:  # noqa: B027 - optional hook: most sinks have nothing to undo
        """The run failed or was interrupted: release resources. Durably written shards are kept."""

    keeps_rows_between_runs: bool = False
    """True when rows written by earlier runs stay without being written again (a Milvus collection); False
    when each version must be written whole (Parquet parts). An incremental run sends such a sink only the rows
    it embedded, and tells it the ids to delete."""

    def delete_ids(self, ids: pa.Array) -> int:
        """Remove rows by id (an incremental run's deleted rows); the number asked to delete."""
        return 0


def stored_columns(table: pa.Table, *, store_text: bool) -> pa.Table:
    """``table`` as a sink stores it: the embedded ``text`` only when the sink was asked to store it."""
    if not store_text and "text" in table.column_names:
        return table.drop_columns(["text"])
    return table


def check_vector_column(table: pa.Table, dimensions: int) -> None:
    """``SinkError`` unless ``table`` has a ``vector`` column of ``fixed_size_list<float32>[dimensions]``
    without nulls, and an ``id`` column."""
    names = table.column_names
    if "id" not in names:
        raise SinkError(f"the table has no 'id' column (columns: {', '.join(names)})")
    if "vector" not in names:
        raise SinkError(f"the table has no 'vector' column (columns: {', '.join(names)})")
    vtype = table.schema.field("vector").type
    if not (pa.types.is_fixed_size_list(vtype) and vtype.list_size == dimensions
            and vtype.value_type == pa.float32()):
        raise SinkError(f"column 'vector' must be fixed_size_list<float32>[{dimensions}], got {vtype}")
    if table.column("vector").null_count:
        raise SinkError(f"column 'vector' has {table.column('vector').null_count} null vectors")
