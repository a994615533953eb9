"""Whole jobs into Milvus Lite: ``python -m embedder run`` in a subprocess (its own local Ray) against the local
Jina-compatible server. Two sinks hold the same vectors; a search finds a document by its own text; a driver
killed mid-run and rerun leaves exactly one row per id; a mismatching collection stops the job before any request.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from jobtools import Result, interrupt_mid_run, run_cli, wait_server_idle
from pymilvus import DataType

from embedder.cli import search as search_cli
from embedder.cli.sample_corpus import write_parquet_corpus
from embedder.sinks.milvus import connect, disconnect
from embedder.testing import job_tables, write_job

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


def milvus_job(path: Path, corpus: Path, *, parquet: bool = False, workers: int = 2) -> Path:
    """The corpus into the collection ``docs`` of Milvus Lite (and Parquet, with ``parquet``); every output path
    is relative to the job's folder, where it runs: ``milvus/vectors.db``, ``out/``, the ledger in ``ledger/``."""
    sinks = [{"kind": "parquet", "path": "out"}] if parquet else []
    sinks.append({"kind": "milvus", "uri": "milvus/vectors.db", "collection": "docs"})
    return write_job(path, **job_tables(corpus, dimensions=DIM, shard_rows=SHARD_ROWS, workers=workers,
                                        passthrough=("title", "topic")),
                     checkpoint={"path": "ledger"}, sinks=sinks)


def run_job(job: Path, env: dict[str, str]) -> Result:
    """``embedder run JOB`` in the job's folder, to completion."""
    return run_cli(job, env=env, cwd=job.parent, timeout=RUN_TIMEOUT_S)


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
    job = milvus_job(tmp_path / "job.toml", corpus, parquet=True)
    result = run_job(job, env)
    assert result.returncode == 0, result.describe()
    assert "output milvus://docs: 20,000 rows" in result.output
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
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["id"] == target["id"] and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["fields"]["title"] == target["title"]
    assert jina.stats()["requests"] == before + 1
    assert search_cli.run(parser.parse_args([str(job), target["text"], "-k", "2"])) == 0
    text = capsys.readouterr().out
    assert target["id"] in text.splitlines()[1] and "title: " in text


def test_a_killed_driver_and_a_rerun_leave_exactly_one_row_per_id(tmp_path, corpus, jina, env):
    jina.configure(latency_ms=250)  # slow enough to kill the run half way
    job = milvus_job(tmp_path / "job.toml", corpus)
    done = tmp_path / "ledger" / "done"
    # the driver only; its Ray and sink actor die with it
    interrupt_mid_run(job, str(tmp_path / "ledger"), lambda run: run.kill(signal.SIGKILL), env=env,
                      what="the kill", markers=3, cwd=tmp_path, wait_s=RUN_TIMEOUT_S, reap_grace_s=3)
    finished = len(os.listdir(done))
    assert 3 <= finished < ROWS // SHARD_ROWS, "the run was not interrupted half way"

    wait_server_idle(jina)  # requests of the killed run still being served would count after a reset
    jina.reset()
    jina.configure(latency_ms=0)
    rerun = run_job(job, env)
    assert rerun.returncode == 0, rerun.describe()
    assert f"{finished} shards already done" in rerun.output
    assert jina.stats()["inputs"] == ROWS - finished * SHARD_ROWS  # only the shards without a marker are paid
    ids, _, count = milvus_rows(tmp_path / "milvus" / "vectors.db", fields=())
    assert count == ROWS and len(ids) == ROWS and len(set(ids)) == ROWS

    requests = jina.stats()["requests"]
    again = run_job(job, env)  # complete already: no Ray, no request, the count unchanged
    assert again.returncode == 0, again.describe()
    assert jina.stats()["requests"] == requests
    assert "output milvus://docs: 20,000 rows" in again.output
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
    job = milvus_job(tmp_path / "job.toml", corpus, workers=1)
    result = run_job(job, env)
    assert result.returncode != 0  # 2 with a one-line message once job.py raises the sink actor's own error
    assert "Milvus collection 'docs' at " in result.output
    assert f"expected {expected}, found {found}" in result.output
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
