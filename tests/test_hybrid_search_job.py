"""Hybrid search as users run it: ``embedder run`` (its own local Ray) chunks documents into a Milvus Lite collection
with ``store_text`` and ``bm25``, then ``embedder search`` in a subprocess. The local server's vectors are hashes of
the text, so a query's nearest vectors say nothing about its meaning: only BM25 can find the document that holds
the query's rare words. A collection made without BM25 is refused, by the job and by ``--hybrid``, before any
request to the API.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from jobtools import PYTHON, Result, corpus_rows, run_cli
from pymilvus import DataType

from embedder.sinks.milvus import connect, disconnect
from embedder.sinks.milvus_search import HYBRID_CANDIDATES
from embedder.testing import job_tables, write_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]

DOCS = 20
DIM = 64
RARE = "Quetzalcoatl zymurgy"
"""Words in one document only (a name and a rare word: what dense retrieval misses)."""
TARGET = 11
SEARCH_TIMEOUT_S = 120.0


def write_corpus(directory: Path) -> tuple[pa.Table, str]:
    """``DOCS`` documents of ~60 words; the rare words go into the middle of document ``TARGET``."""
    table = corpus_rows(DOCS, words_per_doc=60)
    texts = table.column("text").to_pylist()
    words = texts[TARGET].split()
    texts[TARGET] = " ".join([*words[:len(words) // 2], RARE, *words[len(words) // 2:]])
    table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts))
    directory.mkdir()
    pq.write_table(table, directory / "docs.parquet", row_group_size=5)
    return table, table.column("id")[TARGET].as_py()


def hybrid_job(path: Path, corpus: Path, **sink: object) -> Path:
    """Documents cut into chunks of ~24 tokens (several per document) into Milvus Lite ``docs`` with BM25."""
    milvus = {"kind": "milvus", "uri": "milvus/vectors.db", "collection": "docs", "index_type": "FLAT",
              "store_text": True, "bm25": True, **sink}
    return write_job(path, **job_tables(corpus, dimensions=DIM, passthrough=("title",)), chunking={"max_tokens": 24},
                     checkpoint={"path": "ledger"}, sinks=[milvus])


def search(job: Path, query: str, *args: str, env: Mapping[str, str]) -> Result:
    """``embedder search JOB QUERY ARGS`` in a subprocess, in the job's folder."""
    proc = subprocess.run([PYTHON, "-m", "embedder", "search", str(job), query, *args], env=dict(env),
                          cwd=job.parent, capture_output=True, text=True, timeout=SEARCH_TIMEOUT_S)
    return Result(proc.returncode, proc.stdout, proc.stderr, 0.0)


def hits_of(result: Result) -> list[dict]:
    assert result.returncode == 0, result.describe()
    hits = json.loads(result.stdout)
    assert isinstance(hits, list) and all({"id", "score", "fields"} <= set(hit) for hit in hits)
    return hits


def test_hybrid_search_finds_the_document_of_rare_words_and_groups_by_document(tmp_path, jina, env):
    corpus, target = write_corpus(tmp_path / "corpus")
    job = hybrid_job(tmp_path / "job.toml", tmp_path / "corpus")
    run = run_cli(job, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.describe()
    found = re.search(r"output milvus://docs: ([\d,]+) rows", run.output)
    chunks_stored = int(found.group(1).replace(",", "")) if found else 0
    # several chunks a document, and every chunk among the dense candidates: the fusion's order is then strict
    assert DOCS * 2 <= chunks_stored <= HYBRID_CANDIDATES, run.output[-2000:]

    requests = jina.stats()["requests"]
    hits = hits_of(search(job, RARE.lower(), "--hybrid", "--json", "--limit", "5", env=env))
    assert jina.stats()["requests"] == requests + 1  # the query, embedded once
    assert len(hits) == 5 and [hit["rank"] for hit in hits] == [1, 2, 3, 4, 5]
    first = hits[0]["fields"]
    assert first["doc_id"] == target and RARE in first["text"] and hits[0]["id"].startswith(f"{target}#")
    assert first["title"] == corpus.column("title")[TARGET].as_py()
    assert hits[0]["score"] > hits[1]["score"]

    chunks = hits_of(search(job, RARE, "--hybrid", "--json", "--limit", "30", env=env))
    docs = [hit["fields"]["doc_id"] for hit in chunks]
    assert len(chunks) == 30 and len(set(docs)) < 30  # several chunks per document
    grouped = hits_of(search(job, RARE, "--hybrid", "--group-by-doc", "--json", "--limit", "30", env=env))
    docs = [hit["fields"]["doc_id"] for hit in grouped]
    assert docs[0] == target and len(docs) == len(set(docs)) == DOCS  # one hit per document, each document
    assert set(docs) == set(corpus.column("id").to_pylist())

    text = search(job, RARE, "--hybrid", "-k", "2", env=env)  # the table for people
    assert text.returncode == 0, text.describe()
    assert "RRF" in text.stdout and f"doc_id: {target}" in text.stdout


def test_a_collection_without_bm25_is_refused_before_any_request(tmp_path, jina, env):
    write_corpus(tmp_path / "corpus")
    db = tmp_path / "milvus" / "vectors.db"
    client = connect(str(db))
    try:  # the collection a job with store_text but without bm25 makes: text without analyzer, no BM25 function
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
        schema.add_field("text", DataType.VARCHAR, max_length=65_535, nullable=True)
        client.create_collection("docs", schema=schema)
    finally:
        disconnect(client, str(db))
    job = hybrid_job(tmp_path / "job.toml", tmp_path / "corpus")

    run = run_cli(job, env=env, cwd=tmp_path)
    assert run.returncode != 0
    assert (f"Milvus collection 'docs' at {db} has no BM25 field 'sparse' (no such field, and its 'text' field has "
            "no analyzer), which bm25 = true needs") in run.output
    assert "drop the collection, set another sink collection name, or set bm25 = false" in run.output
    assert jina.stats()["requests"] == 0
    assert not (tmp_path / "ledger" / "done").is_dir() or not list((tmp_path / "ledger" / "done").iterdir())

    refused = search(job, RARE, "--hybrid", "--json", env=env)
    assert refused.returncode == 2, refused.describe()
    assert "Milvus collection 'docs' has no BM25 field, so --hybrid has nothing to fuse" in refused.stderr
    assert refused.stdout == "" and jina.stats()["requests"] == 0
