"""Summaries that tell the truth: an incremental run's embedded / unchanged / deleted counts, the final heartbeat's
counts, and dead letters of a fixed file retired so that the report, ``status`` and the Milvus count agree."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from jobtools import PYTHON, corpus_rows, ledger, run_cli, write_parquet

from embedder.testing import fault_job, job_tables, sink_table, write_job

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def status_json(checkpoint: Path, env: dict[str, str]) -> dict:
    result = subprocess.run([PYTHON, "-m", "embedder", "status", str(checkpoint), "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_an_incremental_run_says_embedded_kept_and_deleted(tmp_path, jina, env):
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    corpus.mkdir()
    rows = corpus_rows(1000)
    write_parquet(corpus / "a.parquet", rows.slice(0, 500))
    write_parquet(corpus / "b.parquet", rows.slice(500, 500))
    job = write_job(tmp_path / "job.toml", mode="incremental", **job_tables(corpus, shard_rows=250),
                    sinks=[sink_table("parquet", out)])
    first = run_cli(job, env=env)
    assert first.returncode == 0, first.describe()
    beat = status_json(out / "parquet/_checkpoint", env)["heartbeat"]
    assert beat["final"] and beat["shards_done"] == beat["shards_total"] == 4  # the last beat has the final counts

    # b.parquet: 3 texts edited, 2 rows deleted, 4 rows added; a.parquet untouched
    b = rows.slice(500, 500)
    texts = b.column("text").to_pylist()
    for index in (0, 1, 2):
        texts[index] += " (edited)"
    b = b.set_column(b.column_names.index("text"), "text", pa.array(texts)).slice(0, 498)
    b = pa.concat_tables([b, corpus_rows(4, start=5000).select(b.column_names)])
    write_parquet(corpus / "b.parquet", b)
    jina.reset()
    second = run_cli(job, env=env)
    assert second.returncode == 0, second.describe()
    assert jina.stats()["inputs"] == 7
    assert "embedded 7 documents, kept 995 unchanged, deleted 2, 0 failed documents" in second.stderr, second.stderr
    report = ledger(str(out / "parquet/_checkpoint")).read_report()
    assert report.incremental is not None
    assert (report.incremental["new"], report.incremental["changed"], report.incremental["unchanged"],
            report.incremental["deleted"]) == (4, 3, 995, 2)


def test_dead_letters_of_a_fixed_file_are_retired(tmp_path, jina, env):
    rows = corpus_rows(1000)
    texts = rows.column("text").to_pylist()
    good = {index: texts[index] for index in (10, 600)}
    for index in good:
        texts[index] = ""
    source = tmp_path / "corpus.parquet"
    write_parquet(source, rows.set_column(rows.column_names.index("text"), "text", pa.array(texts)))
    out = tmp_path / "out"
    job = fault_job(tmp_path / "job.toml", source, out, sinks=("parquet", "milvus"), shard_rows=250)
    first = run_cli(job, env=env)
    assert first.returncode == 0, first.describe()
    assert "2 rows could not be embedded" in first.stderr

    for index, text in good.items():  # the fix: a new file, so new shard ids
        texts[index] = text
    write_parquet(source, rows.set_column(rows.column_names.index("text"), "text", pa.array(texts)),
                  row_group_rows=500)
    fixed = run_cli(job, "--retry-failed", env=env)
    assert fixed.returncode == 0, fixed.describe()
    assert "0 failed" in fixed.stderr and "could not be embedded" not in fixed.stderr, fixed.stderr
    assert "holds" not in fixed.output and "warning" not in fixed.output.lower(), fixed.output
    led = ledger(str(out / "_checkpoint"))
    report = led.read_report()
    assert report.failed_rows_total == 0 and led.failed_rows().num_rows == 0
    milvus = next(o for o in report.outputs if "milvus" in o["location"])
    assert milvus["count"] == milvus["expected_rows"] == 1000
    assert len(list((out / "_checkpoint/_failed/history").glob("*.parquet"))) == 2  # kept for the record
    status = status_json(out / "_checkpoint", env)
    assert status["done"]["failed"] == 0 and status["report"]["failed_rows_total"] == 0
