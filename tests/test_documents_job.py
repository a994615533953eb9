"""Documents, not rows, end to end: chunking and late chunking through the CLI against the local server, into
Parquet and Milvus Lite; the same vectors however the run goes; incremental runs by document; pre-chunked input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from faulttools import milvus_dump
from jobtools import done_ids, interrupt_mid_run, run_cli

from embedder.cli.sample_corpus import generate_documents
from embedder.jina.windows import plan_document
from embedder.mock_jina.tokens import count_tokens
from embedder.mock_jina.vectors import embed_texts
from embedder.sinks.parquet import read_manifest_dataset
from embedder.testing import MODEL, job_tables, sink_table, write_job

pytestmark = [pytest.mark.slow, pytest.mark.ray]

DIM, MAX_TOKENS, CHARS_PER_TOKEN = 32, 512, 4.0
WINDOW = int(8192 * 0.8)  # embedding.window_tokens = 0: 80% of v3's cut
OVERLAP_CHUNKS = 2


def documents_job(path: Path, corpus: Path, out: Path, *, shard_rows: int, workers: int,
                  sinks: tuple[str, ...] = ("parquet", "milvus"), **source: object) -> Path:
    tables = job_tables(corpus, dimensions=DIM, shard_rows=shard_rows, workers=workers,
                        embedding={"late_chunking": True}, source_extra=source)
    chunking = None if "document_column" in source else {"max_tokens": MAX_TOKENS}  # pre-chunked: no [chunking]
    return write_job(path, **tables, checkpoint={"path": out / "_checkpoint"}, chunking=chunking,
                     sinks=[sink_table(sink, out) for sink in sinks])


def output(out: Path) -> pa.Table:
    return read_manifest_dataset(str(out / "parquet")).to_table().sort_by("id")


def window_vectors(texts: list[str]) -> np.ndarray:
    """What the server returns for each chunk of a document: a late-chunked request of the whole document when it
    fits, else of the window the job's rule picks for the chunk."""
    plan = plan_document([len(t) for t in texts], chars_per_token=CHARS_PER_TOKEN, budget=WINDOW,
                         overlap=OVERLAP_CHUNKS, max_inputs=2048)
    vectors = np.zeros((len(texts), DIM), dtype=np.float32)
    for chunk, position in enumerate(plan.picks):
        start, end = next((s, e) for s, e in plan.groups if s <= position < e)
        window = [texts[i] for i in plan.order[start:end]]
        vectors[chunk] = embed_texts(MODEL, window, DIM, late_chunking=True)[position - start]
    return vectors


def assert_chunks_and_vectors(table: pa.Table, corpus: pa.Table) -> None:
    """Each document's chunks cover its text in order (only whitespace between them), stay within 1.5 x
    max_tokens by the server's count, and carry the server's late-chunked vectors."""
    texts = dict(zip(corpus["id"].to_pylist(), corpus["text"].to_pylist(), strict=True))
    rows = table.sort_by([("doc_id", "ascending"), ("chunk_index", "ascending")])
    by_doc: dict[str, list[dict]] = {}
    for row in rows.select(["doc_id", "chunk_index", "chunk_start", "chunk_end", "vector"]).to_pylist():
        by_doc.setdefault(row["doc_id"], []).append(row)
    assert by_doc.keys() == texts.keys()
    for doc, chunks in by_doc.items():
        text = texts[doc]
        assert [c["chunk_index"] for c in chunks] == list(range(len(chunks)))
        pieces = [text[c["chunk_start"]:c["chunk_end"]] for c in chunks]
        position = 0
        for chunk, piece in zip(chunks, pieces, strict=True):
            assert text[position:chunk["chunk_start"]].strip() == "", f"{doc}: text between chunks dropped"
            assert count_tokens(piece) <= 1.5 * MAX_TOKENS
            position = chunk["chunk_end"]
        assert text[position:].strip() == ""
        got = np.asarray([c["vector"] for c in chunks], dtype=np.float32)
        np.testing.assert_array_equal(got, window_vectors(pieces), err_msg=f"vectors of {doc}")


