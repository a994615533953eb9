"""The Parquet sink on real files (and on S3 through a local moto server): atomic parts, manifest, metadata."""

from __future__ import annotations

import json
import os
import pickle
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from embedder import storage
from embedder.config import ParquetSinkConfig
from embedder.errors import SinkError, StoragePermanent
from embedder.ledger import DoneMarker, Ledger, ShardStats
from embedder.sinks import ParquetSink, SinkStartInfo, WriteReceipt
from embedder.sinks.parquet import read_manifest, read_manifest_dataset

DIM = 8


def info(dim: int = DIM, fingerprint: str = "fp-1") -> SinkStartInfo:
    return SinkStartInfo(model="jina-embeddings-v3", task="retrieval.passage", dimensions=dim,
                         fingerprint=fingerprint, passthrough_schema=pa.schema([("id", pa.int64())]),
                         id_type=pa.int64())


def table(start: int, n: int, dim: int = DIM) -> pa.Table:
    vectors = np.arange(start * dim, (start + n) * dim, dtype=np.float32)
    return pa.table({
        "id": pa.array(range(start, start + n), pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors), dim),
        "title": [f"t{i}" for i in range(start, start + n)],
    })


@pytest.fixture
def sink(tmp_path) -> ParquetSink:
    s = ParquetSink(ParquetSinkConfig(path=str(tmp_path / "out")))
    s.start(info())
    return s


def test_write_creates_one_part_atomically_and_a_rewrite_replaces_it(tmp_path, sink):
    first = sink.write("s1", table(0, 5))
    assert first == WriteReceipt("s1", 5, first.bytes, str(tmp_path / "out" / "part-s1.parquet"))
    assert first.bytes == (tmp_path / "out" / "part-s1.parquet").stat().st_size
    sink.write("s1", table(100, 3))
    assert sorted(os.listdir(tmp_path / "out")) == ["part-s1.parquet"]
    written = pq.read_table(tmp_path / "out" / "part-s1.parquet")
    assert written.column("id").to_pylist() == [100, 101, 102]
    assert written.schema.field("vector").type == pa.list_(pa.float32(), DIM)
    assert written.column("title").to_pylist() == ["t100", "t101", "t102"]
    assert (tmp_path / "out" / "part-s1.parquet").is_file() and not (tmp_path / "out" / "part-s2.parquet").exists()


def test_a_failed_write_keeps_the_old_part_and_leaves_no_temp_file(tmp_path, sink, monkeypatch):
    sink.write("s1", table(0, 5))

    def crash(src, dst):
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StoragePermanent, match=r"part write failed for .*part-s1\.parquet: killed"):
        sink.write("s1", table(100, 3))
    monkeypatch.undo()
    assert os.listdir(tmp_path / "out") == ["part-s1.parquet"]
    assert pq.read_table(tmp_path / "out" / "part-s1.parquet").num_rows == 5


def test_parts_carry_the_job_metadata(tmp_path, sink):
    sink.write("s1", table(0, 2))
    meta = pq.read_metadata(tmp_path / "out" / "part-s1.parquet").metadata
    assert meta[b"embedder.model"] == b"jina-embeddings-v3"
    assert meta[b"embedder.task"] == b"retrieval.passage"
    assert meta[b"embedder.dimensions"] == str(DIM).encode()
    assert meta[b"embedder.fingerprint"] == b"fp-1"
    assert meta[b"embedder.shard_id"] == b"s1"


