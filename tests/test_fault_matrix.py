"""Issue 5, "prove it survives": the job under a matrix of faults, each ending in the exact output.

Covered elsewhere (not repeated here): one driver SIGKILL + rerun and a worker killed (test_job_faults.py), a
429-absorbing run (test_job_faults.py), a killed driver with Milvus (test_milvus_job.py). Here: the driver killed
several times at seeded random moments, the sink actor killed, a worker node lost, every server fault kind, a 429
storm, and the key revoked mid-run.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
from faulttools import assert_exact_milvus
from jobtools import (
    CliProcess,
    Result,
    assert_exact_output,
    corpus_rows,
    done_ids,
    interrupt_mid_run,
    kill_actor,
    ledger,
    run_cli,
    shard_rows_done,
    start_cli,
    wait_for,
    wait_server_idle,
    write_parquet,
)

from embedder.testing import RayCluster, cli_env, fault_job

pytestmark = pytest.mark.slow

DIM = 64
FOUR_AT_A_TIME = {"rpm": 100_000, "tpm": 100_000_000, "max_concurrency": 4}


def corpus(tmp_path: Path, rows: int, *, files: int = 2, row_group_rows: int = 250):
    table = corpus_rows(rows)
    directory = tmp_path / "corpus"
    directory.mkdir()
    per = -(-rows // files)
    for number in range(files):
        write_parquet(directory / f"f{number}.parquet", table.slice(number * per, per), row_group_rows=row_group_rows)
    return table, directory


def check(out: Path, table, sinks, dead=()) -> None:
    if "parquet" in sinks:
        assert_exact_output(str(out / "parquet"), table, dimensions=DIM, dead=dead)
    if "milvus" in sinks:
        assert_exact_milvus(out / "milvus.db", table, dimensions=DIM, dead=dead)


def check_completed(result: Result, out: Path, table, sinks, *, shards: int) -> None:
    """The run succeeded, every sink holds the exact output, and the report says all ``shards`` were done."""
    assert result.returncode == 0, result.describe()
    check(out, table, sinks)
    report = ledger(str(out / "_checkpoint")).read_report()
    assert report.status == "completed" and report.progress.shards_done == shards


SINKS = [pytest.param(("parquet",), id="parquet"), pytest.param(("parquet", "milvus"), id="parquet+milvus")]


# --- 1. the driver SIGKILLed at several seeded random moments ---------------------------------------------------

@pytest.mark.parametrize("sinks", SINKS)
def test_driver_killed_three_times_at_random_moments(tmp_path: Path, jina, env, sinks) -> None:
    rng = random.Random(5)
    table, source = corpus(tmp_path, 4000)
    out = tmp_path / "out"
    job = fault_job(tmp_path / "job.toml", source, out, sinks=sinks, shard_rows=250,
                    embedding={"batch_size": 50}, limits=FOUR_AT_A_TIME)
    checkpoint = str(out / "_checkpoint")
    jina.configure(latency_ms=600)  # 80 requests, 4 at a time: ~12 s of embedding
    kills = 0
    for attempt in range(3):
        run = start_cli(job, env=env)
        delay = rng.uniform(0.5, 4.0)
        # the moment is counted from the first done marker of this run (Ray's start-up time varies a lot)
        before = len(done_ids(checkpoint))
        try:
            wait_for(lambda: len(done_ids(checkpoint)) > before or not run.running(), timeout=120,  # noqa: B023
                     what="a done marker")
            time.sleep(delay)
            if run.running():
                run.kill(signal.SIGKILL)
                kills += 1
        finally:
            result = run.wait(120, reap_grace_s=3)
        if result.returncode == 0:
            break
        assert result.returncode == -signal.SIGKILL, result.describe()
        print(f"kill {attempt + 1} after {delay:.1f}s past a marker: {len(done_ids(checkpoint))} of 16 done")
        wait_server_idle(jina)
    assert kills >= 2, "the runs finished before they could be killed: make them slower"
    jina.configure(latency_ms=0)
    final = run_cli(job, env=env)
    assert final.returncode == 0, final.describe()
    check(out, table, sinks)
    report = ledger(checkpoint).read_report()
    assert report.status == "completed" and report.progress.shards_total == 16


# --- 2. the sink actor killed mid-run ------------------------------------------------------------------------

@pytest.mark.ray
@pytest.mark.parametrize("sinks", SINKS)
def test_sink_actor_killed_mid_run(tmp_path: Path, jina, api_key, sinks) -> None:
    table, source = corpus(tmp_path, 3000)
    out = tmp_path / "out"
    job = fault_job(tmp_path / "job.toml", source, out, sinks=sinks, shard_rows=250, embedding={"batch_size": 50},
                    limits=FOUR_AT_A_TIME)
    jina.configure(latency_ms=150)
    with RayCluster(dashboard=True) as cluster:  # the state API (list_actors) is served by the dashboard
        result = interrupt_mid_run(job, str(out / "_checkpoint"), lambda run: kill_actor(cluster, "SinkWriter"),
                                   env=cluster.client_env(cli_env(jina.url, api_key), connect=True),
                                   what="the sink's kill", total_shards=12, timeout=180)
    check_completed(result, out, table, sinks, shards=12)


# --- 3. a worker node lost mid-run -----------------------------------------------------------------------------

@pytest.mark.ray
@pytest.mark.parametrize("sinks", SINKS)
def test_worker_node_lost_mid_run(tmp_path: Path, jina, api_key, sinks) -> None:
    """Head with 1 CPU, a worker node with 2 CPUs, 3 workers of 0.3 CPU: Ray's default (hybrid) placement fills
    the head to half, then spills to the worker node — checked, at least one worker runs there. All three fit on
    the head alone, so after the worker node is SIGKILLed mid-run its actors are restarted on the head, their
    shards are given out again, and the job finishes with the exact output."""
    table, source = corpus(tmp_path, 3000)
    out = tmp_path / "out"
    job = fault_job(tmp_path / "job.toml", source, out, sinks=sinks, shard_rows=250, workers=3,
                    embedding={"batch_size": 50}, workers_extra={"cpus_per_worker": 0.3},
                    limits={"rpm": 100_000, "tpm": 100_000_000, "max_concurrency": 3})
    jina.configure(latency_ms=600)  # 60 requests, 3 at a time: ~12 s of embedding
    with RayCluster(dashboard=True, num_cpus=1) as cluster:
        node = cluster.add_node(num_cpus=2, resources={"worker_node": 1})
        placed = cluster.python(NODES_OF_WORKERS_WAIT)  # nothing yet; just checks the cluster has 2 nodes
        assert placed.returncode == 0, placed.stderr

        def lose_the_node(run: CliProcess) -> None:
            where = cluster.python(NODES_OF_WORKERS)
            assert where.returncode == 0, where.stderr
            nodes = json.loads(where.stdout.strip().splitlines()[-1])
            assert nodes["on_worker_node"] >= 1, f"no embedding worker runs on the worker node: {nodes}"
            node.kill()

        result = interrupt_mid_run(job, str(out / "_checkpoint"), lose_the_node,
                                   env=cluster.client_env(cli_env(jina.url, api_key), connect=True),
                                   what="the node's loss", total_shards=12, timeout=240)
    check_completed(result, out, table, sinks, shards=12)


NODES_OF_WORKERS_WAIT = r"""
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + 60
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
    time.sleep(0.2)
