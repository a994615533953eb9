"""Whole jobs into Milvus Lite: ``python -m embedder run`` in a subprocess (its own local Ray) against the local
Jina-compatible server. Two sinks hold the same vectors; a search finds a document by its own text; a driver
killed mid-run and rerun leaves exactly one row per id; a mismatching collection stops the job before any request.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from pymilvus import DataType

from embedder.cli import search as search_cli
from embedder.cli.sample_corpus import write_parquet_corpus
from embedder.sinks.milvus import connect, disconnect

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROWS = 20_000
SHARD_ROWS = 1_000
DIM = 256
RUN_TIMEOUT_S = 240.0


@pytest.fixture(scope="module")
def corpus() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="milvus-job-corpus-") as directory:
        write_parquet_corpus(directory, ROWS, files=4, row_group_rows=SHARD_ROWS, words_per_doc=40)
        yield Path(directory)


def write_job(path: Path, corpus: Path, *, parquet: bool = False, workers: int = 2) -> Path:
    sinks = '[[sinks]]\nkind = "milvus"\nuri = "milvus/vectors.db"\ncollection = "docs"\n'
    if parquet:
        sinks = '[[sinks]]\nkind = "parquet"\npath = "out"\n\n' + sinks
    path.write_text(f"""
[source]
path = "{corpus}"
passthrough = ["title", "topic"]
shard_rows = {SHARD_ROWS}

[embedding]
model = "jina-embeddings-v3"
dimensions = {DIM}

[limits]
rpm = 100000
tpm = 100000000
max_concurrency = 8

[workers]
count = {workers}
cpus_per_worker = 0.25

[checkpoint]
path = "ledger"

[progress]
interval_s = 1.0

