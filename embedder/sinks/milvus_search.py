"""Searching a job's Milvus collection: the nearest chunks to a query vector, or the best chunk per document.

Shown with each hit: the fields the collection has among the passthrough columns, the document fields
(``doc_id``, ``chunk_index``, ``chunk_start``, ``chunk_end``) and the stored ``text``. Milvus Lite lets one process
open a database, so this fails with a clear message while a job writes to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from embedder.config import MilvusSinkConfig
from embedder.errors import SinkError
from embedder.sinks.milvus import connect, describe_error, disconnect

DOCUMENT_FIELDS = ("doc_id", "chunk_index", "chunk_start", "chunk_end", "text")
"""Fields of a collection of chunks, shown with every hit when the collection has them."""


def search(sink: MilvusSinkConfig, vector: list[float], *, top_k: int, fields: Sequence[str] = (), expr: str = "",
           group_by_doc: bool = False) -> list[dict[str, Any]]:
    """The ``top_k`` nearest rows (``group_by_doc``: documents, each with its best chunk) as ``rank``, ``id``,
    ``score`` and ``fields``."""
    client = connect(sink.uri, db_name=sink.db_name, token_env=sink.token_env)  # no waiting: say it is in use
    where = f"Milvus collection '{sink.collection}'"
    try:
        if not client.has_collection(sink.collection):
            raise SinkError(f"{where} does not exist yet: run the job first")
        present = {f["name"] for f in client.describe_collection(sink.collection)["fields"]}
        if group_by_doc and "doc_id" not in present:
            raise SinkError(f"{where} has no doc_id field (the job did not chunk documents): nothing to group by")
        output = [name for name in dict.fromkeys([*DOCUMENT_FIELDS, *fields]) if name in present]
        grouping = {"group_by_field": "doc_id", "group_size": 1} if group_by_doc else {}
        client.load_collection(sink.collection)
        results = client.search(sink.collection, data=[vector], limit=top_k, anns_field=sink.vector_field,
                                filter=expr, output_fields=output or [sink.id_field],
                                search_params={"metric_type": sink.metric}, consistency_level="Strong", **grouping)
    except SinkError:
        raise
    except Exception as exc:  # pymilvus errors become one clear message (a bad --filter, a missing index...)
        raise SinkError(f"searching {where} failed: {describe_error(exc)}") from None
    finally:
        disconnect(client, sink.uri)
    # a hit is keyed by the primary field's name
    return [{"rank": rank, "id": hit[sink.id_field], "score": float(hit["distance"]),
             "fields": {name: hit["entity"].get(name) for name in output}}
            for rank, hit in enumerate(results[0] if results else [], start=1)]