assert len([n for n in ray.nodes() if n["Alive"]]) == 2, ray.nodes()
"""

NODES_OF_WORKERS = r"""
import json, sys, ray
from ray.util.state import list_actors
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
worker_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("worker_node")}
actors = [a for a in list_actors(address=sys.argv[1], filters=[("state", "=", "ALIVE")], limit=1000, detail=True)
          if a.class_name.endswith("EmbedWorker")]
print(json.dumps({"workers": len(actors), "on_worker_node": sum(a.node_id in worker_nodes for a in actors)}))
"""


# --- 4. server faults ------------------------------------------------------------------------------------------

FAULTS = ["500", "503_html", "stall", "malformed_json", "missing_embedding", "reset"]


@pytest.mark.parametrize("sinks", SINKS)
def test_server_faults_of_every_kind(tmp_path: Path, jina, env, sinks) -> None:
    """About 20% of requests answered with one of: 500, 503 as an HTML page, a stall beyond the client's
    timeout, malformed JSON, a response missing one embedding, the connection reset mid-response (and each kind
    at least once, injected); the job retries them and ends with the exact output. One run for all kinds: a
    run per kind costs ~20 s each on 2 cores and proves nothing more."""
    table, source = corpus(tmp_path, 1000, files=1, row_group_rows=250)
    out = tmp_path / "out"
    job = fault_job(tmp_path / "job.toml", source, out, sinks=sinks, shard_rows=250,
                    embedding={"batch_size": 25, "timeout_s": 2.0, "max_retries": 8})
    jina.configure(fail_rate=0.2, faults=",".join(FAULTS), stall_seconds=5)
    jina.inject(*FAULTS)
    result = run_cli(job, env=env, timeout=240)
    assert result.returncode == 0, result.describe()
    stats = jina.stats()
    assert set(stats["faults_by_kind"]) == set(FAULTS), stats
    check(out, table, sinks)
    report = ledger(str(out / "_checkpoint")).read_report()
    assert report.progress.retries >= len(FAULTS), report.progress
    print(f"\nfaults served: {stats['faults_by_kind']}; retries {report.progress.retries}")


def test_ten_percent_500s_with_milvus(tmp_path: Path, jina, env) -> None:
    table, source = corpus(tmp_path, 1000, files=1, row_group_rows=250)
    out = tmp_path / "out"
    sinks = ("parquet", "milvus")
    job = fault_job(tmp_path / "job.toml", source, out, sinks=sinks, shard_rows=250, embedding={"batch_size": 25})
    jina.configure(fail_rate=0.1, faults="500")
    jina.inject("500")
    result = run_cli(job, env=env, timeout=240)
    assert result.returncode == 0, result.describe()
    assert jina.stats()["faults"] >= 1
    check(out, table, sinks)


@pytest.mark.parametrize("sinks", SINKS)
def test_429_storm(tmp_path: Path, jina, env, sinks) -> None:
    """A storm: 40 requests in a row answered 429 (Retry-After: 1), then normal service; every 429 pauses the
    job's workers, which resume and finish with the exact output."""
    table, source = corpus(tmp_path, 1000, files=1, row_group_rows=250)
    out = tmp_path / "out"
    job = fault_job(tmp_path / "job.toml", source, out, sinks=sinks, shard_rows=250, embedding={"batch_size": 25})
    jina.inject(*["429"] * 40)
    result = run_cli(job, env=env, timeout=240)
    assert result.returncode == 0, result.describe()
    stats = jina.stats()
    assert stats["faults_by_kind"].get("429") == 40, stats
    check(out, table, sinks)
    report = ledger(str(out / "_checkpoint")).read_report()
    print(f"\n429 storm: {result.seconds:.1f}s, limiter saw {report.progress.rate_limited} 429s")