def test_commit_lists_exactly_the_plan_and_deletes_stale_parts(tmp_path, sink):
    out = tmp_path / "out"
    for number, shard in enumerate(["s1", "s2", "s3", "old"]):
        sink.write(shard, table(number * 10, number + 1))
    (out / f"{storage.TMP_PREFIX}abc-part-s4.parquet").write_bytes(b"half a file")
    # a ledger inside the output folder, with dead letters in Parquet, must not be read as data
    ledger = Ledger.open(str(out / "_checkpoint"), "fp-1", {})
    ledger.mark_done(DoneMarker(ShardStats("s1")), pa.table({"id": ["x"], "reason": ["too long"]}))

    receipt = sink.commit(["s3", "s1", "s2"])

    assert receipt.rows == 6 and receipt.parts == 3 and receipt.extra["deleted_files"] == 2
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["parts"] == [{"path": f"part-s{i}.parquet", "rows": i, "shard_id": f"s{i}"} for i in (1, 2, 3)]
    assert manifest["rows"] == 6 and manifest["version"] == 1 and manifest["fingerprint"] == "fp-1"
    assert manifest["model"] == "jina-embeddings-v3" and manifest["dimensions"] == DIM
    assert manifest["task"] == "retrieval.passage" and manifest["created_at"]
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "_manifest.json", "part-s1.parquet", "part-s2.parquet", "part-s3.parquet"]
    dataset = ds.dataset(out)  # pyarrow skips _manifest.json, _checkpoint/ and .tmp- files by itself
    assert dataset.count_rows() == manifest["rows"]
    assert sorted(dataset.to_table().column("id").to_pylist()) == [0, 10, 11, 20, 21, 22]


def test_commit_counts_rows_from_footers_and_receipts(tmp_path, sink):
    receipts = [sink.write("s1", table(0, 4)), sink.write("s2", table(10, 7))]
    # another actor, or a later run: knows nothing in memory
    fresh = ParquetSink(ParquetSinkConfig(path=str(tmp_path / "out")))
    fresh.start(info())
    assert fresh.commit(["s1", "s2"]).rows == 11
    fresh = ParquetSink(ParquetSinkConfig(path=str(tmp_path / "out")))
    fresh.start(info())
    assert fresh.commit(["s1", "s2"], receipts=receipts).rows == 11


def test_commit_refuses_a_missing_part_and_a_part_of_another_job(tmp_path, sink):
    sink.write("s1", table(0, 1))
    with pytest.raises(SinkError, match=r"1 planned shard.*s2"):
        sink.commit(["s1", "s2"])
    other = ParquetSink(ParquetSinkConfig(path=str(tmp_path / "out")))
    other.start(info(fingerprint="fp-other"))
    with pytest.raises(SinkError, match="written by another job"):
        other.commit(["s1"])


def test_each_commit_is_a_new_version_and_the_previous_one_stays_readable_until_then(tmp_path, sink):
    out = tmp_path / "out"
    sink.write("s1", table(0, 1))
    sink.write("s2", table(10, 2))
    sink.commit(["s1", "s2"])
    # the next run writes a new part beside the old ones: readers of the manifest still see version 1 whole
    later = ParquetSink(ParquetSinkConfig(path=str(out)))
    later.start(info())
    later.write("s3", table(20, 3))
    assert read_manifest_dataset(str(out)).count_rows() == 3
    assert read_manifest(str(out))["dataset_version"] == 1
    later.commit(["s1", "s3"])
    manifest = read_manifest(str(out))
    assert manifest["dataset_version"] == 2 and manifest["rows"] == 4
    assert sorted(read_manifest_dataset(str(out)).to_table()["id"].to_pylist()) == [0, 20, 21, 22]
    assert not (out / "part-s2.parquet").exists()  # listed by no current version: gone after the commit
    assert sorted(p.name for p in (out / "_manifests").iterdir()) == ["v000001.json", "v000002.json"]


@pytest.mark.parametrize("vector, message", [
    (pa.array([[1.0] * DIM, [2.0] * DIM], pa.list_(pa.float32())), "fixed_size_list<float32>"),
    (pa.array([[1.0] * DIM, [2.0] * DIM], pa.list_(pa.float64(), DIM)), "fixed_size_list<float32>"),
    (pa.array([[1.0] * 4, [2.0] * 4], pa.list_(pa.float32(), 4)), rf"\[{DIM}\]"),
    (pa.array([[1.0] * DIM, None], pa.list_(pa.float32(), DIM)), "null vectors"),
])
def test_a_bad_vector_column_is_refused(sink, vector, message):
    with pytest.raises(SinkError, match=message):
        sink.write("s1", pa.table({"id": [1, 2], "vector": vector}))


def test_missing_columns_and_lifecycle_errors(tmp_path, sink):
    with pytest.raises(SinkError, match="no 'id' column"):
        sink.write("s1", table(0, 2).drop_columns(["id"]))
    with pytest.raises(SinkError, match="start"):
        ParquetSink(ParquetSinkConfig(path=str(tmp_path / "o2"))).write("s1", table(0, 1))
    with pytest.raises(ValueError, match="invalid shard id"):
        sink.write("../s1", table(0, 1))


