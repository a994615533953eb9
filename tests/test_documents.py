"""Documents and chunks: the splitter's offsets, chunk ids, pre-chunked input owned by the shard a document starts
in, and the whole-input check that a document's rows are together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from embedder.cli.sample_corpus import generate_documents
from embedder.config import parse_job
from embedder.errors import ConfigError, InputError
from embedder.source.checks import check_input
from embedder.source.chunker import split_text
from embedder.source.documents import build_documents
from embedder.source.files import discover_files
from embedder.source.reader import read_shard
from embedder.source.shards import plan_shards


def job(**sections: dict) -> object:
    return parse_job({"sink": {"path": "out"}, **sections})


def rows_of(table: pa.Table) -> pa.Table:
    return table.append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))


# --- chunking ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("max_chars", "overlap"), [(2000, 0), (2000, 200), (300, 0), (80, 20)])
def test_chunks_are_exact_ranges_that_cover_the_text_in_order(max_chars, overlap):
    texts = generate_documents(20, max_tokens=6000)["text"].to_pylist()
    texts.append("Ünïcödé wörds, emoji 🚀🎉 and 中文字符 together.\n\n" * 40)
    for text in texts:
        spans = split_text(text, max_chars, overlap)
        position = 0
        for start, end in spans:
            assert 0 <= start < end <= len(text) and end - start <= max_chars
            assert text[start:end] == text[start:end].strip()  # no leading or trailing whitespace
            if start >= position:  # between two chunks: whitespace only
                assert text[position:start].strip() == ""
            else:  # overlap: never more than asked
                assert position - start <= overlap
            position = max(position, end)
        assert text[position:].strip() == ""
        assert spans == split_text(text, max_chars, overlap)  # the same text, the same chunks


def test_a_chunked_document_has_ids_offsets_and_its_hash():
    config = job(source={"path": "x", "passthrough": ["title"]}, chunking={"max_tokens": 50})
    table = generate_documents(3, max_tokens=800).select(["id", "text", "title"])
    documents = build_documents(rows_of(table), config)
    assert documents.count == 3 and not documents.failures
    for d, (start, end) in enumerate(documents.ranges()):
        text = table["text"][d].as_py()
        assert end - start >= 2
        assert documents.ids[start:end].to_pylist() == [f"doc-{d:06d}#{k}" for k in range(end - start)]
        assert documents.chunk_index[start:end].tolist() == list(range(end - start))
        for i in range(start, end):
            assert documents.texts[i] == text[documents.chunk_start[i]:documents.chunk_end[i]]
            assert documents.chunk_rows[i] == d
        assert documents.hashes[d] == text


def test_empty_documents_and_documents_with_too_many_chunks_are_refused_by_name():
    config = job(source={"path": "x"}, chunking={"max_tokens": 10, "max_chunks_per_document": 3})
    table = pa.table({"id": ["a", "b", "c", "d"], "text": ["short text.", "  \n ", None, "word " * 200]})
    documents = build_documents(rows_of(table), config)
    failures = {f.document: f for f in documents.failures}
    assert sorted(failures) == [1, 2, 3]
    assert failures[1].reason == "document 'b': text (text) is empty" and failures[1].error_class == "EmptyText"
    assert "document 'd' yields" in failures[3].reason and "max_chunks_per_document = 3" in failures[3].reason
    assert documents.chunk_doc.tolist() == [0]  # only a's chunk is sent


@pytest.mark.parametrize(("chunking", "embedding", "key", "fragment"), [
    ({"max_tokens": 9000}, {}, "chunking.max_tokens", "takes at most 8,192 tokens per input"),
    ({"max_tokens": 100, "overlap_tokens": 100}, {}, "chunking.overlap_tokens", "must be less than"),
    ({"max_tokens": 7000}, {"late_chunking": True}, "chunking.max_tokens", "must fit one request window"),
    ({"max_tokens": 100}, {"late_chunking": True, "window_tokens": 9000}, "embedding.window_tokens", "8,192"),
])
def test_chunking_settings_that_cannot_work_are_refused_naming_the_key(chunking, embedding, key, fragment):
    with pytest.raises(ConfigError, match=rf"'{key}'.*{fragment}"):
        job(source={"path": "x"}, chunking=chunking, embedding=embedding)


def test_prechunked_and_chunking_do_not_mix():
    with pytest.raises(ConfigError, match=r"source\.document_column"):
        job(source={"path": "x", "document_column": "doc"}, chunking={"max_tokens": 100})
    with pytest.raises(ConfigError, match=r"source\.chunk_order_column"):
        job(source={"path": "x", "chunk_order_column": "k"})


# --- pre-chunked input ---------------------------------------------------------------------------------------

def prechunked(documents: int = 12, seed: int = 3) -> pa.Table:
    """Rows of chunks: documents of 1-9 chunks, contiguous, each document's rows shuffled (``k`` orders them)."""
    rng = np.random.default_rng(seed)
    ids, docs, order, texts = [], [], [], []
    for d in range(documents):
        count = int(rng.integers(1, 10))
        for k in rng.permutation(count).tolist():
            ids.append(f"d{d}-c{k}")
            docs.append(f"d{d}")
            order.append(k)
            texts.append(f"chunk {k} of document {d}.")
    return pa.table({"id": ids, "doc": docs, "k": order, "text": texts})


