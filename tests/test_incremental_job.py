"""Incremental backfills end to end: the CLI against the local server, Parquet and Milvus Lite together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from faulttools import milvus_dump
from jobtools import corpus_rows, run_cli, start_cli, wait_for, write_parquet

from embedder.sinks.parquet import read_manifest_dataset
from embedder.testing import incremental_job

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROWS, FILES, DIM = 6000, 3, 64


def write_job(path: Path, source: Path, out: Path) -> Path:
    """``source`` → Parquet in ``<out>/parquet`` and Milvus Lite in ``<out>/milvus.db``, incrementally."""
    return incremental_job(path, source, out, dimensions=DIM)


def write_corpus(directory: Path, table: pa.Table) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.parquet"):
        old.unlink()
    per_file = -(-table.num_rows // FILES)
    for number in range(FILES):
        write_parquet(directory / f"part-{number}.parquet", table.slice(number * per_file, per_file))


def change(table: pa.Table, rng: np.random.Generator) -> tuple[pa.Table, set[str], set[str], set[str]]:
    """1% of texts edited, 1% of rows deleted, 1% added."""
    n = table.num_rows
    picks = rng.choice(n, size=2 * n // 100, replace=False)
    edit, delete = picks[: n // 100], picks[n // 100:]
    texts = table["text"].to_pylist()
    for i in edit:
        texts[i] = texts[i] + " (edited)"
    table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts))
    keep = np.ones(n, dtype=bool)
    keep[delete] = False
    ids = table["id"].to_pylist()
    added = corpus_rows(n // 100, start=10_000_000)
    new = pa.concat_tables([table.filter(pa.array(keep)), added.select(table.column_names)])
    return new, {ids[i] for i in edit}, {ids[i] for i in delete}, set(added["id"].to_pylist())


def parquet_vectors(out: Path) -> dict[str, np.ndarray]:
    table = read_manifest_dataset(str(out / "parquet")).to_table()
    vectors = table["vector"].combine_chunks().flatten().to_numpy().reshape(-1, DIM)
    return dict(zip(table["id"].to_pylist(), vectors, strict=True))


def milvus_vectors(out: Path) -> dict[str, np.ndarray]:
    """The collection's rows, read in a subprocess: Milvus Lite keeps a database locked by the process that
    opened it, and the next CLI run must be able to open it."""
    ids, vectors, _ = milvus_dump(out / "milvus.db")
    return dict(zip(ids, vectors, strict=True))


def assert_same(left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> None:
    assert left.keys() == right.keys()
    for key, vector in left.items():
        np.testing.assert_array_equal(vector, right[key])


@pytest.fixture
def first_run(tmp_path: Path, jina, env) -> tuple[pa.Table, Path, Path, Path]:
    """A corpus of ROWS rows in FILES files, embedded once by the incremental job: (table, corpus, out, job)."""
    table = corpus_rows(ROWS)
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    write_corpus(corpus, table)
    job = write_job(tmp_path / "job.toml", corpus, out)
    first = run_cli(job, env=env)
    assert first.returncode == 0, first.describe()
    return table, corpus, out, job


def test_incremental_run_embeds_only_what_changed_and_equals_a_fresh_full_run(tmp_path, jina, env, first_run):
    rng = np.random.default_rng(5)
    table, corpus, out, job = first_run
    full_tokens = jina.stats()["tokens"]

    new_table, edited, deleted, added = change(table, rng)
    write_corpus(corpus, new_table)
    jina.reset()
    second = run_cli(job, env=env)
    assert second.returncode == 0, second.describe()
    billed = jina.stats()
    assert billed["inputs"] == len(edited) + len(added)
    assert billed["tokens"] <= 0.025 * full_tokens
    report = json.loads((out / "parquet/_checkpoint/run_report.json").read_text())
    assert report["incremental"] | {"tokens_saved_estimate": 0} == {
        "new": len(added), "changed": len(edited), "unchanged": ROWS - 2 * len(deleted),
        "deleted": len(deleted), "tokens_saved_estimate": 0}
    assert report["incremental"]["tokens_saved_estimate"] > 0.9 * full_tokens

    # the same corpus embedded from scratch elsewhere: the incremental output must equal it
    fresh_out = tmp_path / "fresh"
    fresh = run_cli(write_job(tmp_path / "fresh.toml", corpus, fresh_out), env=env)
    assert fresh.returncode == 0, fresh.describe()
    expected = parquet_vectors(fresh_out)
    assert set(expected) == set(new_table["id"].to_pylist())
    assert_same(parquet_vectors(out), expected)
    assert_same(milvus_vectors(out), expected)
    assert not deleted & set(milvus_vectors(out))

    jina.reset()
    again = run_cli(job, env=env)
    assert again.returncode == 0, again.describe()
    assert jina.stats()["requests"] == 0


def test_an_interrupted_incremental_run_converges(tmp_path, jina, env, first_run):
    rng = np.random.default_rng(9)
    table, corpus, out, job = first_run

    # edit a tenth of the rows so the incremental run has real work, and slow the server down
    new_table, *_ = change(table, rng)
    texts = new_table["text"].to_pylist()
    new_table = new_table.set_column(new_table.schema.get_field_index("text"), "text",
                                     pa.array([t + " v2" if i % 10 == 0 else t for i, t in enumerate(texts)]))
    write_corpus(corpus, new_table)
    jina.configure(latency_ms=400)
    done = out / "parquet/_checkpoint/done"
    before = len(list(done.iterdir()))
    running = start_cli(job, env=env)
    wait_for(lambda: len(list(done.iterdir())) >= before + 2 or not running.running(), timeout=120,
             what="two shards of the incremental run")
    running.kill()
    running.wait(60)
    jina.configure(latency_ms=0)
    resumed = run_cli(job, env=env)
    assert resumed.returncode == 0, resumed.describe()

    fresh_out = tmp_path / "fresh"
    assert run_cli(write_job(tmp_path / "fresh.toml", corpus, fresh_out), env=env).returncode == 0
    expected = parquet_vectors(fresh_out)
    assert_same(parquet_vectors(out), expected)
    assert_same(milvus_vectors(out), expected)
    ids = read_manifest_dataset(str(out / "parquet")).to_table()["id"]
    assert pc.count_distinct(ids).as_py() == len(ids) == new_table.num_rows