{sinks}""", encoding="utf-8")
    return path


@pytest.fixture
def env(jina, api_key) -> Iterator[dict[str, str]]:
    """The environment of ``embedder run``: the key, the local server, a private Ray temp dir."""
    ray_tmpdir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray puts Unix sockets below it
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "JINA", "MILVUS"))}
    environ.update(JINA_API_KEY=api_key, JINA_API_BASE=jina.url, PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0",
                   RAY_TMPDIR=ray_tmpdir)
    yield environ
    shutil.rmtree(ray_tmpdir, ignore_errors=True)


@contextlib.contextmanager
def embedder_run(job: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """``python -m embedder run JOB`` in its own process group; whatever is left of it is killed at the end."""
    with open(job.parent / "run.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "embedder", "run", str(job)], cwd=job.parent, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group of this run only: its local Ray's leftovers


def run_job(job: Path, env: dict[str, str]) -> tuple[int, str]:
    start = (job.parent / "run.log").stat().st_size if (job.parent / "run.log").exists() else 0
    with embedder_run(job, env) as proc:
        try:
            code = proc.wait(RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = -1
    return code, (job.parent / "run.log").read_text(errors="replace")[start:]


def milvus_rows(db: Path, fields: tuple[str, ...] = ("vector",)) -> tuple[list, dict[str, list], int]:
    """Every id (in the collection's order), the requested fields by id, and ``count(*)``."""
    client = connect(str(db))
    try:
        client.load_collection("docs")
        count = client.query("docs", filter="", output_fields=["count(*)"])[0]["count(*)"]
        iterator = client.query_iterator("docs", batch_size=5000, output_fields=list(fields))
        ids, values = [], {}
        while batch := iterator.next():
            for row in batch:
                ids.append(row["id"])
                values[row["id"]] = [row[name] for name in fields]
        iterator.close()
        return ids, values, count
    finally:
        disconnect(client, str(db))


def test_two_sinks_hold_the_same_vectors_and_search_finds_a_document(tmp_path, corpus, jina, api_key, env,
                                                                       monkeypatch, capsys):
    job = write_job(tmp_path / "job.toml", corpus, parquet=True)
    code, output = run_job(job, env)
    assert code == 0, output
    assert "output milvus://docs: 20,000 rows" in output
    report = json.loads((tmp_path / "ledger" / "run_report.json").read_text())
    milvus_output = next(o for o in report["outputs"] if o["location"] == "milvus://docs")
    assert (milvus_output["count"], milvus_output["expected_rows"]) == (ROWS, ROWS)

    ids, vectors, count = milvus_rows(tmp_path / "milvus" / "vectors.db")
    assert count == ROWS and len(ids) == ROWS == len(set(ids))
    parquet = ds.dataset(tmp_path / "out", format="parquet").to_table(columns=["id", "vector"]).sort_by("id")
    assert parquet.column("id").to_pylist() == sorted(vectors)
    from_parquet = parquet.column("vector").combine_chunks().flatten().to_numpy().reshape(ROWS, DIM)
    from_milvus = np.array([vectors[i][0] for i in parquet.column("id").to_pylist()], dtype=np.float32)
    assert np.array_equal(from_parquet, from_milvus)

    # the mock server's vectors do not depend on the task: a document's own text is its nearest neighbour
    source = ds.dataset(corpus).to_table(columns=["id", "text", "title"])
    target = source.slice(12_345, 1).to_pylist()[0]
    monkeypatch.setenv("JINA_API_KEY", api_key)
    monkeypatch.setenv("JINA_API_BASE", jina.url)
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    search_cli.add_arguments(parser)
    before = jina.stats()["requests"]
    assert search_cli.run(parser.parse_args([str(job), target["text"], "-k", "3", "--json"])) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["id"] == target["id"] and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["fields"]["title"] == target["title"]
    assert jina.stats()["requests"] == before + 1
    assert search_cli.run(parser.parse_args([str(job), target["text"], "-k", "2"])) == 0
    text = capsys.readouterr().out
    assert target["id"] in text.splitlines()[1] and "title: " in text


def test_a_killed_driver_and_a_rerun_leave_exactly_one_row_per_id(tmp_path, corpus, jina, env):
    jina.configure(latency_ms=250)  # slow enough to kill the run half way
    job = write_job(tmp_path / "job.toml", corpus)
    done = tmp_path / "ledger" / "done"
    with embedder_run(job, env) as proc:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not (done.is_dir() and len(os.listdir(done)) >= 3):
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)  # the driver only; its Ray and sink actor die with it
        proc.wait()
    finished = len(os.listdir(done))
    assert 3 <= finished < ROWS // SHARD_ROWS, "the run was not interrupted half way"

    deadline = time.monotonic() + 30  # requests of the killed run still being served would count after a reset
    while jina.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.1)
    jina.reset()
    jina.configure(latency_ms=0)
    code, output = run_job(job, env)
    assert code == 0, output
    assert f"{finished} shards already done" in output
    assert jina.stats()["inputs"] == ROWS - finished * SHARD_ROWS  # only the shards without a marker are paid
    ids, _, count = milvus_rows(tmp_path / "milvus" / "vectors.db", fields=())
    assert count == ROWS and len(ids) == ROWS and len(set(ids)) == ROWS

    requests = jina.stats()["requests"]
    code, output = run_job(job, env)  # complete already: no Ray, no request, the count unchanged
    assert code == 0, output
    assert jina.stats()["requests"] == requests
    assert "output milvus://docs: 20,000 rows" in output
    assert milvus_rows(tmp_path / "milvus" / "vectors.db", fields=())[2] == ROWS


@pytest.mark.parametrize(("pk", "dim", "expected", "found"), [
    (DataType.VARCHAR, 8, f"FLOAT_VECTOR(dim={DIM})", "FLOAT_VECTOR(dim=8)"),
    (DataType.INT64, DIM, "'id' VARCHAR", "'id' INT64"),
])
def test_a_mismatching_collection_stops_the_job_before_any_request(tmp_path, corpus, jina, env, pk, dim, expected,
                                                                   found):
    db = tmp_path / "milvus" / "vectors.db"
    client = connect(str(db))
    try:
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", pk, is_primary=True, **({"max_length": 64} if pk == DataType.VARCHAR else {}))
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        client.create_collection("docs", schema=schema)
    finally:
        disconnect(client, str(db))
    job = write_job(tmp_path / "job.toml", corpus, workers=1)
    code, output = run_job(job, env)
    assert code != 0  # 2 with a one-line message once job.py raises the sink actor's own error
    assert "Milvus collection 'docs' at " in output and f"expected {expected}, found {found}" in output
    assert jina.stats()["requests"] == 0
    assert not (tmp_path / "ledger" / "done").is_dir() or not os.listdir(tmp_path / "ledger" / "done")
    ids, _, count = milvus_rows(db, fields=())
    assert count == 0 and ids == []
    client = connect(str(db))
    try:  # the collection is as it was
        fields = {f["name"]: f for f in client.describe_collection("docs")["fields"]}
        assert set(fields) == {"id", "vector"} and fields["id"]["type"] == pk
        assert fields["vector"]["params"]["dim"] == dim
    finally:
        disconnect(client, str(db))
