"""The Milvus sink on a real Milvus Lite (in this process, and as a ``milvus-lite server`` on a loopback port):
schema, upserts by id, byte-bounded requests, refusals of mismatching collections, retries, locks, secrets."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pymilvus import DataType
from pymilvus.exceptions import MilvusException, MilvusUnavailableException

from embedder.config import MilvusSinkConfig
from embedder.errors import SinkError
from embedder.sinks import milvus as milvus_module
from embedder.sinks.base import SinkStartInfo, WriteReceipt
from embedder.sinks.milvus import MilvusSink, connect, disconnect, is_transient
from embedder.sinks.milvus_schema import FieldSpec, expected_fields, milvus_type, split_by_bytes

DIM = 8
SERVER_START_S = 30.0
STRING = pa.string()


def info(dim: int = DIM, *, id_type: pa.DataType = STRING, model: str = "jina-embeddings-v3",
         columns: tuple[str, ...] = ("title", "n", "meta", "ok", "score")) -> SinkStartInfo:
    schema = table(1, 1, dim, id_type=id_type).select(["id", *columns]).schema
    return SinkStartInfo(model=model, task="retrieval.passage", dimensions=dim, fingerprint="fp-1",
                         passthrough_schema=schema, id_type=id_type)


def table(start: int, n: int, dim: int = DIM, *, id_type: pa.DataType = STRING, shift: float = 0.0) -> pa.Table:
    vectors = np.arange(start * dim, (start + n) * dim, dtype=np.float32) / 7 + shift
    ids = pa.array([f"doc-{i:05d}" for i in range(start, start + n)]) if pa.types.is_string(id_type) else \
        pa.array(range(start, start + n), id_type)
    return pa.table({
        "id": ids,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors), dim),
        "title": [None if i % 3 == 0 else f"title {i} é" for i in range(start, start + n)],
        "n": pa.array(range(start, start + n), pa.int32()),
        "meta": [{"k": i, "tags": ["a", "b"]} for i in range(start, start + n)],
        "ok": [i % 2 == 0 for i in range(start, start + n)],
        "score": pa.array([i / 4 for i in range(start, start + n)], pa.float32()),
    })


def read_all(uri: str, collection: str = "docs") -> dict[object, dict]:
    client = connect(uri)
    try:
        client.load_collection(collection)
        rows = client.query(collection, filter="", output_fields=["*"], limit=10_000)
        return {row["id"]: row for row in rows}
    finally:
        disconnect(client, uri)


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "lite" / "vectors.db")  # the parent folder does not exist yet: the sink makes it


def milvus_sink(uri: str, *, lock_wait_s: float = milvus_module.LOCK_WAIT_S, fast_path: bool = True,
                **fields: object) -> MilvusSink:
    """A sink for the ``[sink] kind = "milvus"`` section with ``uri`` and ``fields``."""
    config = MilvusSinkConfig(uri=uri, **fields)  # type: ignore[arg-type]
    return MilvusSink(config, lock_wait_s=lock_wait_s, fast_path=fast_path)


@pytest.fixture
def sink(db) -> Iterator[MilvusSink]:
    s = milvus_sink(db, collection="docs")
    s.start(info())
    yield s
    s.close()


# --- pure parts ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("arrow_type", "expected"), [
    (pa.string(), DataType.VARCHAR), (pa.large_string(), DataType.VARCHAR),
    (pa.dictionary(pa.int32(), pa.string()), DataType.VARCHAR), (pa.timestamp("ms"), DataType.VARCHAR),
    (pa.int8(), DataType.INT64), (pa.uint64(), DataType.INT64), (pa.float16(), DataType.DOUBLE),
    (pa.float32(), DataType.DOUBLE), (pa.bool_(), DataType.BOOL), (pa.list_(pa.int64()), DataType.JSON),
    (pa.struct([("a", pa.int64())]), DataType.JSON), (pa.map_(pa.string(), pa.int64()), DataType.JSON),
    (pa.null(), DataType.JSON), (pa.binary(), None),
])
def test_arrow_types_map_to_milvus_types(arrow_type, expected):
    assert milvus_type(arrow_type) == expected


def test_expected_fields_and_refusals():
    fields = expected_fields(info().passthrough_schema, pa.string(), DIM, "pk", "emb")
    assert fields[0] == FieldSpec("pk", DataType.VARCHAR, 512)
    assert fields[1] == FieldSpec("emb", DataType.FLOAT_VECTOR, dim=DIM)
    assert [f.name for f in fields[2:]] == ["title", "n", "meta", "ok", "score"] and all(f.nullable for f in fields[2:])
    assert expected_fields(pa.schema([("id", pa.int32())]), pa.int32(), DIM, "id", "v")[0].dtype == DataType.INT64
    with pytest.raises(SinkError, match="passthrough column 'blob' is binary"):
        expected_fields(pa.schema([("id", pa.string()), ("blob", pa.binary())]), pa.string(), DIM, "id", "v")
    with pytest.raises(SinkError, match="primary key must be a string or an integer"):
        expected_fields(pa.schema([("id", pa.float64())]), pa.float64(), DIM, "id", "v")


@pytest.mark.parametrize("limit", [1, 100, 250, 10_000])
def test_split_by_bytes_covers_every_row_within_the_limit(limit):
    sizes = np.array([40, 10, 300, 10, 10, 120, 5, 5, 5, 80], dtype=np.int64)
    ranges = split_by_bytes(sizes, limit)
    assert [i for a, b in ranges for i in range(a, b)] == list(range(len(sizes)))
    for a, b in ranges:
        assert sizes[a:b].sum() <= limit or b - a == 1  # a row larger than the limit goes alone


def test_transient_errors_are_decided_by_type_and_code():
    assert is_transient(MilvusUnavailableException(message="down"))
    assert is_transient(MilvusException(code=8, message="rate limit"))
    assert is_transient(MilvusException(code=1, message="x", retriable=True))
    assert not is_transient(MilvusException(code=1100, message="invalid parameter"))
    assert not is_transient(ValueError("bad"))


# --- on Milvus Lite ------------------------------------------------------------------------------------------


def test_rows_round_trip_with_vectors_nulls_and_every_scalar_type(db, sink):
    receipt = sink.write("s1", table(0, 30))
    assert receipt == WriteReceipt("s1", 30, receipt.bytes, "milvus://docs") and receipt.bytes > 30 * DIM * 4
    commit = sink.commit(["s1"])
    assert (commit.rows, commit.parts, commit.location) == (30, 1, "milvus://docs")
    assert commit.extra == {"collection": "docs", "count": 30, "expected_rows": 30}
    rows = read_all(db)
    source = table(0, 30).to_pylist()
    assert sorted(rows) == [r["id"] for r in source]
    for expected in source:
        got = rows[expected["id"]]
        assert np.array_equal(np.asarray(got["vector"], dtype=np.float32), np.asarray(expected["vector"], np.float32))
        assert got["title"] == expected["title"] and got["n"] == expected["n"] and got["ok"] == expected["ok"]
        assert got["meta"] == expected["meta"] and got["score"] == pytest.approx(expected["score"])


def test_collection_is_created_with_index_and_job_properties(db, sink):
    client = connect(db)
    try:
        described = client.describe_collection("docs")
        assert described["properties"]["embedder.model"] == "jina-embeddings-v3"
        assert described["properties"]["embedder.dimensions"] == str(DIM)
        assert described["properties"]["embedder.fingerprint"] == "fp-1"
        assert described["auto_id"] is False
        index = client.describe_index("docs", client.list_indexes("docs", field_name="vector")[0])
        assert (index["index_type"], index["metric_type"]) == ("AUTOINDEX", "COSINE")
    finally:
        disconnect(client, db)


def test_a_replayed_shard_replaces_its_rows(db, sink):
    sink.write("s1", table(0, 20))
    sink.write("s2", table(20, 20))
    sink.write("s1", table(0, 20, shift=1.0))  # the same shard again, e.g. after the sink actor restarted
    assert sink.commit(["s1", "s2"]).rows == 40
    rows = read_all(db)
    assert len(rows) == 40
    assert rows["doc-00001"]["vector"][0] == pytest.approx(float(np.float32(1 * DIM / 7 + 1.0)))


def test_requests_are_bounded_by_batch_bytes(db, monkeypatch):
    sink = milvus_sink(db, collection="docs", batch_bytes=1000)  # ~10 rows of 8 floats + fields per request
    sink.start(info())
    sizes: list[int] = []
    original = MilvusSink._upsert

    def spy(self, encoded, start, stop):
        sizes.append(int(encoded.row_bytes[start:stop].sum()))
        return original(self, encoded, start, stop)

    monkeypatch.setattr(MilvusSink, "_upsert", spy)
    sink.write("s1", table(0, 100))
    assert len(sizes) >= 8 and max(sizes) <= 1000
    assert sink.commit(["s1"]).rows == 100


def test_the_public_upsert_path_gives_the_same_rows(db, tmp_path):
    fast = milvus_sink(db, collection="docs")
    fast.start(info())
    fast.write("s1", table(0, 25))
    fast.commit(["s1"])
    other = str(tmp_path / "other.db")
    slow = milvus_sink(other, collection="docs", fast_path=False)
    slow.start(info())
    slow.write("s1", table(0, 25))
    slow.commit(["s1"])
    assert read_all(db) == read_all(other)


def test_integer_ids(db):
    sink = milvus_sink(db, collection="docs")
    sink.start(info(id_type=pa.int64(), columns=("title",)))
    sink.write("s1", table(0, 10, id_type=pa.int64()).select(["id", "vector", "title"]))
    assert sink.commit(["s1"]).rows == 10
    assert sorted(read_all(db)) == list(range(10))


def existing(db: str, *, dim: int = DIM, pk: DataType = DataType.VARCHAR, auto_id: bool = False,
             extra: tuple[tuple[str, DataType], ...] = ()) -> None:
    client = connect(db)
    try:
        schema = client.create_schema(auto_id=auto_id)
        schema.add_field("id", pk, is_primary=True, **({"max_length": 64} if pk == DataType.VARCHAR else {}))
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        for name, dtype in extra:
            schema.add_field(name, dtype, **({"max_length": 100} if dtype == DataType.VARCHAR else {}))
        client.create_collection("docs", schema=schema)
    finally:
        disconnect(client, db)


@pytest.mark.parametrize(("kwargs", "columns", "message"), [
    ({"dim": 16}, (), r"field 'vector' does not match this job: expected FLOAT_VECTOR\(dim=8\), "
                      r"found FLOAT_VECTOR\(dim=16\)"),
    ({"pk": DataType.INT64}, (), "primary key does not match this job: expected 'id' VARCHAR, found 'id' INT64"),
    ({"pk": DataType.INT64, "auto_id": True}, (), "primary key"),
    ({}, ("title",), "field 'title' does not match this job: expected VARCHAR.*found no such field"),
    ({"extra": (("title", DataType.INT64),)}, ("title",), "field 'title' .*expected VARCHAR.*found INT64"),
    ({"extra": (("lang", DataType.VARCHAR),)}, (), "field 'lang' .*found VARCHAR\\(max_length=100\\), required"),
])
def test_a_mismatching_collection_is_refused_before_anything_is_written(db, kwargs, columns, message):
    existing(db, **kwargs)
    sink = milvus_sink(db, collection="docs")
    with pytest.raises(SinkError, match=message) as caught:
        sink.start(info(columns=columns))
    assert "Milvus collection 'docs' at " in str(caught.value) and "Nothing was written" in str(caught.value)
    sink.close()
    client = connect(db)
    try:
        client.load_collection("docs")
        assert client.query("docs", filter="", output_fields=["count(*)"])[0]["count(*)"] == 0
    finally:
        disconnect(client, db)


def test_a_matching_existing_collection_is_used_with_its_own_limits(db):
    existing(db, extra=(("title", DataType.VARCHAR),))  # made by hand: id max_length 64, title 100, not nullable
    sink = milvus_sink(db, collection="docs")
    sink.start(info(columns=("title",)))
    rows = table(1, 2).select(["id", "vector", "title"])  # ids 1 and 2: no null title
    sink.write("s1", rows)
    with pytest.raises(SinkError, match="field 'title' of the row with id 'doc-00000' is null"):
        sink.write("s2", table(0, 2).select(["id", "vector", "title"]))
    assert sink.commit(["s1"]).rows == 2


def test_another_model_in_the_collection_is_refused(db, sink):
    sink.close()
    other = milvus_sink(db, collection="docs")
    with pytest.raises(SinkError, match="holds vectors of model 'jina-embeddings-v3', this job's model is 'other'"):
        other.start(info(model="other"))


def test_too_long_values_name_the_row(db, sink):
    rows = table(0, 3)
    long_ids = pa.array(["a", "b" * 600, "c"])
    with pytest.raises(SinkError, match=r"shard s9: field 'id' of the row with id 'bbbb.*max_length of 512"):
        sink.write("s9", rows.set_column(0, "id", long_ids))
    assert sink.commit([]).rows == 0  # nothing of the shard was written


def test_transient_failures_are_retried_with_bounded_backoff(sink, monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr(milvus_module, "_sleep", delays.append)
    calls = iter([MilvusUnavailableException(message="down"), MilvusException(code=8, message="slow down"), "ok"])

    def flaky() -> str:
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert sink._call("upsert", flaky) == "ok"
    assert len(delays) == 2 and all(0 < d <= milvus_module.BACKOFF_MAX_S for d in delays)

    def always_down() -> None:
        raise MilvusUnavailableException(message="down")

    delays.clear()
    with pytest.raises(SinkError, match=f"upsert failed after {milvus_module.WRITE_ATTEMPTS} attempts: down"):
        sink._call("upsert", always_down)
    assert len(delays) == milvus_module.WRITE_ATTEMPTS - 1

    def invalid() -> None:
        raise MilvusException(code=1100, message="invalid parameter")

    delays.clear()
    with pytest.raises(SinkError, match="upsert failed: invalid parameter"):
        sink._call("upsert", invalid)
    assert delays == []


def hold_lite(db: str) -> subprocess.Popen:
    """Another process holding the Milvus Lite database (as a running job's sink actor would)."""
    code = ("import sys, time; from milvus_lite import MilvusLite; MilvusLite(sys.argv[1]); "
            "print('ready', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, db], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_a_database_held_by_another_process_gives_a_clear_error(db):
    os.makedirs(os.path.dirname(db), exist_ok=True)
    holder = hold_lite(db)
    try:
        started = time.monotonic()
        with pytest.raises(SinkError, match=r"is open in another process .*one process per database"):
            milvus_sink(db, collection="docs", lock_wait_s=0.5).start(info())
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()
    sink = milvus_sink(db, collection="docs", lock_wait_s=5)  # free again once the holder is gone
    sink.start(info())
    sink.close()


def test_rows_survive_a_killed_writer_process(db):
    script = textwrap.dedent("""
        import os, signal, sys
        sys.path.insert(0, sys.argv[2])
        from test_milvus_sink import info, milvus_sink, table
        sink = milvus_sink(sys.argv[1], collection="docs")
        sink.start(info())
        sink.write("s1", table(0, 40))
        sink.write("s2", table(40, 40))
        os.kill(os.getpid(), signal.SIGKILL)  # no flush, no commit, no close
    """)
    done = subprocess.run([sys.executable, "-c", script, db, str(Path(__file__).parent)], timeout=120)
    assert done.returncode == -signal.SIGKILL
    sink = milvus_sink(db, collection="docs")
    sink.start(info())
    sink.write("s2", table(40, 40))  # the shard that had no ledger marker yet is written again
    assert sink.commit(["s1", "s2"], expected_rows=80).extra == {"collection": "docs", "count": 80,
                                                                   "expected_rows": 80}


def test_the_token_stays_out_of_repr_pickles_and_errors(monkeypatch):
    secret = "root:very-secret-token-value"
    monkeypatch.setenv("MILVUS_TOKEN", secret)
    monkeypatch.setattr(milvus_module, "CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = milvus_sink(f"http://127.0.0.1:{port}", collection="docs")
    assert secret not in repr(sink) and secret.encode() not in pickle.dumps(sink)
    with pytest.raises(SinkError) as caught:
        sink.start(info())
    assert "cannot connect to Milvus at http://127.0.0.1:" in str(caught.value)
    assert secret not in str(caught.value) and caught.value.__cause__ is None


@pytest.fixture
def lite_server(tmp_path) -> Iterator[str]:
    """``milvus-lite server`` on a free loopback port, as a stand-in for a Milvus server."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).with_name("milvus-lite")), "server", "--data-dir", str(tmp_path / "served"),
               "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            with socket.socket() as attempt:
                if attempt.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "milvus-lite server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_server_takes_several_sink_objects(lite_server, monkeypatch):
    monkeypatch.setenv("MILVUS_TOKEN", "root:Milvus")  # sent as the server token (milvus-lite ignores it)
    first, second = milvus_sink(lite_server, collection="docs"), milvus_sink(lite_server, collection="docs")
    first.start(info())
    second.start(info())  # like a second sink actor: finds the collection the first one created
    receipt = second.write("s2", table(50, 50))
    first.write("s1", table(0, 50))
    second.close()
    commit = first.commit(["s1", "s2"], receipts=[receipt])
    assert commit.extra == {"collection": "docs", "count": 100, "expected_rows": 100}
    assert len(read_all(lite_server)) == 100


def test_an_empty_table_writes_nothing(sink):
    assert sink.write("s0", table(0, 0)).rows == 0
    assert sink.commit(["s0"]).extra == {"collection": "docs", "count": 0, "expected_rows": 0}


def test_search_with_custom_field_names_and_a_filter(db):
    from embedder.cli.search import format_hits
    from embedder.config import MilvusSinkConfig
    from embedder.sinks.milvus_search import search

    sink = milvus_sink(db, collection="docs", id_field="pk", vector_field="emb", metric="IP")
    sink.start(info(columns=("title", "n")))
    sink.write("s1", table(1, 20).select(["id", "vector", "title", "n"]))
    sink.commit(["s1"])
    config = MilvusSinkConfig(uri=db, collection="docs", id_field="pk", vector_field="emb", metric="IP")
    query = np.asarray(table(5, 1).column("vector")[0].as_py(), dtype=np.float32)
    hits = search(config, query.tolist(), top_k=3, fields=("title", "n", "missing"), expr="n < 10")
    assert [h["rank"] for h in hits] == [1, 2, 3] and all(h["fields"]["n"] < 10 for h in hits)
    assert set(hits[0]) == {"rank", "id", "score", "fields"} and set(hits[0]["fields"]) == {"title", "n"}
    assert hits[0]["id"] == "doc-00009"  # largest inner product with a positive query: the largest vector
    text = format_hits(hits, "IP")
    assert "higher is closer" in text and "doc-00009" in text and "title: " in text
    assert format_hits([], "L2") == "no results"
    with pytest.raises(SinkError, match="collection 'nope' does not exist yet: run the job first"):
        search(MilvusSinkConfig(uri=db, collection="nope"), query.tolist(), top_k=3)


def test_search_refuses_a_database_a_job_holds(db):
    from embedder.config import MilvusSinkConfig
    from embedder.sinks.milvus_search import search

    sink = milvus_sink(db, collection="docs")
    sink.start(info())
    sink.close()
    holder = hold_lite(db)
    try:
        with pytest.raises(SinkError, match="is open in another process"):
            search(MilvusSinkConfig(uri=db, collection="docs"), [0.0] * DIM, top_k=1)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(("task", "expected"), [
    (None, "retrieval.query"), ("retrieval.passage", "retrieval.query"), ("text-matching", "text-matching"),
])
def test_queries_use_the_matching_task(task, expected):
    from embedder.cli.search import query_task

    assert query_task(task) == expected
