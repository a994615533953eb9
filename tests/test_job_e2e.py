"""System tests of whole jobs: ``embedder run`` in a subprocess against the local Jina-compatible server.

Each test checks the job's invariant on what it wrote, not just its exit code: every input id is in the output
exactly once with the vector the API returns for its text (or in the dead-letter record with its reason).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from jobtools import (
    assert_exact_output,
    corpus_rows,
    ledger,
    read_manifest,
    run_cli,
    write_mixed_corpus,
    write_parquet,
)
from s3tools import S3_ENV, moto_server, s3_filesystem

from embedder.testing import cli_env, small_job

pytestmark = pytest.mark.slow


def test_mixed_formats_exact_output(tmp_path: Path, jina, env) -> None:
    """Acceptance 1: 20,000 rows over Parquet, JSONL and CSV files → exactly those rows, once, right vectors."""
    rows = corpus_rows(20_000)
    layout = [("parquet", 7000), ("jsonl", 5000), ("csv", 4000), ("parquet", 4000)]
    write_mixed_corpus(tmp_path / "corpus", rows, layout)
    out = tmp_path / "out"
    job = small_job(tmp_path / "job.toml", tmp_path / "corpus", out, dimensions=256, shard_rows=2500)

    result = run_cli(job, env=env)
    assert result.returncode == 0, result.describe()

    assert_exact_output(str(out), rows, dimensions=256, passthrough=("title",))
    led = ledger(str(out / "_checkpoint"))
    plan = led.read_plan()
    manifest = read_manifest(str(out))
    assert sorted(p["shard_id"] for p in manifest["parts"]) == sorted(plan["shard_ids"]) == sorted(led.done_ids())
    assert plan["files"] == 4 and len(plan["shard_ids"]) == 10
    report = led.read_report()
    assert report.status == "completed" and report.failed_rows_total == 0
    assert report.progress.documents_embedded == 20_000
    stats = jina.stats()
    assert stats["inputs"] == 20_000, "each row is billed once"
    assert report.progress.tokens == stats["tokens"]
    assert api_key_absent(out, env["JINA_API_KEY"]) and env["JINA_API_KEY"] not in result.output


def api_key_absent(root: Path, key: str) -> bool:
    """The key is in no file the job wrote (ledger, report, heartbeat, parts)."""
    return not any(path.is_file() and key.encode() in path.read_bytes() for path in root.rglob("*"))


def test_changed_fingerprint_is_refused_then_restart(tmp_path: Path, jina, env) -> None:
    """Acceptance 3: another dimension against the same checkpoint is refused naming the field; --restart redoes."""
    rows = corpus_rows(1000)
    write_parquet(tmp_path / "corpus.parquet", rows, row_group_rows=500)
    out = tmp_path / "out"
    job = small_job(tmp_path / "job.toml", tmp_path / "corpus.parquet", out, dimensions=64, shard_rows=500)
    first = run_cli(job, env=env)
    assert first.returncode == 0, first.describe()
    assert_exact_output(str(out), rows, dimensions=64)

    jina.reset()
    refused = run_cli(job, "--set", "embedding.dimensions=256", env=env)
    assert refused.returncode != 0, refused.describe()
    assert "belongs to a different job" in refused.stderr and "dimensions: 64 → 256" in refused.stderr, \
        refused.describe()
    assert "--restart" in refused.stderr, "the message says how to start over"
    assert jina.stats()["requests"] == 0, "a refused job makes no API request"
    assert_exact_output(str(out), rows, dimensions=64)  # untouched

    restarted = run_cli(job, "--set", "embedding.dimensions=256", "--restart", env=env)
    assert restarted.returncode == 0, restarted.describe()
    assert_exact_output(str(out), rows, dimensions=256)
    assert jina.stats()["inputs"] == 1000


def test_null_and_empty_texts_are_dead_lettered_and_retried(tmp_path: Path, jina, env) -> None:
    """Null or blank texts end in _failed/ with their reason and count in the report; --retry-failed redoes just
    the shards that have dead letters."""
    rows = corpus_rows(2000)
    texts = rows.column("text").to_pylist()
    bad = {10: None, 11: "", 700: "   ", 1499: None}  # shards 0, 1 and 2 of 4 (500 rows each)
    for index, value in bad.items():
        texts[index] = value
    rows = rows.set_column(rows.column_names.index("text"), "text", pa.array(texts, pa.string()))
    write_parquet(tmp_path / "corpus.parquet", rows, row_group_rows=500)
    out = tmp_path / "out"
    job = small_job(tmp_path / "job.toml", tmp_path / "corpus.parquet", out, shard_rows=500)
    dead_ids = {rows.column("id")[i].as_py() for i in bad}

    first = run_cli(job, env=env)
    assert first.returncode == 0, first.describe()
    assert "4 rows could not be embedded" in first.stderr, first.describe()
    assert_exact_output(str(out), rows, dimensions=64, dead=dead_ids)
    led = ledger(str(out / "_checkpoint"))
    failed = led.failed_rows()
    assert sorted(failed.column("id").to_pylist()) == sorted(dead_ids)
    assert sorted(failed.column("_row").to_pylist()) == sorted(bad)
    assert set(failed.column("file").to_pylist()) == {str(tmp_path / "corpus.parquet")}
    for reason in failed.column("reason").to_pylist():
        assert "empty" in reason or "null" in reason, reason
    report = led.read_report()
    assert report.failed_rows_total == 4 and report.progress.documents_failed == 4
    assert jina.stats()["inputs"] == 2000 - 4
    failed_shards = led.failed_shard_ids()
    assert len(failed_shards) == 3

    jina.reset()
    retried = run_cli(job, "--retry-failed", env=env)
    assert retried.returncode == 0, retried.describe()
    # just the three shards with dead letters are embedded again (their good rows); the fourth is skipped
    assert jina.stats()["inputs"] == 1500 - 4
    report = led.read_report()
    assert report.progress.shards_skipped == 1 and report.progress.shards_done == 3
    assert led.failed_shard_ids() == failed_shards and report.failed_rows_total == 4
    assert_exact_output(str(out), rows, dimensions=64, dead=dead_ids)

    jina.reset()
    again = run_cli(job, env=env)  # without --retry-failed, shards with dead letters count as done
    assert again.returncode == 0, again.describe()
    assert jina.stats()["requests"] == 0


# --- object storage ----------------------------------------------------------------------------------------

@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[str]:
    """moto's S3 server on a loopback port, in a subprocess; yields its endpoint URL."""
    with moto_server(tmp_path) as endpoint:
        yield endpoint


