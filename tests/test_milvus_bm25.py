"""BM25 in the Milvus sink, on a real Milvus Lite in this process: the collection ``bm25 = true`` creates (analysed
text, BM25 function, sparse field and index), upserts that leave the sparse field to Milvus (fast and public
paths), the refusals of existing collections that cannot do what the job asks, and hybrid search (dense + BM25,
RRF), grouped by document or not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
from pymilvus import DataType
from test_milvus_sink import DIM, info, milvus_sink, table

from embedder.config import MilvusSinkConfig
from embedder.errors import SinkError
from embedder.sinks.base import SinkStartInfo
from embedder.sinks.milvus import MilvusSink, connect, disconnect
from embedder.sinks.milvus_search import search

WORDS = ["river", "stone", "cloud", "paper", "lamp", "garden", "window", "bridge"]
RARE = "quetzalcoatl zymurgy"
"""Words of one row only: BM25 finds that row whatever the dense vectors say."""


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "lite" / "vectors.db")


def texts(n: int, rare_row: int | None = None) -> list[str]:
    rng = np.random.default_rng(7)
    out = [" ".join(rng.choice(WORDS, size=12)) for _ in range(n)]
    if rare_row is not None:
        out[rare_row] += f" {RARE}"
    return out


def rows(n: int, *, rare_row: int | None = None, doc_of: Callable[[int], str] | None = None) -> pa.Table:
    """``n`` rows (``id``, ``vector``, ``title``, ``text``; ``doc_id`` with ``doc_of``)."""
    base = table(0, n).select(["id", "vector", "title"]).append_column("text", pa.array(texts(n, rare_row)))
    return base.append_column("doc_id", pa.array([doc_of(i) for i in range(n)])) if doc_of else base


def start_info(*, documents: bool = False) -> SinkStartInfo:
    base = info(columns=("title",))
    if documents:
        return replace(base, passthrough_schema=base.passthrough_schema.append(pa.field("doc_id", pa.string())))
    return base


def hybrid_sink(db: str, **fields: object) -> MilvusSink:
    return milvus_sink(db, collection="docs", store_text=True, bm25=True, index_type="FLAT", **fields)


def describe(db: str) -> dict:
    client = connect(db)
    try:
        described = client.describe_collection("docs")
        described["indexes"] = {name: client.describe_index("docs", name) for name in client.list_indexes("docs")}
        return described
    finally:
        disconnect(client, db)


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_bm25_collection_is_made_and_filled_by_milvus(db, fast_path):
    sink = hybrid_sink(db, sparse_field="terms", fast_path=fast_path)
    sink.start(start_info())
    sink.write("s1", rows(40, rare_row=17))
    assert sink.commit(["s1"]).extra["count"] == 40
    described = describe(db)
    fields = {f["name"]: f for f in described["fields"]}
    assert fields["text"]["type"] == DataType.VARCHAR and fields["text"]["params"]["enable_analyzer"] in (True, "true")
    assert fields["terms"]["type"] == DataType.SPARSE_FLOAT_VECTOR and fields["terms"].get("is_function_output")
    [function] = described["functions"]
    assert (function["input_field_names"], function["output_field_names"]) == (["text"], ["terms"])
    sparse_index = described["indexes"]["terms"]
    assert (sparse_index["index_type"], sparse_index["metric_type"]) == ("SPARSE_INVERTED_INDEX", "BM25")

    client = connect(db)
    try:  # the sparse field was never sent: Milvus computed it from the text on upsert
        client.load_collection("docs")
        hits = client.search("docs", data=[RARE], anns_field="terms", limit=5, search_params={"metric_type": "BM25"})
        assert [hit["id"] for hit in hits[0]] == ["doc-00017"]
    finally:
        disconnect(client, db)


def make_collection(db: str, *, text: bool, analyzer: bool = False) -> None:
    """``docs`` as another tool (or a job without bm25) made it: id, vector, title, perhaps text; no BM25."""
    client = connect(db)
    try:
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
        schema.add_field("title", DataType.VARCHAR, max_length=65_535, nullable=True)
        if text:
            schema.add_field("text", DataType.VARCHAR, max_length=65_535, nullable=True, enable_analyzer=analyzer)
        client.create_collection("docs", schema=schema)
    finally:
        disconnect(client, db)


@pytest.mark.parametrize(("text", "analyzer", "found"), [
    (False, False, "no such field, and no 'text' field to compute it from"),
    (True, False, "no such field, and its 'text' field has no analyzer"),  # a job with store_text, without bm25
    (True, True, "no such field"),
])
def test_an_existing_collection_without_bm25_is_refused(db, text, analyzer, found):
    make_collection(db, text=text, analyzer=analyzer)
    sink = hybrid_sink(db)
    with pytest.raises(SinkError) as refused:
        sink.start(start_info())
    sink.close()
    assert f"Milvus collection 'docs' at {db} has no BM25 field 'sparse' ({found}), which bm25 = true needs. " \
           in str(refused.value)
    assert "Milvus cannot add a BM25 function or an analyzer to an existing collection. Nothing was written; drop " \
           "the collection, set another sink collection name, or set bm25 = false" in str(refused.value)
    assert "functions" not in describe(db) or not describe(db)["functions"]  # left as it was


def test_a_bm25_collection_refuses_a_job_that_does_not_store_the_text(db):
    sink = hybrid_sink(db)
    sink.start(start_info())
    sink.close()
    plain = milvus_sink(db, collection="docs", index_type="FLAT")
    with pytest.raises(SinkError, match="computes BM25 from its 'text' field, and this job does not store the text"):
        plain.start(start_info())
    plain.close()
    with_text = milvus_sink(db, collection="docs", index_type="FLAT", store_text=True)  # text, BM25 by Milvus
    with_text.start(start_info())
    with_text.close()


def test_hybrid_search_puts_the_row_with_the_rare_words_first(db):
    sink = hybrid_sink(db)
    sink.start(start_info(documents=True))
    sink.write("s1", rows(60, rare_row=33, doc_of=lambda i: f"d{i // 4}"))  # 15 documents of 4 chunks
    sink.commit(["s1"])
    config = MilvusSinkConfig(uri=db, collection="docs", store_text=True, bm25=True)
    query = rows(1).column("vector")[0].as_py()  # the nearest vector is row 0's, not row 33's
    dense = search(config, query, top_k=3)
    assert dense[0]["id"] == "doc-00000"
    hybrid = search(config, query, top_k=3, hybrid_text=RARE)
    assert hybrid[0]["id"] == "doc-00033" and RARE in hybrid[0]["fields"]["text"]
    assert hybrid[0]["fields"]["doc_id"] == "d8"
    assert hybrid[0]["score"] > hybrid[1]["score"]  # in both lists, so ahead of anything in only one
    grouped = search(config, query, top_k=10, hybrid_text=RARE, group_by_doc=True)
    docs = [hit["fields"]["doc_id"] for hit in grouped]
    assert docs[0] == "d8" and len(docs) == len(set(docs)) == 10
    everything = search(config, query, top_k=15, group_by_doc=True)
    assert sorted(hit["fields"]["doc_id"] for hit in everything) == sorted(f"d{i}" for i in range(15))


def test_hybrid_search_of_a_collection_without_bm25_is_refused_before_embedding(db):
    make_collection(db, text=True)
    called = []
    with pytest.raises(SinkError, match=r"collection 'docs' has no BM25 field, so --hybrid has nothing to fuse: "
                                        r"run the job into a new collection with store_text = true and bm25 = true"):
        search(MilvusSinkConfig(uri=db, collection="docs"), lambda: called.append(1) or [0.0] * DIM, top_k=3,
               hybrid_text="anything")
    assert called == []  # the query was never embedded
