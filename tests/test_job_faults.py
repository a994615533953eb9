"""System tests of a job under faults: the driver killed, a worker killed, an API that answers 429.

The invariant checked after each: the output holds every input id exactly once with the API's vector for its
text, and a rerun pays only for the shards that were not durably finished.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from jobtools import (
    assert_exact_output,
    corpus_rows,
    done_ids,
    interrupt_mid_run,
    kill_actor,
    ledger,
    run_cli,
    shard_rows_done,
    wait_server_idle,
    write_parquet,
)

from embedder.testing import RayCluster, cli_env, small_job


def slow_job(tmp_path: Path, rows, *, shard_rows: int = 500) -> tuple[str, Path]:
    """A corpus in two Parquet files and a job that takes a few requests per shard, two at a time."""
    half = rows.num_rows // 2
    (tmp_path / "corpus").mkdir()
    write_parquet(tmp_path / "corpus" / "a.parquet", rows.slice(0, half), row_group_rows=shard_rows)
    write_parquet(tmp_path / "corpus" / "b.parquet", rows.slice(half), row_group_rows=shard_rows)
    out = tmp_path / "out"
    job = small_job(tmp_path / "job.toml", tmp_path / "corpus", out, shard_rows=shard_rows,
                    embedding={"batch_size": 100},
                    limits={"rpm": 100_000, "tpm": 100_000_000, "max_concurrency": 2})
    return job, out


@pytest.mark.slow
def test_driver_sigkill_then_resume(tmp_path: Path, jina, env) -> None:
    """Acceptance 2: SIGKILL the driver mid-run; the rerun pays only for unfinished shards and yields the same
    exact output; a rerun after completion makes no API request."""
    rows = corpus_rows(6000)
    job, out = slow_job(tmp_path, rows)
    checkpoint = str(out / "_checkpoint")
    jina.configure(latency_ms=250)

    killed = interrupt_mid_run(job, checkpoint, lambda run: run.kill(signal.SIGKILL), env=env, what="the kill",
                               markers=2, timeout=60, reap_grace_s=3)
    assert killed.returncode == -signal.SIGKILL, killed.describe()
    done_at_kill = done_ids(checkpoint)
    assert 2 <= len(done_at_kill) < 12, f"{len(done_at_kill)} of 12 shards were done at the kill"
    rows_done = shard_rows_done(checkpoint, done_at_kill)

    jina.configure(latency_ms=0)
    wait_server_idle(jina)  # requests the killed run left in flight are billed before the reset, not after
    jina.reset()
    resumed = run_cli(job, env=env)
    assert resumed.returncode == 0, resumed.describe()
    assert_exact_output(str(out), rows, dimensions=64)
    stats = jina.stats()
    assert stats["inputs"] == 6000 - rows_done, "the rerun embeds exactly the rows of shards without a done marker"
    report = ledger(checkpoint).read_report()
    assert report.progress.shards_skipped == len(done_at_kill)
    assert report.progress.documents_embedded == 6000 - rows_done

    jina.reset()
    finished = run_cli(job, env=env)
    assert finished.returncode == 0, finished.describe()
    assert jina.stats()["requests"] == 0, "a finished job's rerun makes no API request"
    assert finished.seconds < 30, f"a finished job's rerun took {finished.seconds:.1f}s"
    print(f"\nrerun of the finished job: {finished.seconds:.2f}s wall time, 0 API requests")
    assert_exact_output(str(out), rows, dimensions=64)


@pytest.mark.slow
@pytest.mark.ray
def test_worker_killed_mid_run(tmp_path: Path, jina, api_key) -> None:
    """Acceptance 4: one EmbedWorker actor killed mid-run on a `ray start` cluster; the job still completes with
    the exact output, and the shard the worker held is embedded again."""
    rows = corpus_rows(4000)
    job, out = slow_job(tmp_path, rows)
    checkpoint = str(out / "_checkpoint")
    jina.configure(latency_ms=250)
    with RayCluster(dashboard=True) as cluster:  # the state API (list_actors) is served by the dashboard
        result = interrupt_mid_run(job, checkpoint, lambda run: kill_actor(cluster, "EmbedWorker"),
                                   env=cluster.client_env(cli_env(jina.url, api_key), connect=True),
                                   what="the kill", total_shards=8, timeout=150)
    assert result.returncode == 0, result.describe()
    assert "trying it again" in result.stderr, "the killed worker's shard was given out again"
    assert_exact_output(str(out), rows, dimensions=64)
    report = ledger(checkpoint).read_report()
    assert report.status == "completed" and report.progress.shards_done == 8


@pytest.mark.slow
def test_rate_limited_server(tmp_path: Path, jina, env) -> None:
    """Acceptance 5: the server's rpm/tpm are below the job's limits, so it answers 429s; the job absorbs them,
    completes with the exact output, and reports its achieved tokens per minute and the 429 count."""
    rows = corpus_rows(3000)  # about 147k tokens: more than the server's minute allows
    write_parquet(tmp_path / "corpus.parquet", rows, row_group_rows=1000)
    out = tmp_path / "out"
    job = small_job(tmp_path / "job.toml", tmp_path / "corpus.parquet", out, shard_rows=1000,
                    embedding={"batch_size": 100},
                    limits={"rpm": 1000, "tpm": 1_000_000, "max_concurrency": 4})
    jina.configure(rpm=25, tpm=100_000)
    started = time.monotonic()
    result = run_cli(job, env=env)
    assert result.returncode == 0, result.describe()
    assert_exact_output(str(out), rows, dimensions=64)
    stats = jina.stats()
    assert stats["rate_limited"] >= 1, "the server should have answered 429 at least once"
    report = ledger(str(out / "_checkpoint")).read_report()
    progress = report.progress
    assert progress.rate_limited == stats["rate_limited"], "every 429 the server sent is counted"
    assert progress.tokens == stats["tokens"] and stats["inputs"] == 3000
    expected_tpm = progress.tokens / max(report.elapsed_s / 60, 1.0)  # over at least the quota's minute
    assert report.tokens_per_minute == pytest.approx(expected_tpm, rel=0.02)
    assert f"429s {stats['rate_limited']}" in result.stderr
    print(f"\nrate-limited run: {time.monotonic() - started:.1f}s, {stats['rate_limited']} 429s "
          f"({stats['rate_limited_by_code']}), {report.tokens_per_minute:,.0f} tokens/min achieved")


@pytest.mark.parametrize("how", ["successor", "lease"])
def test_limiter_takes_back_permits_of_a_lost_worker(how: str) -> None:
    """The limiter logic behind acceptance 4, without Ray: the permits a dead worker held, and those its calls
    still waiting in the limiter are granted later, go back when its restarted successor registers (or, failing
    that, when their lease runs out), so the concurrency cap frees again and the job does not stall."""
    import asyncio

    from embedder.run.actors import LimiterActor
    from embedder.run.limiter import Limits

    async def scenario() -> None:
        limiter = LimiterActor(Limits(rpm=1000, tpm=1_000_000, max_concurrency=2),
                               lease_s=0.5 if how == "lease" else None)
        limiter.CHECK_S = 0.1
        await limiter.register("worker-0/first")
        await limiter.acquire(10, "worker-0/first")
        await limiter.acquire(10, "worker-0/first")  # worker-0 dies holding both permits ...
        # ... and with a call still waiting (without a successor, it would simply hold a permit later)
        orphan = asyncio.ensure_future(limiter.acquire(10, "worker-0/first")) if how == "successor" else None
        waiting = asyncio.ensure_future(limiter.acquire(10, "worker-1/first"))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "the cap of 2 is taken by the lost permits"
        if how == "successor":
            assert await limiter.register("worker-0/second") == 2
        permit = await asyncio.wait_for(waiting, timeout=5)
        if orphan is not None:
            await asyncio.wait_for(orphan, timeout=5)  # answered (to nobody) without keeping a permit
            assert (await limiter.snapshot())["in_flight"] == 1
            second = await asyncio.wait_for(limiter.acquire(10, "worker-0/second"), timeout=5)
            await limiter.release(second, 12)
        await limiter.release(permit, 12)
        snapshot = await limiter.snapshot()
        assert snapshot["in_flight"] == 0 and snapshot["requests_ok"] == (2 if how == "successor" else 1)

    asyncio.run(scenario())