@pytest.mark.parametrize("endpoint_from", ["environment", "job file"])
def test_s3_input_output_and_checkpoint(tmp_path: Path, jina, api_key, ray_tmp, s3_server, endpoint_from) -> None:
    """Acceptance 6: Parquet input on s3://, output and checkpoint on s3:// (moto on loopback); the endpoint
    given as $AWS_ENDPOINT_URL or as source.s3_endpoint in the job file."""
    fs = s3_filesystem(s3_server)
    fs.create_dir("corpus")
    fs.create_dir("results")
    rows = corpus_rows(2000)
    for number, start in enumerate((0, 1200)):
        part = rows.slice(start, 1200 if start == 0 else 800)
        with fs.open_output_stream(f"corpus/in/part-{number}.parquet") as handle:
            pq.write_table(part, handle, row_group_size=400)
    out = "s3://results/embeddings"
    job = small_job(tmp_path / "job.toml", "s3://corpus/in/", out, checkpoint="s3://results/checkpoints/job1",
                    shard_rows=400, source_extra={"format": "parquet", **(
                        {"s3_endpoint": s3_server} if endpoint_from == "job file" else {})})
    extra = {**S3_ENV, "AWS_ENDPOINT_URL": s3_server} if endpoint_from == "environment" else S3_ENV
    env = cli_env(jina.url, api_key, ray_tmpdir=ray_tmp, extra=extra)

    result = run_cli(job, env=env)
    assert result.returncode == 0, result.describe()
    assert_exact_output(out, rows, dimensions=64, filesystem=fs)
    led = ledger("s3://results/checkpoints/job1", fs)
    assert len(led.done_ids()) == 5 and led.read_report().status == "completed"
    assert jina.stats()["inputs"] == 2000

    # resumable on object storage too: a rerun finds every shard done and calls nothing
    jina.reset()
    again = run_cli(job, env=env)
    assert again.returncode == 0, again.describe()
    assert jina.stats()["requests"] == 0
    assert_exact_output(out, rows, dimensions=64, filesystem=fs)
    report = json.loads(fs.open_input_stream("results/checkpoints/job1/run_report.json").read())
    assert report["progress"]["shards_skipped"] == 5