# --- 5. the key revoked mid-run --------------------------------------------------------------------------------

@pytest.mark.parametrize("sinks", SINKS)
def test_key_revoked_mid_run(tmp_path: Path, jina, api_key, env, sinks) -> None:
    table, source = corpus(tmp_path, 3000)
    out = tmp_path / "out"
    job = fault_job(tmp_path / "job.toml", source, out, sinks=sinks, shard_rows=250, embedding={"batch_size": 50},
                    limits=FOUR_AT_A_TIME)
    checkpoint = str(out / "_checkpoint")
    jina.configure(latency_ms=150)
    timing: dict[str, float] = {}

    def revoke(run: CliProcess) -> None:
        jina.configure(revoked=True)
        revoked_at = time.monotonic()
        wait_for(lambda: not run.running(), timeout=60, what="the job to stop")
        timing["stopped_after"] = time.monotonic() - revoked_at

    result = interrupt_mid_run(job, checkpoint, revoke, env=env, what="the revocation", timeout=60)
    stopped_after = timing["stopped_after"]
    assert result.returncode not in (0, -signal.SIGKILL), result.describe()
    assert stopped_after <= 10, f"the job took {stopped_after:.1f}s to stop after the key was revoked"
    message = result.stderr.lower()
    assert "401" in message or "api key" in message, result.describe()
    assert api_key not in result.output
    done = done_ids(checkpoint)
    assert 1 <= len(done) < 12
    if "parquet" in sinks:
        parts = {p.name for p in (out / "parquet").glob("part-*")}
        for shard_id in done:
            assert any(shard_id in name for name in parts), f"the part of finished shard {shard_id} is gone"
    report = ledger(checkpoint).read_report()
    assert report.status == "failed"
    print(f"\nstopped {stopped_after:.1f}s after the revocation with {len(done)} shards done")

    jina.configure(revoked=False, latency_ms=0)
    wait_server_idle(jina)
    jina.reset()
    rerun = run_cli(job, env=env)
    assert rerun.returncode == 0, rerun.describe()
    check(out, table, sinks)
    assert jina.stats()["inputs"] == 3000 - shard_rows_done(checkpoint, done), \
        "the rerun pays only for shards not finished before"
