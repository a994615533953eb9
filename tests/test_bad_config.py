"""Bad input and bad configuration, end to end through ``embedder run`` (issue 5).

Not repeated here (covered elsewhere): missing path/column, wrong types, null or duplicate ids, corrupt Parquet,
empty input (test_job_bad_input.py); null, empty and whitespace-only texts dead-lettered (test_job_e2e.py); a
Milvus collection of another dimension or primary key (test_milvus_job.py); config parsing messages as units
(test_config.py — here only that the CLI turns them into a clear message and a non-zero exit).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from jobtools import (
    Result,
    assert_exact_output,
    corpus_rows,
    ledger,
    run_cli,
    write_csv,
    write_jsonl,
    write_parquet,
)

from embedder.testing import cli_env, fault_job, free_port

pytestmark = pytest.mark.slow

DIM = 64


def clear(result: Result, *fragments: str) -> None:
    assert result.returncode != 0, result.describe()
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in the message:\n{result.describe()}"
    assert "Traceback" not in result.stderr, "a clear message, not a traceback:\n" + result.stderr[-3000:]


# --- invalid UTF-8 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_invalid_utf8(tmp_path: Path, env, jina, fmt: str) -> None:
    rows = corpus_rows(20)
    path = tmp_path / f"data.{fmt}"
    (write_jsonl if fmt == "jsonl" else write_csv)(path, rows)
    data = path.read_bytes().splitlines(keepends=True)
    data[5] = data[5].replace(b"doc-", b"d\xff\xfe-", 1) if fmt == "jsonl" else data[5][:-1] + b"\xff\xfe\n"
    path.write_bytes(b"".join(data))
    job = fault_job(tmp_path / "job.toml", path, tmp_path / "out")
    result = run_cli(job, env=env)
    clear(result, str(path))
    assert "utf" in result.stderr.lower(), result.describe()
    assert jina.stats()["requests"] == 0


# --- text far over the token limit ---------------------------------------------------------------------------

@pytest.mark.parametrize("truncate", [False, True])
def test_text_over_the_token_limit(tmp_path: Path, env, jina, truncate: bool) -> None:
    rows = corpus_rows(60)
    texts = rows.column("text").to_pylist()
    texts[7] = " ".join(["extraordinarily"] * 12_000)  # far over 8192 tokens
    rows = rows.set_column(rows.column_names.index("text"), "text", pa.array(texts))
    write_parquet(tmp_path / "data.parquet", rows)
    out = tmp_path / "out"
    job = fault_job(tmp_path / "job.toml", tmp_path / "data.parquet", out,
                    embedding={"truncate": truncate, "batch_size": 20})
    result = run_cli(job, env=env)
    assert result.returncode == 0, result.describe()
    long_id = rows.column("id")[7].as_py()
    if truncate:
        # the long row is embedded too, truncated by the API (one word repeated: the same vector either way)
        assert_exact_output(str(out / "parquet"), rows, dimensions=DIM)
        assert ledger(str(out / "_checkpoint")).failed_rows().num_rows == 0
    else:
        assert_exact_output(str(out / "parquet"), rows, dimensions=DIM, dead={long_id})
        failed = ledger(str(out / "_checkpoint")).failed_rows()
        assert failed.column("id").to_pylist() == [long_id]
        reason = failed.column("reason")[0].as_py()
        assert "token" in reason.lower(), reason


# --- configuration refused before anything runs ---------------------------------------------------------------

@pytest.mark.parametrize(("embedding", "fragments"), [
    ({"model": "jina-embedding-v9"}, ["unknown model 'jina-embedding-v9'", "job.toml"]),
    ({"dimensions": 4096}, ["embedding.dimensions", "job.toml", "4096"]),
    ({"dimensions": 0}, ["embedding.dimensions", "job.toml"]),
    ({"dimenisons": 64}, ["unknown key 'embedding.dimenisons'", "job.toml", "did you mean 'embedding.dimensions'"]),
], ids=["unknown-model", "dimensions-too-big", "dimensions-zero", "unknown-key"])
def test_bad_configuration_is_refused(tmp_path: Path, env, jina, embedding, fragments) -> None:
    write_parquet(tmp_path / "data.parquet", corpus_rows(10))
    job = fault_job(tmp_path / "job.toml", tmp_path / "data.parquet", tmp_path / "out", embedding=embedding)
    result = run_cli(job, env=env, timeout=60)
    clear(result, *fragments)
    assert result.seconds < 30, "refused before Ray starts"
    assert jina.stats()["requests"] == 0


# --- unreachable services -------------------------------------------------------------------------------------

def test_unreachable_api_base(tmp_path: Path, api_key, ray_tmp, jina) -> None:
    write_parquet(tmp_path / "data.parquet", corpus_rows(10))
    base = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    job = fault_job(tmp_path / "job.toml", tmp_path / "data.parquet", tmp_path / "out",
                    embedding={"max_retries": 1, "timeout_s": 2.0})
    result = run_cli(job, env=cli_env(base, api_key, ray_tmpdir=ray_tmp), timeout=180)
    clear(result, "127.0.0.1")
    assert base in result.stderr or base.removesuffix("/v1") in result.stderr, result.describe()
    assert result.seconds < 120, f"gave up only after {result.seconds:.0f}s"
    assert api_key not in result.output


def test_unreachable_milvus(tmp_path: Path, env, jina) -> None:
    write_parquet(tmp_path / "data.parquet", corpus_rows(10))
    uri = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    job = fault_job(tmp_path / "job.toml", tmp_path / "data.parquet", out,
                    sinks=("parquet", {"kind": "milvus", "uri": uri, "collection": "docs"}))
    result = run_cli(job, env=env, timeout=240)
    clear(result, uri)
    assert jina.stats()["requests"] == 0, "the sink is checked before any request"
