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


# --- the ledger's guard, without a cluster --------------------------------------------------------------------

def _job_with_custom_variables():
    from embedder.config import parse_job

    data = {"source": {"path": "corpus"}, "embedding": {"api_key_env": "TEAM_JINA_KEY"},
            "sinks": [{"kind": "parquet", "path": "out"},
                      {"kind": "milvus", "uri": "http://127.0.0.1:19530", "collection": "docs",
                       "token_env": "TEAM_MILVUS_TOKEN"}]}
    return parse_job(data, source_name="job.toml", environ={})


@pytest.mark.parametrize("variable", ["JINA_API_KEY", "JINAAI_API_KEY", "TEAM_JINA_KEY", "MILVUS_TOKEN",
                                      "TEAM_MILVUS_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"])
def test_the_ledger_guards_every_variable_a_secret_comes_from(variable: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The key's variables (the default ones and the one ``embedding.api_key_env`` names), the Milvus token's (the
    default and ``token_env``) and AWS's secrets: refused in every record, redacted from a run report's error."""
    import pyarrow.parquet as pq

    from embedder.ledger import DoneMarker, Ledger, Progress, RunReport, ShardStats

    value = "v4lue-" + secrets.token_hex(16)
    monkeypatch.setenv(variable, value)
    job = _job_with_custom_variables()
    book = Ledger.open(str(tmp_path / "ledger"), job.fingerprint(), job.fingerprint_fields(),
                       secret_envs=job.secret_envs)
    with pytest.raises(ValueError, match=rf"\${variable}") as refused:
        book.write_plan({"note": f"source s3://bucket/?secret={value}"}, ["s1"])
    assert value not in str(refused.value)
    with pytest.raises(ValueError, match=rf"\${variable}"):
        book.mark_done(DoneMarker(ShardStats("s1"), file=f"s3://bucket/{value}/a.parquet"))
    dead = pa.table({"id": ["7"], "_row": [7], "file": ["a.parquet"], "reason": [f"HTTP 400: key {value} refused"],
                     "error_class": ["InputRejected"]})
    book.mark_done(DoneMarker(ShardStats("s2"), file="a.parquet"), dead)
    assert pq.read_table(tmp_path / "ledger" / "_failed" / "s2.parquet").column("reason").to_pylist() == [
        "HTTP 400: key *** refused"]
    book.write_report(RunReport(status="failed", progress=Progress(), error=f"HTTP 401 for key {value}",
                                error_class="FatalError"))
    written = (tmp_path / "ledger" / "run_report.json").read_text()
    assert value not in written and "HTTP 401 for key ***" in written
    assert grep_tree(tmp_path, [value]) == []
