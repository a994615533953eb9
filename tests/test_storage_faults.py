"""Issue 14, the storage half of the fault suite: whole jobs (``embedder run`` in a subprocess, a real local Ray)
against storage that fails. S3 through a proxy answering 503 SlowDown and resetting connections, a heartbeat file
that cannot be written, a sink actor that dies on every write of one shard, and a disk that fills up mid-run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from jobtools import (
    assert_exact_output,
    corpus_rows,
    done_ids,
    interrupt_mid_run,
    ledger,
    run_cli,
    write_parquet,
)
from s3tools import S3_ENV, moto_server, s3_filesystem

from embedder.run.fault_hooks import SINK_DIES_ON_SHARD
from embedder.source.files import discover_files
from embedder.source.shards import plan_shards
from embedder.testing import cli_env, fault_job, small_job
from embedder.testing.s3_faults import S3FaultProxy

pytestmark = pytest.mark.slow

DIM = 64
FOUR_AT_A_TIME = {"rpm": 100_000, "tpm": 100_000_000, "max_concurrency": 4}


def corpus(directory: Path, rows: int, *, files: int = 2, row_group_rows: int = 250):
    table = corpus_rows(rows)
    directory.mkdir(parents=True, exist_ok=True)
    per = -(-rows // files)
    for number in range(files):
        write_parquet(directory / f"f{number}.parquet", table.slice(number * per, per), row_group_rows=row_group_rows)
    return table


# --- S3 through a faulty proxy ------------------------------------------------------------------------------

def test_s3_through_a_proxy_with_slowdowns_and_resets(tmp_path: Path, jina, api_key, ray_tmp) -> None:
    """Input, parts, manifest and ledger on s3:// behind a proxy answering 10% of requests 503 SlowDown and
    resetting 2% of connections: the job completes, each id once with its vector, and the report counts the
    retries (ours only: pyarrow's S3 client is built without retries of its own)."""
    with moto_server(tmp_path) as endpoint, S3FaultProxy(endpoint, slowdown_rate=0.10, reset_rate=0.02,
                                                         seed=14) as proxy:
        fs = s3_filesystem(endpoint)  # straight to moto: the test's own set-up and checks see no faults
        fs.create_dir("corpus")
        fs.create_dir("results")
        rows = corpus_rows(2000)
        for number, start in enumerate((0, 1200)):
            with fs.open_output_stream(f"corpus/in/part-{number}.parquet") as handle:
                pq.write_table(rows.slice(start, 1200 if start == 0 else 800), handle, row_group_size=200)
        out, checkpoint = "s3://results/embeddings", "s3://results/checkpoints/job1"
        job = small_job(tmp_path / "job.toml", "s3://corpus/in/", out, checkpoint=checkpoint, shard_rows=200,
                        source_extra={"format": "parquet"})
        env = cli_env(jina.url, api_key, ray_tmpdir=ray_tmp, extra={**S3_ENV, "AWS_ENDPOINT_URL": proxy.url})

        result = run_cli(job, env=env)
        faults = proxy.stats()  # the checks below go straight to moto: no more faults
        assert result.returncode == 0, result.describe()
        print("proxy:", faults)
        assert faults.get("slowdown", 0) >= 5 and faults.get("reset_before", 0) + faults.get("reset_after", 0) >= 1
        assert_exact_output(out, rows, dimensions=DIM, filesystem=fs)
        assert jina.stats()["inputs"] >= 2000
        report = json.loads(fs.open_input_stream("results/checkpoints/job1/run_report.json").read())
        retries = report["progress"]["storage_retries"]
        print("retries:", retries)
        assert report["status"] == "completed" and sum(retries.values()) > 0
        # honest counting: a retry follows an injected fault (one fault can abort requests running beside it, and a
        # reset that curl re-sends by itself is never seen)
        failures = sum(faults.get(kind, 0) for kind in ("slowdown", "reset_before", "reset_after", "upstream_error",
                                                        "upstream_5xx"))
        assert sum(retries.values()) <= failures
        markers = ledger(checkpoint, fs).done_markers()
        assert len(markers) == 10  # each shard's own retries (its read, its part write) are in its marker
        assert sum(sum(m.stats.storage_retries.values()) for m in markers) <= sum(retries.values())
        assert "storage retries" in result.stderr  # the progress line shows them


# --- a heartbeat that cannot be written ---------------------------------------------------------------------

def test_a_heartbeat_that_cannot_be_written_never_stops_the_run(tmp_path: Path, jina, env) -> None:
    table = corpus(tmp_path / "corpus", 4000)
    out = tmp_path / "out"
    job = fault_job(tmp_path / "job.toml", tmp_path / "corpus", out, shard_rows=250, embedding={"batch_size": 50},
                    limits=FOUR_AT_A_TIME)
    checkpoint = out / "_checkpoint"
    jina.configure(latency_ms=600)  # 80 requests, 4 at a time: ~12 s, a few heartbeats

    def block_heartbeat(_run) -> None:
        # heartbeat.json becomes a directory: every later write fails in its rename (EISDIR), a real disk error
        beat = checkpoint / "heartbeat.json"
        for _ in range(50):
            with contextlib.suppress(FileNotFoundError):
                beat.unlink()
            with contextlib.suppress(FileExistsError):
                (beat / "blocked").mkdir(parents=True)
                return
        raise AssertionError("could not replace heartbeat.json")

    result = interrupt_mid_run(job, str(checkpoint), block_heartbeat, env=env, what="blocking the heartbeat",
                               total_shards=16)
    assert result.returncode == 0, result.describe()
    assert_exact_output(str(out / "parquet"), table, dimensions=DIM)
    assert result.stderr.count("heartbeat skipped") == 1, result.describe()
    assert "Traceback" not in result.stderr and "heartbeat.json" in result.stderr
    assert ledger(str(checkpoint)).read_report().status == "completed"
    assert (checkpoint / "heartbeat.json").is_dir()


# --- a sink actor that dies on every write of one shard -----------------------------------------------------

def test_a_sink_that_dies_on_every_write_of_one_shard_stops_the_job(tmp_path: Path, jina, env) -> None:
    table = corpus(tmp_path / "corpus", 2000)
    out = tmp_path / "out"
    job = fault_job(tmp_path / "job.toml", tmp_path / "corpus", out, shard_rows=250)
    shards = plan_shards(discover_files(str(tmp_path / "corpus")), 250)
    victim = shards[2]

    result = run_cli(job, env={**env, SINK_DIES_ON_SHARD: victim.shard_id})
    assert result.returncode == 1, result.describe()
    assert f"the sink actor died 3 times while writing shard {victim.shard_id}" in result.stderr, result.describe()
    assert "Traceback" not in result.stderr
    checkpoint = str(out / "_checkpoint")
    report = ledger(checkpoint).read_report()
    assert report.status == "failed" and report.error_class == "SinkError" and victim.shard_id in report.error
    kept = done_ids(checkpoint)
    assert victim.shard_id not in kept

    jina.reset()
    again = run_cli(job, env=env)  # the sink is healthy again: the rest is done, nothing finished is redone
    assert again.returncode == 0, again.describe()
    assert_exact_output(str(out / "parquet"), table, dimensions=DIM)
    assert jina.stats()["inputs"] == 2000 - 250 * len(kept)


# --- a disk that fills up mid-run ---------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs (needs the right to mount: root here); skipped, saying why, where mounting is refused."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True,
                             text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_disk_that_fills_up_mid_run(tmp_path: Path, jina, env, small_disk: Path) -> None:
    """Parts (~86 kB each) on a 2 MB disk that a filler leaves ~360 kB of: the job stops naming the operation and
    the path, exits non-zero, keeps the shards written; once the filler is gone, a rerun does only the rest."""
    table = corpus(tmp_path / "corpus", 6000, row_group_rows=500)
    out = small_disk / "out"
    filler = small_disk / "filler"
    filler.write_bytes(b"\1" * (2048 - 360) * 1024)
    checkpoint = tmp_path / "checkpoint"
    job = small_job(tmp_path / "job.toml", tmp_path / "corpus", out, checkpoint=checkpoint, shard_rows=500,
                    dimensions=256, passthrough=())

    result = run_cli(job, env=env)
    assert result.returncode == 1, result.describe()
    assert "storage part write failed for " + str(out) in result.stderr, result.describe()
    assert "No space left on device (ENOSPC)" in result.stderr and "Traceback" not in result.stderr
    kept = done_ids(str(checkpoint))
    assert 1 <= len(kept) < 12, kept
    for shard_id in kept:  # every shard marked done has its whole part
        assert pq.read_table(out / f"part-{shard_id}.parquet").num_rows == 500
    assert not [name for name in os.listdir(out) if name.startswith(".tmp-")]
    report = ledger(str(checkpoint)).read_report()
    assert report.status == "failed" and report.error_class == "StoragePermanent"

    filler.unlink()  # space freed
    jina.reset()
    again = run_cli(job, env=env)
    assert again.returncode == 0, again.describe()
    assert_exact_output(str(out), table, dimensions=256, passthrough=())
    assert jina.stats()["inputs"] == 6000 - 500 * len(kept)
