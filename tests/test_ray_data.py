"""``embedder.ray_data.JinaEmbed`` in real Ray Data pipelines on a ``ray start --head`` cluster, against the
stand-in server: four actors share one limiter, rows get the vectors ``embedder run`` gives them, and rows that
cannot be embedded are marked with ``on_error="null"``.

The pipelines run in a client subprocess of the cluster (nothing of Ray stays inside pytest); the key reaches the
map's actors only through the environment of ``ray start``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import FAKE_API_KEY
from jobtools import corpus_rows, read_output, run_cli, vectors_of, write_parquet

from embedder.mock_jina.vectors import embed_texts
from embedder.testing import MODEL, RayCluster, cli_env, job_tables, write_job

pytestmark = [pytest.mark.slow, pytest.mark.ray]

PIPELINE = r"""
import json, sys, time
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False
from embedder.ray_data import JinaEmbed

source, target, kwargs = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
started = time.monotonic()
ds = ray.data.read_parquet(source).map_batches(JinaEmbed, fn_constructor_kwargs=kwargs, concurrency=4,
                                               batch_size=64, num_cpus=0.25)
try:
    out = ds.materialize()
except Exception as exc:  # Ray Data wraps the step's error: keep the whole chain
    chain = []
    while exc is not None:
        chain.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__
    print(json.dumps({"error": " <- ".join(chain)}))
    sys.exit(0)