def test_ids_are_cast_to_the_job_id_type(tmp_path, sink):
    small_ids = table(0, 3).set_column(0, "id", pa.array([1, 2, 3], pa.int32()))
    sink.write("s1", small_ids)
    assert pq.read_schema(tmp_path / "out" / "part-s1.parquet").field("id").type == pa.int64()


def test_the_sink_pickles_before_and_after_use(tmp_path, sink):
    fresh = pickle.loads(pickle.dumps(ParquetSink(ParquetSinkConfig(path=str(tmp_path / "o3")))))
    fresh.start(info())
    fresh.write("s1", table(0, 1))
    again = pickle.loads(pickle.dumps(sink))
    again.write("s2", table(0, 1))
    assert again.commit(["s2"]).rows == 1


def test_subtree_filesystem(tmp_path):
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    sink = ParquetSink(ParquetSinkConfig(path="job/out"), filesystem=fs)
    sink.start(info())
    sink.write("s1", table(0, 3))
    assert sink.commit(["s1"]).rows == 3
    assert ds.dataset("job/out", filesystem=fs).count_rows() == 3


def test_a_large_shard_writes_fast(tmp_path):
    dim, n = 1024, 5000
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path / "out")))
    sink.start(info(dim=dim))
    vectors = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
    big = pa.table({"id": pa.array(range(n), pa.int64()),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim)})
    started = time.perf_counter()
    receipt = sink.write("big", big)
    elapsed = time.perf_counter() - started
    assert receipt.rows == n
    assert elapsed < 1.0, f"5,000 x 1024 vectors took {elapsed:.2f}s"  # ~0.1 s measured on 2 cores
    back = pq.read_table(tmp_path / "out" / "part-big.parquet")
    assert np.array_equal(back.column("vector").combine_chunks().flatten().to_numpy(), vectors.ravel())


# ---------------------------------------------------------------- S3 (moto's server on loopback)
@pytest.fixture(scope="module")
def s3() -> Iterator[dict]:
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    options = {"endpoint_override": endpoint, "access_key": "test", "secret_key": "test",
               "region": "us-east-1", "scheme": "http"}
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket="bucket")
    yield options
    server.stop()


def test_parquet_sink_on_s3(s3):
    sink = ParquetSink(ParquetSinkConfig(path="s3://bucket/run1/out"), storage_options=s3)
    sink.start(info())
    receipt = sink.write("s1", table(0, 3))
    assert receipt.location == "s3://bucket/run1/out/part-s1.parquet"
    sink.write("s1", table(0, 4))  # a rewrite replaces the object
    sink.write("stale", table(50, 2))
    fresh = ParquetSink(ParquetSinkConfig(path="s3://bucket/run1/out"), storage_options=s3)
    fresh.start(info())
    assert fresh.commit(["s1"]).rows == 4  # footer read over S3
    fs = pafs.S3FileSystem(**s3)
    names = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector("bucket/run1/out"))
                   if i.type == pafs.FileType.File)
    assert names == ["_manifest.json", "part-s1.parquet"]
    assert ds.dataset("bucket/run1/out", filesystem=fs).count_rows() == 4


def test_ledger_on_s3(s3):
    fs = pafs.S3FileSystem(**s3)
    ledger = Ledger.open("bucket/job/_checkpoint", "fp", {"model": "m"}, filesystem=fs)
    ledger.mark_done(DoneMarker(ShardStats("s1", rows=2)), pa.table({"id": [5], "reason": ["too long"]}))
    ledger.mark_done(DoneMarker(ShardStats("s2", rows=3)))
    again = Ledger.open("bucket/job/_checkpoint", "fp", {"model": "m"}, filesystem=fs)
    assert again.done_ids() == {"s1", "s2"}
    assert [m.stats.rows for m in again.done_markers()] == [2, 3]
    assert again.failed_rows().column("id").to_pylist() == ["5"]
    restarted = Ledger.open("bucket/job/_checkpoint", "fp2", {"model": "n"}, filesystem=fs, restart=True)
    assert restarted.done_ids() == set() and restarted.failed_rows().num_rows == 0
