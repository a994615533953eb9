"""Classifying input rows against a finished dataset: new, changed, unchanged, deleted — bucket by bucket."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from embedder.config import parse_job
from embedder.incremental import classify as incremental
from embedder.incremental.classify import classify
from embedder.incremental.copies import copied_documents, shard_assignment
from embedder.source.documents import build_documents, document_hash
from embedder.source.files import discover_files
from embedder.source.reader import read_shard
from embedder.source.shards import plan_shards

CONFIG = parse_job({"source": {"path": "unused"}, "sink": {"path": "out"}})

KEY = "k" * 64


def _old_part(path, ids, texts, dim=4):
    vectors = np.arange(len(ids) * dim, dtype=np.float32).reshape(len(ids), dim)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim)
    hashes = [document_hash(text, KEY) for text in texts]
    pq.write_table(pa.table({"id": ids, "vector": flat, "content_hash": hashes}), path)
    return vectors


@pytest.mark.parametrize("rows_per_bucket", [10**9, 7])  # one bucket, and many
def test_rows_are_classified_and_unchanged_vectors_copied(tmp_path, monkeypatch, rows_per_bucket):
    monkeypatch.setattr(incremental, "ROWS_PER_BUCKET", rows_per_bucket)
    old_dir = tmp_path / "out"
    old_dir.mkdir()
    v1 = _old_part(old_dir / "part-a.parquet", ["a", "b", "c", "d"], ["ta", "tb", "tc", "td"])
    v2 = _old_part(old_dir / "part-b.parquet", ["e", "f"], ["te", "tf"])
    src = tmp_path / "in"
    src.mkdir()
    # b edited, d deleted, g added; a, c, e, f unchanged (e and f now in another file)
    pq.write_table(pa.table({"id": ["a", "b", "c", "g"], "text": ["ta", "tb EDITED", "tc", "tg"]}),
                   src / "one.parquet")
    pq.write_table(pa.table({"id": ["f", "e"], "text": ["tf", "te"]}), src / "two.parquet")
    shards = plan_shards(discover_files(str(src)), 100)
    fs = pafs.LocalFileSystem()
    result = classify(old_parts=[str(old_dir / "part-a.parquet"), str(old_dir / "part-b.parquet")], old_fs=fs,
                      shards=shards, config=CONFIG, content_key=KEY, ledger_fs=fs,
                      workdir=str(tmp_path / "w"))
    assert (result.new, result.changed, result.unchanged, result.deleted) == (1, 1, 4, 1)
    assert pq.read_table(result.deleted_ids_file)["id"].to_pylist() == ["d"]

    first = shard_assignment(fs, str(tmp_path / "w"), shards[0].shard_id)
    assert first["_row"].to_pylist() == [0, 1, 2, 3]
    assert first["action"].to_pylist() == [incremental.COPY, incremental.EMBED, incremental.COPY, incremental.EMBED]
    copies = _copies(fs, first, shards[0])
    assert copies.chunks.tolist() == [0, 2] and copies.documents.tolist() == [True, False, True, False]
    np.testing.assert_array_equal(copies.vectors, v1[[0, 2]])

    second = shard_assignment(fs, str(tmp_path / "w"), shards[1].shard_id)
    np.testing.assert_array_equal(_copies(fs, second, shards[1]).vectors, v2[[1, 0]])  # f then e
    assert incremental.load_classification(fs, str(tmp_path / "w")).unchanged == 4


def _copies(fs, assignment, shard):
    rows = read_shard(shard, CONFIG.source)
    return copied_documents(fs, assignment, rows, build_documents(rows, CONFIG))


def test_buckets_are_stable_across_processes():
    ids = pa.array(["doc-1", "doc-2", "x"])
    assert incremental.buckets_of(ids, 7).tolist() == incremental.buckets_of(ids, 7).tolist()
    assert incremental.buckets_of(pa.array([10, 11, 12]), 5).tolist() == [0, 1, 2]
