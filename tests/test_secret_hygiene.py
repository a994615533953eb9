"""Invariant 4: the API key (and the Milvus token) never appear in logs, reports, ledgers, outputs or the CLI's
output — checked on a run with a dead-lettered row and 429s, and on a run whose key is revoked mid-run (so the
error paths print), by searching every file the runs left: output, checkpoint, the CLI's stdout/stderr, the Ray
session logs of the runs (``RAY_TMPDIR``), ``embedder status --json`` and ``run_report.json``."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from faulttools import grep_tree
from jobtools import PYTHON, corpus_rows, interrupt_mid_run, run_cli, write_parquet

from embedder.testing import cli_env, fault_job

pytestmark = pytest.mark.slow


def test_no_secret_anywhere(tmp_path: Path, jina, ray_tmp) -> None:
    key = "jina_" + secrets.token_hex(30)  # 60 distinctive characters
    milvus_token = "milvus-token-" + secrets.token_hex(20)
    needles = [key, key[5:], milvus_token]
    rows = corpus_rows(2000)
    texts = rows.column("text").to_pylist()
    texts[3] = "   "  # dead-lettered
    rows = rows.set_column(rows.column_names.index("text"), "text", pa.array(texts))
    (tmp_path / "corpus").mkdir()
    write_parquet(tmp_path / "corpus" / "a.parquet", rows, row_group_rows=250)
    env = cli_env(jina.url, key, ray_tmpdir=ray_tmp, extra={"MILVUS_TOKEN": milvus_token})
    outputs: list[str] = []

    # 1. a run with a dead letter and 429s, into Parquet and Milvus Lite
    out1 = tmp_path / "out1"
    job1 = fault_job(tmp_path / "job1.toml", tmp_path / "corpus", out1, sinks=("parquet", "milvus"),
                     shard_rows=250, embedding={"batch_size": 50})
    jina.inject("429", "429", "500")
    first = run_cli(job1, env=env)
    assert first.returncode == 0, first.describe()
    assert jina.stats()["faults_by_kind"].get("429") == 2
    outputs += [first.stdout, first.stderr]

    # 2. the key revoked mid-run: the error paths print
    out2 = tmp_path / "out2"
    job2 = fault_job(tmp_path / "job2.toml", tmp_path / "corpus", out2, shard_rows=250,
                     embedding={"batch_size": 50}, limits={"rpm": 100_000, "tpm": 100_000_000,
                                                           "max_concurrency": 2})
    jina.configure(latency_ms=150)
    second = interrupt_mid_run(job2, str(out2 / "_checkpoint"), lambda run: jina.configure(revoked=True), env=env,
                               what="the revocation", timeout=120)
    jina.configure(revoked=False, latency_ms=0)
    assert second.returncode != 0, second.describe()
    assert "401" in second.stderr or "key" in second.stderr.lower()
    outputs += [second.stdout, second.stderr]

    # 3. status --json of both ledgers
    for out in (out1, out2):
        status = subprocess.run([PYTHON, "-m", "embedder", "status", "--json", str(out / "_checkpoint")],
                                capture_output=True, text=True, env=env, timeout=60, check=False)
        assert status.returncode in (0, 1), status.stderr
        assert status.stdout.strip(), status.stderr
        outputs += [status.stdout, status.stderr]
        assert (out / "_checkpoint" / "run_report.json").is_file()

    for number, text in enumerate(outputs):
        for needle in needles:
            assert needle not in text, f"a secret appears in CLI output #{number}"
    for root in (out1, out2, ray_tmp):
        hits = grep_tree(root, needles)
        assert not hits, f"a secret appears in {hits}"
    logs = list(Path(ray_tmp).rglob("session_*/logs"))
    assert logs, f"no Ray session logs under {ray_tmp}: the search proved nothing"
    assert sum(1 for _ in logs[0].rglob("*") if _.is_file()) > 3
