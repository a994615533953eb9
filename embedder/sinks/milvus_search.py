"""Searching a job's Milvus collection: the nearest chunks to a query vector, or the best chunk per document;
with ``hybrid``, dense and BM25 full-text results fused by reciprocal rank (RRF).

Shown with each hit: the fields the collection has among the passthrough columns, the document fields
(``doc_id``, ``chunk_index``, ``chunk_start``, ``chunk_end``) and the stored ``text``. Milvus Lite lets one process
open a database, so this fails with a clear message while a job writes to it.

The query vector may be given as a function: it is called only once the collection has been checked, so a
missing collection or one without BM25 costs no embedding request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pymilvus import AnnSearchRequest, RRFRanker

from embedder.config import MilvusSinkConfig
from embedder.errors import SinkError
from embedder.sinks.milvus import connect, describe_error, disconnect
from embedder.sinks.milvus_bm25 import bm25_output

DOCUMENT_FIELDS = ("doc_id", "chunk_index", "chunk_start", "chunk_end", "text")
"""Fields of a collection of chunks, shown with every hit when the collection has them."""
RRF_K = 60
"""RRF's smoothing constant: a hit's score is the sum over the lists it is in of 1 / (60 + its rank there)."""
HYBRID_CANDIDATES = 100
"""Each list of a hybrid search brings at least this many candidates (or 10x the hits asked for) to the fusion."""
MAX_TOP_K = 16_384
"""Milvus' largest ``limit`` of one search."""

Vector = Sequence[float]


def search(sink: MilvusSinkConfig, vector: Vector | Callable[[], Vector], *, top_k: int, fields: Sequence[str] = (),
           expr: str = "", group_by_doc: bool = False, hybrid_text: str | None = None) -> list[dict[str, Any]]:
    """The ``top_k`` nearest rows (``group_by_doc``: documents, each with its best chunk) as ``rank``, ``id``,
    ``score`` and ``fields``. ``hybrid_text``: also search it with BM25 and fuse both lists with RRF."""
    client = connect(sink.uri, db_name=sink.db_name, token_env=sink.token_env)  # no waiting: say it is in use
    where = f"Milvus collection '{sink.collection}'"
    try:
        if not client.has_collection(sink.collection):
            raise SinkError(f"{where} does not exist yet: run the job first")
        described = client.describe_collection(sink.collection)
        present = {f["name"] for f in described["fields"]}
        if group_by_doc and "doc_id" not in present:
            raise SinkError(f"{where} has no doc_id field (the job did not chunk documents): nothing to group by")
        sparse = bm25_output(described)
        if hybrid_text is not None and sparse is None:
            raise SinkError(f"{where} has no BM25 field, so --hybrid has nothing to fuse: run the job into a new "
                            "collection with store_text = true and bm25 = true, or search without --hybrid")
        output = [name for name in dict.fromkeys([*DOCUMENT_FIELDS, *fields]) if name in present]
        common: dict[str, Any] = {"limit": top_k, "output_fields": output or [sink.id_field],
                                  "consistency_level": "Strong"}
        if group_by_doc:
            common.update(group_by_field="doc_id", group_size=1)
        query = list(vector() if callable(vector) else vector)  # embedded only now that the collection is fine
        client.load_collection(sink.collection)
        if hybrid_text is not None and sparse is not None:
            results = client.hybrid_search(sink.collection, _requests(sink, query, hybrid_text, sparse, top_k, expr),
                                           RRFRanker(RRF_K), **common)
        else:
            results = client.search(sink.collection, data=[query], anns_field=sink.vector_field, filter=expr,
                                    search_params={"metric_type": sink.metric}, **common)
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


def _requests(sink: MilvusSinkConfig, vector: list[float], text: str, sparse: str, top_k: int,
              expr: str) -> list[Any]:
    """The two lists to fuse: nearest vectors, and BM25 over the stored text (Milvus analyses the raw query)."""
    candidates = min(MAX_TOP_K, max(HYBRID_CANDIDATES, 10 * top_k))
    return [AnnSearchRequest(data=[vector], anns_field=sink.vector_field, param={"metric_type": sink.metric},
                             limit=candidates, expr=expr or None),
            AnnSearchRequest(data=[text], anns_field=sparse, param={"metric_type": "BM25"}, limit=candidates,
                             expr=expr or None)]
