"""One shard to every sink of a job, and one commit to all of them."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from embedder.sinks.base import CommitReceipt, Sink, WriteReceipt


def write_to_sinks(sinks: Sequence[Sink], shard_id: str, table: pa.Table) -> list[WriteReceipt]:
    """Every sink gets the shard (receipts in sink order); one that keeps earlier rows gets only those this run
    embedded (``_copied`` marks the rows an incremental run took over unchanged from the previous version)."""
    copied = table.column("_copied") if "_copied" in table.column_names else None
    whole = table.drop_columns(["_copied"]) if copied is not None else table
    receipts = []
    for sink in sinks:
        part = whole.filter(pc.invert(copied)) if copied is not None and sink.keeps_rows_between_runs else whole
        receipts.append(sink.write(shard_id, part))
    return receipts


def commit_sinks(sinks: Sequence[Sink], shard_ids: Sequence[str], expected_rows: int | None,
                 deleted_ids: pa.Array | None, receipts: Sequence[Sequence[WriteReceipt]] = ()) -> list[CommitReceipt]:
    """Delete an incremental run's vanished ids, then commit each sink with the write receipts it gave (per sink,
    in sink order: a sink actor restarted during the run has forgotten what it wrote)."""
    if deleted_ids is not None and len(deleted_ids):
        for sink in sinks:
            sink.delete_ids(deleted_ids)
    given = list(receipts) or [()] * len(sinks)
    return [sink.commit(shard_ids, mine, expected_rows=expected_rows) for sink, mine in zip(sinks, given, strict=True)]