WRITERS = {
    "parquet": lambda t, p: pq.write_table(t, p, row_group_size=4),
    "arrow": lambda t, p: feather.write_feather(t, p, chunksize=4),
    "jsonl": lambda t, p: Path(p).write_text("".join(json.dumps(r) + "\n" for r in t.to_pylist())),
    "csv": lambda t, p: pcsv.write_csv(t, p),
}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("shard_rows", [1, 3, 5, 200])
def test_each_document_belongs_to_the_shard_it_starts_in(tmp_path, fmt, shard_rows):
    table = prechunked()
    WRITERS[fmt](table, str(tmp_path / f"c.{fmt}"))
    source = {"path": str(tmp_path), "document_column": "doc", "chunk_order_column": "k", "shard_rows": shard_rows}
    config = job(source=source)
    shards = plan_shards(discover_files(str(tmp_path)), shard_rows)
    read = [read_shard(shard, config.source) for shard in shards]
    ids = [row_id for part in read for row_id in part["id"].to_pylist()]
    assert ids == table["id"].to_pylist()  # every row once, in order
    seen: set[str] = set()
    for part in read:
        documents = build_documents(part, config)
        assert not documents.failures
        assert not set(documents.doc_ids.to_pylist()) & seen  # a document in one shard only
        seen |= set(documents.doc_ids.to_pylist())
        for d, (start, end) in enumerate(documents.ranges()):
            name = documents.doc_ids[d].as_py()
            assert documents.ids[start:end].to_pylist() == [f"{name}-c{k}" for k in range(end - start)]
            assert documents.chunk_index[start:end].tolist() == list(range(end - start))
    assert seen == set(table["doc"].to_pylist())


def test_a_document_whose_rows_are_apart_is_refused_naming_it_and_both_places(tmp_path):
    table = pa.table({"id": ["a1", "a2", "b1", "a3"], "doc": ["A", "A", "B", "A"], "text": ["x", "y", "z", "w"]})
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=2)
    config = job(source={"path": str(tmp_path), "document_column": "doc", "shard_rows": 2})
    shards = plan_shards(discover_files(str(tmp_path)), 2)
    with pytest.raises(InputError, match=r"document 'A' \(column 'doc'\) is not contiguous: its rows are at "
                                         r".*c\.parquet row 0 and again at .*c\.parquet row 3"):
        check_input(shards, config.source, None)


def test_a_document_split_across_two_files_is_refused(tmp_path):
    pq.write_table(pa.table({"id": ["a1", "a2"], "doc": ["A", "A"], "text": ["x", "y"]}), tmp_path / "1.parquet")
    pq.write_table(pa.table({"id": ["a3", "b1"], "doc": ["A", "B"], "text": ["z", "w"]}), tmp_path / "2.parquet")
    config = job(source={"path": str(tmp_path), "document_column": "doc"})
    with pytest.raises(InputError, match=r"document 'A'.*1\.parquet row 0 and again at .*2\.parquet row 0"):
        check_input(plan_shards(discover_files(str(tmp_path)), 10), config.source, None)


def test_contiguous_documents_pass_the_check(tmp_path):
    pq.write_table(prechunked(), tmp_path / "c.parquet", row_group_size=3)
    config = job(source={"path": str(tmp_path), "document_column": "doc"})
    check_input(plan_shards(discover_files(str(tmp_path)), 4), config.source, None)