def test_late_chunked_vectors_do_not_depend_on_how_the_run_went(tmp_path, jina, env):
    """150 documents of 300 to 30,000 tokens, chunked and late-chunked: (3 rows a shard, 4 workers, SIGKILLed at
    ~40% and rerun) and (one shard, one worker, clean) write bit-identical chunks, into Parquet and Milvus Lite."""
    corpus = generate_documents(150, min_tokens=340, max_tokens=33_000)
    tokens = [count_tokens(text) for text in corpus["text"].to_pylist()]
    assert min(tokens) >= 300 and max(tokens) <= 30_000 and max(tokens) > 2 * 8192
    (tmp_path / "corpus").mkdir()
    pq.write_table(corpus, tmp_path / "corpus" / "docs.parquet", row_group_size=3)  # 50 shards of 3 rows

    chopped = documents_job(tmp_path / "a.toml", tmp_path / "corpus", tmp_path / "a", shard_rows=3, workers=4)
    killed = interrupt_mid_run(chopped, str(tmp_path / "a" / "_checkpoint"), lambda run: run.kill(), env=env,
                               what="the kill", markers=20, total_shards=50)
    assert killed.returncode != 0
    finished = run_cli(chopped, env=env)
    assert finished.returncode == 0, finished.describe()
    assert len(done_ids(str(tmp_path / "a" / "_checkpoint"))) == 50

    whole = documents_job(tmp_path / "b.toml", tmp_path / "corpus", tmp_path / "b", shard_rows=200, workers=1)
    clean = run_cli(whole, env=env)
    assert clean.returncode == 0, clean.describe()
    assert jina.stats()["late_chunking_over_cut"] == 0  # no request ever went past the API's cut

    a, b = output(tmp_path / "a"), output(tmp_path / "b")
    assert a.num_rows > 1000 and a.equals(b)  # bit-identical, offsets and vectors alike
    assert_chunks_and_vectors(b, corpus)
    for out in ("a", "b"):  # Milvus holds the same chunks with the same vectors
        ids, vectors, count = milvus_dump(tmp_path / out / "milvus.db")
        assert count == b.num_rows and sorted(ids) == b["id"].to_pylist()
        order = np.argsort(ids)
        np.testing.assert_array_equal(vectors[order], b["vector"].combine_chunks().flatten().to_numpy()
                                      .reshape(-1, DIM))