seconds = time.monotonic() - started
schema = out.schema().base_schema
out.write_parquet(target)
print(json.dumps({"seconds": seconds, "vector_type": str(schema.field(kwargs["output_column"]).type)}))
"""


@pytest.fixture(scope="module")
def cluster(api_key: str) -> Iterator[RayCluster]:
    with RayCluster(num_cpus=2, env={"JINA_API_KEY": api_key}) as started:
        yield started


@pytest.fixture(scope="module")
def api_key() -> str:
    """The fake key, for the whole module (the cluster's ``ray start`` gets it)."""
    return FAKE_API_KEY


def pipeline(cluster: RayCluster, source: Path, target: Path, **kwargs: object) -> dict:
    """Run :data:`PIPELINE` (``JinaEmbed(**kwargs)``, 4 actors, batches of 64 rows); its JSON answer."""
    done = cluster.python(PIPELINE, str(source), str(target), json.dumps(kwargs), timeout=240)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return json.loads(lines[-1])


def by_id(table: pa.Table, column: str = "vector") -> dict[str, np.ndarray]:
    """Each row's vector (``column``, a ``fixed_size_list``) by its id."""
    table = table.select(["id", column]).rename_columns(["id", "vector"])
    return dict(zip(table.column("id").to_pylist(), vectors_of(table), strict=True))


def test_four_actors_share_one_limiter_and_give_the_vectors_embedder_run_gives(tmp_path: Path, cluster, jina,
                                                                                api_key) -> None:
    rows = corpus_rows(1280, words_per_doc=12)
    write_parquet(tmp_path / "corpus.parquet", rows, row_group_rows=256)
    jina.configure(rpm=300)
    # 4 inputs a request: 320 requests, more than the minute's 300, so the limiter must hold back the last ones
    answer = pipeline(cluster, tmp_path / "corpus.parquet", tmp_path / "ray-data", model=MODEL, dimensions=64,
                      text_column="text", output_column="vector", limiter_name="rpm-300", batch_size=4,
                      limits={"rpm": 300, "tpm": 10_000_000, "max_concurrency": 5}, api_base=jina.url)
    stats = jina.stats()
    print(f"\nJinaEmbed, 4 actors, server at 300 RPM: {stats['requests']} requests, {stats['rate_limited']} 429s, "
          f"{answer['seconds']:.1f} s")
    assert answer["vector_type"] == "fixed_size_list<item: float>[64]"
    assert stats["billed_requests"] >= 320 and stats["inputs"] == 1280
    assert stats["rate_limited"] * 100 <= stats["requests"], f"at most 1 429 per 100 requests: {stats}"
    # 320 requests at 300 per sliding minute cannot all be answered within the first minute
    assert answer["seconds"] >= 55, answer

    jina.restore()
    job = write_job(tmp_path / "job.toml", **job_tables(tmp_path / "corpus.parquet", shard_rows=640, passthrough=()),
                    sink={"kind": "parquet", "path": tmp_path / "job-out"})
    done = run_cli(job, env=cluster.client_env(cli_env(jina.url, api_key), connect=True))
    assert done.returncode == 0, done.describe()
    from_job = by_id(read_output(str(tmp_path / "job-out")))
    from_pipeline = by_id(pq.read_table(tmp_path / "ray-data"))
    assert from_pipeline.keys() == from_job.keys() == set(rows.column("id").to_pylist())
    differ = [key for key in from_job if not np.array_equal(from_job[key], from_pipeline[key])]
    assert not differ, f"{len(differ)} rows differ from embedder run's vectors, e.g. {differ[:3]}"


def test_on_error_null_marks_the_rows_that_cannot_be_embedded(tmp_path: Path, cluster, jina) -> None:
    rows = corpus_rows(200).to_pylist()
    bad = {3: "", 50: None, 120: "word " * 9000}  # empty, null, over the model's 8,192 tokens (the API says so)
    for index, text in bad.items():
        rows[index]["text"] = text
    write_parquet(tmp_path / "corpus.parquet", pa.Table.from_pylist(rows), row_group_rows=100)
    common = {"model": MODEL, "dimensions": 32, "text_column": "text", "output_column": "emb",
              "limits": {"rpm": 10_000, "tpm": 100_000_000, "max_concurrency": 4}, "api_base": jina.url,
              "limiter_name": "on-error"}
    refused = pipeline(cluster, tmp_path / "corpus.parquet", tmp_path / "raise", **common)
    assert "cannot be embedded" in refused.get("error", "") and "on_error='null'" in refused["error"], refused

    answer = pipeline(cluster, tmp_path / "corpus.parquet", tmp_path / "null", on_error="null", error_column="why",
                      **common)
    table = pq.read_table(tmp_path / "null")
    assert answer["vector_type"] == "fixed_size_list<item: float>[32]"
    marked = {row["id"]: row["why"] for row in table.select(["id", "why"]).to_pylist() if row["why"] is not None}
    nulls = {row_id for row_id, vector in zip(table.column("id").to_pylist(), table.column("emb").to_pylist(),
                                              strict=True) if vector is None}
    assert set(marked) == nulls == {rows[index]["id"] for index in bad}
    assert "empty" in marked[rows[3]["id"]] and "null" in marked[rows[50]["id"]]
    assert "8192 tokens" in marked[rows[120]["id"]] and "InputRejected" in marked[rows[120]["id"]]
    good = [row for index, row in enumerate(rows) if index not in bad]
    got = by_id(table.filter(pc.is_valid(table.column("emb"))), "emb")
    want = embed_texts(MODEL, [row["text"] for row in good], 32)
    assert all(np.array_equal(got[row["id"]], vector) for row, vector in zip(good, want, strict=True))


def test_a_limiter_of_that_name_with_other_limits_is_refused_by_name(tmp_path: Path, cluster, jina) -> None:
    write_parquet(tmp_path / "corpus.parquet", corpus_rows(20), row_group_rows=20)
    common = {"model": MODEL, "dimensions": 16, "text_column": "text", "output_column": "vector",
              "api_base": jina.url, "limiter_name": "shared-key"}
    first = pipeline(cluster, tmp_path / "corpus.parquet", tmp_path / "a", limits={"rpm": 1000}, **common)
    assert "error" not in first, first
    other = pipeline(cluster, tmp_path / "corpus.parquet", tmp_path / "b", limits={"rpm": 2000}, **common)
    assert "embedder/embedder-limiter-shared-key already runs with" in other.get("error", ""), other
