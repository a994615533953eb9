"""System tests of a job under faults: the driver killed, a worker killed, an API that answers 429.

The invariant checked after each: the output holds every input id exactly once with the API's vector for its
text, and a rerun pays only for the shards that were not durably finished.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobtools import (
    RayHead,
    assert_exact_output,
    cli_env,
    corpus_rows,
    done_ids,
    ledger,
    private_ray_tmpdir,
    run_cli,
    small_job,
    start_cli,
    wait_for,
    wait_server_idle,
    write_parquet,
)


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    with private_ray_tmpdir() as path:
        yield path


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
def test_driver_sigkill_then_resume(tmp_path: Path, jina, api_key, ray_tmp) -> None:
    """Acceptance 2: SIGKILL the driver mid-run; the rerun pays only for unfinished shards and yields the same
    exact output; a rerun after completion makes no API request."""
    rows = corpus_rows(6000)
    job, out = slow_job(tmp_path, rows)
    checkpoint = str(out / "_checkpoint")
    env = cli_env(jina.url, api_key, ray_tmpdir=ray_tmp)
    jina.configure(latency_ms=250)

    run = start_cli(job, env=env)
    try:
        wait_for(lambda: len(done_ids(checkpoint)) >= 2 or not run.running(), timeout=120,
                 what="two done markers")
        assert run.running(), "the first run finished before it could be killed: make it slower"
        run.kill(signal.SIGKILL)
    finally:
        killed = run.wait(60, reap_grace_s=3)
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
    assert report["progress"]["shards_skipped"] == len(done_at_kill)
    assert report["progress"]["rows_embedded"] == 6000 - rows_done

    jina.reset()
    finished = run_cli(job, env=env)
    assert finished.returncode == 0, finished.describe()
    assert jina.stats()["requests"] == 0, "a finished job's rerun makes no API request"
    assert finished.seconds < 30, f"a finished job's rerun took {finished.seconds:.1f}s"
    print(f"\nrerun of the finished job: {finished.seconds:.2f}s wall time, 0 API requests")
    assert_exact_output(str(out), rows, dimensions=64)


def shard_rows_done(checkpoint: str, shard_ids: set[str]) -> int:
    total = 0
    for shard_id in shard_ids:
        marker = json.loads((Path(checkpoint) / "done" / f"{shard_id}.json").read_text())
        total += int(marker["row_count"])
    return total


KILL_ONE_WORKER = r"""
import json, os, signal, sys, time
import ray
from ray.util.state import list_actors

# ray.kill() needs an ActorHandle, and only the job's driver holds handles to its (unnamed) workers; another
# driver cannot build one from an actor id. So the worker is killed the way a crash kills it: SIGKILL to the
# actor's process, found through the state API. Ray then restarts the actor (max_restarts=-1) and fails the
# calls it was running with ActorDiedError, exactly as after ray.kill(handle, no_restart=False).
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + 60
while True:
    alive = [a for a in list_actors(address=sys.argv[1], filters=[("state", "=", "ALIVE")], limit=1000)
             if a.class_name.endswith("EmbedWorker")]
    if alive or time.monotonic() > deadline:
        break
    time.sleep(0.2)
if not alive:
    print(json.dumps({"killed": None}))
    sys.exit(3)
victim = alive[0]
os.kill(victim.pid, signal.SIGKILL)
deadline = time.monotonic() + 60
restarts = 0
while time.monotonic() < deadline:
    state = list_actors(address=sys.argv[1], filters=[("actor_id", "=", victim.actor_id)], detail=True)
    if state and (state[0].num_restarts or 0) >= 1:
        restarts = state[0].num_restarts
        break
    time.sleep(0.2)
print(json.dumps({"killed": victim.actor_id, "class_name": victim.class_name, "pid": victim.pid,
                  "restarts": restarts, "alive_workers": len(alive)}))
"""


@pytest.mark.slow
@pytest.mark.ray
def test_worker_killed_mid_run(tmp_path: Path, jina, api_key) -> None:
    """Acceptance 4: one EmbedWorker actor killed mid-run on a `ray start` cluster; the job still completes with
    the exact output, and the shard the worker held is embedded again."""
    rows = corpus_rows(4000)
    job, out = slow_job(tmp_path, rows)
    checkpoint = str(out / "_checkpoint")
    jina.configure(latency_ms=250)
    with RayHead(dashboard=True) as head:  # the state API (list_actors) is served by the dashboard
        env = head.client_env(cli_env(jina.url, api_key, ray_address=head.address))
        run = start_cli(job, env=env)
        try:
            wait_for(lambda: done_ids(checkpoint) or not run.running(), timeout=120, what="a done marker")
            assert run.running(), "the run finished before a worker could be killed: make it slower"
            killer = head.python(KILL_ONE_WORKER)
            assert killer.returncode == 0, killer.stdout + killer.stderr
            killed = json.loads(killer.stdout.strip().splitlines()[-1])
            assert killed["killed"] and killed["restarts"] >= 1, killed
            assert len(done_ids(checkpoint)) < 8, "the kill came after the run had finished its shards"
        finally:
            result = run.wait(150)
    assert result.returncode == 0, result.describe()
    assert "trying it again" in result.stderr, "the killed worker's shard was given out again"
    assert_exact_output(str(out), rows, dimensions=64)
    report = ledger(checkpoint).read_report()
    assert report["status"] == "completed" and report["progress"]["shards_done"] == 8


@pytest.mark.slow
def test_rate_limited_server(tmp_path: Path, jina, api_key, ray_tmp) -> None:
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
    result = run_cli(job, env=cli_env(jina.url, api_key, ray_tmpdir=ray_tmp))
    assert result.returncode == 0, result.describe()
    assert_exact_output(str(out), rows, dimensions=64)
    stats = jina.stats()
    assert stats["rate_limited"] >= 1, "the server should have answered 429 at least once"
    report = ledger(str(out / "_checkpoint")).read_report()
    progress = report["progress"]
    assert progress["rate_limited"] == stats["rate_limited"], "every 429 the server sent is counted"
    assert progress["tokens"] == stats["tokens"] and stats["inputs"] == 3000
    expected_tpm = progress["tokens"] / (report["elapsed_s"] / 60)
    assert report["tokens_per_minute"] == pytest.approx(expected_tpm, rel=0.02)
    assert f"429s {stats['rate_limited']}" in result.stderr
    print(f"\nrate-limited run: {time.monotonic() - started:.1f}s, {stats['rate_limited']} 429s "
          f"({stats['rate_limited_by_code']}), {report['tokens_per_minute']:,.0f} tokens/min achieved")


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
