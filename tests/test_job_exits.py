"""System tests: a poisoned corpus stops the job early (the dead-letter budget), and every way a run ends leaves
``run_report.json`` with its status and the error's class and message — a poisoned corpus, Ctrl-C, a storage
location that cannot be written. (A wrong endpoint: ``test_job_endpoint.py``.)"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from jobtools import assert_exact_output, corpus_rows, done_ids, interrupt_mid_run, ledger, run_cli, write_parquet

from embedder.testing import small_job

pytestmark = pytest.mark.slow

ROWS = 20_000


def test_poisoned_corpus_stops_early_then_retry_failed_after_the_fix(tmp_path: Path, jina, env, api_key) -> None:
    """The server refuses every input (as for a text column of URLs): the job stops non-zero before 25% of the
    rows were tried, naming the reason and example rows; after the fix, --retry-failed completes the output."""
    rows = corpus_rows(ROWS)
    write_parquet(tmp_path / "corpus.parquet", rows, row_group_rows=500)
    out = tmp_path / "out"
    job = small_job(tmp_path / "job.toml", tmp_path / "corpus.parquet", out, shard_rows=500,
                    embedding={"batch_size": 50})
    jina.configure(reject_inputs="^")
    result = run_cli(job, env=env)
    stats = jina.stats()
    assert result.returncode == 1, result.describe()
    tried = stats["rejected_inputs"]  # distinct texts the server saw (and refused): every row tried at all
    assert 200 <= tried < ROWS // 4, f"{tried} of {ROWS} rows were tried"
    assert stats["billed_requests"] == 0
    message = result.stderr[result.stderr.index("embedder: error:"):]
    assert "limits.max_failed_fraction" in message and "reject_inputs pattern" in message, message
    examples = [part for part in message.split() if "corpus.parquet:" in part]
    assert len(examples) == 3, message
    report = ledger(str(out / "_checkpoint")).read_report()
    assert report is not None and report.status == "failed" and report.error_class == "TooManyFailures"
    assert "corpus.parquet:" in (report.error or "") and api_key not in json.dumps(report.to_dict())
    finished = len(done_ids(str(out / "_checkpoint")))
    print(f"\npoisoned corpus: stopped after {tried:,} of {ROWS:,} rows were tried ({stats['requests']:,} "
          f"requests), {finished} of {ROWS // 500} shards finished; {message.splitlines()[0][:300]}")

    jina.configure(reject_inputs=None)
    fixed = run_cli(job, "--retry-failed", env=env)
    assert fixed.returncode == 0, fixed.describe()
    assert_exact_output(str(out), rows, dimensions=64)
    after = ledger(str(out / "_checkpoint"))
    assert after.failed_rows().num_rows == 0 and after.read_report().status == "completed"


def test_ctrl_c_leaves_an_interrupted_report(tmp_path: Path, jina, env) -> None:
    rows = corpus_rows(3000)
    write_parquet(tmp_path / "corpus.parquet", rows, row_group_rows=500)
    out = tmp_path / "out"
    job = small_job(tmp_path / "job.toml", tmp_path / "corpus.parquet", out, shard_rows=500,
                    embedding={"batch_size": 100}, limits={"rpm": 100_000, "tpm": 100_000_000, "max_concurrency": 2})
    jina.configure(latency_ms=250)
    checkpoint = str(out / "_checkpoint")
    result = interrupt_mid_run(job, checkpoint, lambda run: run.kill(signal.SIGINT), env=env, what="Ctrl-C",
                               total_shards=6, timeout=120)
    assert result.returncode == 130, result.describe()
    report = ledger(checkpoint).read_report()
    assert report is not None and report.status == "interrupted", result.describe()
    assert report.error_class == "KeyboardInterrupt" and report.progress.shards_done == len(done_ids(checkpoint))
    assert 1 <= report.progress.shards_done < 6


def test_unwritable_output_leaves_a_failed_report(tmp_path: Path, jina, env) -> None:
    """The output location cannot be created (a file stands where its folder should be: chmod does not stop
    root, who runs these tests): the job exits non-zero naming the path, and the report says failed, and why."""
    write_parquet(tmp_path / "corpus.parquet", corpus_rows(500))
    (tmp_path / "blocker").write_text("a file, not a folder")
    out = tmp_path / "blocker" / "out"
    checkpoint = tmp_path / "ledger"
    job = small_job(tmp_path / "job.toml", tmp_path / "corpus.parquet", out, checkpoint=checkpoint)
    result = run_cli(job, env=env, timeout=180)
    assert result.returncode not in (0, 130), result.describe()
    assert str(tmp_path / "blocker") in result.stderr, result.describe()
    report = ledger(str(checkpoint)).read_report()
    assert report is not None and report.status == "failed", result.describe()
    assert report.error_class and str(tmp_path / "blocker") in (report.error or "")
    assert jina.stats()["requests"] == 0, "the output is checked before any request"