def edit_corpus(corpus: pa.Table) -> tuple[pa.Table, set[str], list[str]]:
    """5 documents edited (two get fewer chunks, two more, one the same number), 3 deleted, 2 added."""
    rows = corpus.to_pylist()
    edited = [2, 7, 11, 23, 31]
    for i in edited[:2]:
        rows[i]["text"] = rows[i]["text"][: len(rows[i]["text"]) // 3]
    for i in edited[2:4]:
        rows[i]["text"] = rows[i]["text"] + "\n\n" + rows[i]["text"]
    rows[edited[4]]["text"] = rows[edited[4]]["text"].replace(" the ", " THE ")
    added = generate_documents(2, start=1000, max_tokens=8000).to_pylist()
    kept = [row for i, row in enumerate(rows) if i not in (5, 17, 29)] + added
    return pa.Table.from_pylist(kept, schema=corpus.schema), {rows[i]["id"] for i in edited}, \
        [row["id"] for row in added]


def test_incremental_runs_replace_documents_whole(tmp_path, jina, env):
    corpus = generate_documents(40, max_tokens=12_000)
    source = tmp_path / "corpus"
    source.mkdir()
    pq.write_table(corpus, source / "docs.parquet")
    job = documents_job(tmp_path / "job.toml", source, tmp_path / "out", shard_rows=10, workers=2)
    assert run_cli(job, env=env).returncode == 0
    changed, edited, added = edit_corpus(corpus)
    pq.write_table(changed, source / "docs.parquet")
    jina.reset()
    incremental = run_cli(job, "--incremental", env=env)
    assert incremental.returncode == 0, incremental.describe()
    billed = jina.stats()["tokens"]
    shutil.copytree(source, tmp_path / "fresh-corpus")
    fresh_job = documents_job(tmp_path / "fresh.toml", tmp_path / "fresh-corpus", tmp_path / "fresh",
                              shard_rows=10, workers=2)
    assert run_cli(fresh_job, env=env).returncode == 0

    fresh = output(tmp_path / "fresh")
    assert output(tmp_path / "out").equals(fresh)  # no stale chunk left, the same vectors
    ids, vectors, count = milvus_dump(tmp_path / "out" / "milvus.db")
    fresh_ids, fresh_vectors, _ = milvus_dump(tmp_path / "fresh" / "milvus.db")
    assert count == fresh.num_rows and sorted(ids) == sorted(fresh_ids)
    np.testing.assert_array_equal(vectors[np.argsort(ids)], fresh_vectors[np.argsort(fresh_ids)])
    texts = dict(zip(changed["id"].to_pylist(), changed["text"].to_pylist(), strict=True))
    changed_tokens = sum(count_tokens(texts[doc]) for doc in [*edited, *added])
    assert billed <= 1.3 * changed_tokens, (billed, changed_tokens)
    report = json.loads((tmp_path / "out" / "_checkpoint" / "run_report.json").read_text())
    assert {k: report["incremental"][k] for k in ("new", "changed", "deleted")} == \
        {"new": 2, "changed": 5, "deleted": 3}


def prechunked(corpus: pa.Table) -> pa.Table:
    """The documents as rows of chunks (a row per chunk), each document's rows in a shuffled order."""
    from embedder.source.chunker import split_text

    rng = np.random.default_rng(5)
    rows = []
    for document in corpus.to_pylist():
        spans = split_text(document["text"], int(MAX_TOKENS * CHARS_PER_TOKEN))
        for k in rng.permutation(len(spans)).tolist():
            start, end = spans[k]
            rows.append({"chunk_id": f"{document['id']}/{k}", "doc": document["id"], "position": k,
                         "text": document["text"][start:end]})
    return pa.Table.from_pylist(rows)


def test_prechunked_input_is_late_chunked_by_document(tmp_path, jina, env):
    corpus = generate_documents(30, max_tokens=20_000)
    chunks = prechunked(corpus)
    (tmp_path / "corpus").mkdir()
    pq.write_table(chunks, tmp_path / "corpus" / "chunks.parquet", row_group_size=7)
    job = documents_job(tmp_path / "job.toml", tmp_path / "corpus", tmp_path / "out", shard_rows=13, workers=2,
                        sinks=("parquet",), id_column="chunk_id", document_column="doc",
                        chunk_order_column="position", passthrough=[])
    result = run_cli(job, env=env)
    assert result.returncode == 0, result.describe()
    table = output(tmp_path / "out")
    assert table.num_rows == chunks.num_rows and set(table["id"].to_pylist()) == set(chunks["chunk_id"].to_pylist())
    rows = table.sort_by([("doc_id", "ascending"), ("chunk_index", "ascending")]).to_pylist()
    texts = {row["chunk_id"]: row["text"] for row in chunks.to_pylist()}
    by_doc: dict[str, list[dict]] = {}
    for row in rows:
        by_doc.setdefault(row["doc_id"], []).append(row)
    for doc, members in by_doc.items():
        assert [m["id"] for m in members] == [f"{doc}/{k}" for k in range(len(members))]
        got = np.asarray([m["vector"] for m in members], dtype=np.float32)
        np.testing.assert_array_equal(got, window_vectors([texts[m["id"]] for m in members]))


def test_a_document_whose_rows_are_apart_is_refused_before_any_request(tmp_path, jina, env):
    rows = pa.table({"chunk_id": ["a/0", "a/1", "b/0", "a/2"], "doc": ["a", "a", "b", "a"],
                     "text": ["one.", "two.", "three.", "four."]})
    (tmp_path / "corpus").mkdir()
    pq.write_table(rows, tmp_path / "corpus" / "chunks.parquet")
    job = documents_job(tmp_path / "job.toml", tmp_path / "corpus", tmp_path / "out", shard_rows=2, workers=1,
                        sinks=("parquet",), id_column="chunk_id", document_column="doc", passthrough=[])
    result = run_cli(job, env=env)
    assert result.returncode == 2, result.describe()
    assert "document 'a' (column 'doc') is not contiguous" in result.stderr
    assert "chunks.parquet row 0 and again at" in result.stderr and "row 3" in result.stderr
    assert jina.stats()["requests"] == 0


def test_bad_documents_are_dead_lettered_by_name_and_the_rest_is_written(tmp_path, jina, env):
    corpus = generate_documents(6, max_tokens=3000)
    texts = corpus["text"].to_pylist()
    texts[1] = "   \n\n  "
    texts[4] = "word " * 40_000  # 200k characters: more chunks than allowed
    corpus = corpus.set_column(corpus.schema.get_field_index("text"), "text", pa.array(texts))
    (tmp_path / "corpus").mkdir()
    pq.write_table(corpus, tmp_path / "corpus" / "docs.parquet")
    tables = job_tables(tmp_path / "corpus", dimensions=DIM, shard_rows=3)
    job = write_job(tmp_path / "job.toml", **tables, chunking={"max_tokens": 128, "max_chunks_per_document": 50},
                    checkpoint={"path": tmp_path / "out" / "_checkpoint"},
                    sinks=[sink_table("parquet", tmp_path / "out")])
    result = run_cli(job, env=env)
    assert result.returncode == 0, result.describe()
    assert "2 failed documents" in result.stderr
    written = set(output(tmp_path / "out")["doc_id"].to_pylist())
    assert written == set(corpus["id"].to_pylist()) - {"doc-000001", "doc-000004"}
    dead = pq.read_table(tmp_path / "out" / "_checkpoint" / "_failed").sort_by("id").to_pylist()
    assert [d["id"] for d in dead] == ["doc-000001", "doc-000004"]  # once per document, not per chunk
    assert dead[0]["reason"] == "document 'doc-000001': text (text) is empty"
    assert "document 'doc-000004' yields" in dead[1]["reason"] and "max_chunks_per_document = 50" in dead[1]["reason"]


@pytest.mark.parametrize(("chunking", "fragment"), [
    ({"max_tokens": 9000}, "'chunking.max_tokens'"),
    ({"max_tokens": 100, "overlap_tokens": 100}, "'chunking.overlap_tokens'"),
])
def test_impossible_chunk_sizes_are_refused_naming_the_key(tmp_path, jina, env, chunking, fragment):
    (tmp_path / "corpus").mkdir()
    pq.write_table(generate_documents(2, max_tokens=500), tmp_path / "corpus" / "docs.parquet")
    job = write_job(tmp_path / "job.toml", **job_tables(tmp_path / "corpus", dimensions=DIM), chunking=chunking,
                    sink={"kind": "parquet", "path": tmp_path / "out"})
    result = run_cli(job, env=env)
    assert result.returncode == 2 and fragment in result.stderr, result.describe()
    assert jina.stats()["requests"] == 0 and not (tmp_path / "out").exists()
