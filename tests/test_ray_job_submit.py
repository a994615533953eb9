"""System test: ``ray job submit`` of ``jobs/embed_corpus.py`` to a head started with ``ray start --head``.

How the pieces reach the job:
- the code: ``--working-dir`` uploads a copy of ``embedder/`` and ``jobs/``; ``jobs/embed_corpus.py`` puts its
  parent folder first on ``sys.path``, so the uploaded package is the one imported (checked below);
- the API key: only through the environment of ``ray start`` — the raylet's environment is inherited by the
  job supervisor and the job's driver — never through ``--runtime-env-json`` (that is job metadata, shown by
  ``ray job list`` and the dashboard);
- Ray's token (token auth is on by default in Ray 2.60): ``ray start`` runs with ``RAY_AUTH_MODE=token`` and
  ``RAY_AUTH_TOKEN=<token>``, and ``ray job submit`` / ``ray job logs`` / ``ray job list`` get the same two
  variables. Without ``RAY_AUTH_TOKEN`` the CLI reads the token file (``~/.ray/auth_token``, or
  ``RAY_AUTH_TOKEN_PATH``), which ``ray start`` / ``ray get-auth-token --generate`` write on a developer machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from jobtools import REPO, assert_exact_output, corpus_rows, ledger, write_parquet

from embedder.testing import MODEL, RayCluster, write_job

pytestmark = [pytest.mark.slow, pytest.mark.ray]

IMPORT_MARKER = "embedder test marker: imported from "


def upload_dir(tmp_path: Path) -> Path:
    """A copy of the project's ``embedder/`` and ``jobs/``, as a user would pass with ``--working-dir .``."""
    work = tmp_path / "wd"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "embedder", work / "embedder", ignore=ignore)
    shutil.copytree(REPO / "jobs", work / "jobs", ignore=ignore)
    # in this copy only: say where the package was imported from, to prove the upload is what runs
    with open(work / "embedder" / "__init__.py", "a", encoding="utf-8") as handle:
        handle.write(f"\nimport sys as _sys\nprint({IMPORT_MARKER!r} + __file__, file=_sys.stderr)\n")
    return work


def submit(cluster: RayCluster, work: Path, *, attempts: int = 10) -> subprocess.CompletedProcess[str]:
    """``ray job submit`` of the entrypoint; right after ``ray start`` the head may still have no job agent
    ("No available agent to submit job"), so that answer (and only that one) is retried for a while."""
    for _ in range(attempts):
        result = cluster.ray("job", "submit", "--address", cluster.dashboard_url, "--working-dir", str(work),
                         "--", "python", "jobs/embed_corpus.py", "job.toml")
        if "No available agent" not in result.stdout + result.stderr:
            break
        time.sleep(2)
    return result


def test_ray_job_submit_runs_the_job_entrypoint(tmp_path: Path, jina, api_key) -> None:
    rows = corpus_rows(1500)
    write_parquet(tmp_path / "corpus.parquet", rows, row_group_rows=500)
    out = tmp_path / "out"
    work = upload_dir(tmp_path)
    write_job(work / "job.toml",
              source={"path": str(tmp_path / "corpus.parquet"), "passthrough": ["title"], "shard_rows": 500},
              embedding={"model": MODEL, "dimensions": 64, "api_base": jina.url},
              limits={"rpm": 10_000, "tpm": 10_000_000, "max_concurrency": 4},
              workers={"count": 2, "cpus_per_worker": 0.25},
              progress={"interval_s": 2.0},
              sink={"kind": "parquet", "path": str(out)})

    with RayCluster(dashboard=True, env={"JINA_API_KEY": api_key}) as cluster:
        submitted = submit(cluster, work)
        listed = cluster.ray("job", "list", "--address", cluster.dashboard_url)
        job_ids = [line.split("'")[1] for line in submitted.stdout.splitlines() if "submitted successfully" in line]
        logs = cluster.ray("job", "logs", "--address", cluster.dashboard_url, job_ids[0]) if job_ids else None
        session_logs = b"".join(p.read_bytes() for p in Path(cluster.temp_dir).rglob("*.log") if p.is_file())
        session_logs += b"".join(p.read_bytes() for p in Path(cluster.temp_dir).rglob("*.out") if p.is_file())
        session_logs += b"".join(p.read_bytes() for p in Path(cluster.temp_dir).rglob("*.err") if p.is_file())

    shown = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, shown[-6000:]
    assert "succeeded" in shown, shown[-6000:]
    assert logs is not None and logs.returncode == 0, (logs.stdout + logs.stderr)[-3000:] if logs else shown
    assert "embedder: completed" in logs.stdout, logs.stdout[-3000:]
    imported = [line.split(IMPORT_MARKER, 1)[1] for line in logs.stdout.splitlines() if IMPORT_MARKER in line]
    assert imported and not imported[0].startswith(str(REPO)), f"the uploaded package is imported: {imported}"
    print(f"\nthe job imported {imported[0]}")

    for text, where in ((shown, "ray job submit's output"), (logs.stdout + logs.stderr, "the job's logs"),
                        (listed.stdout + listed.stderr, "ray job list (job metadata)")):
        assert api_key not in text, f"the API key appears in {where}"
    assert api_key.encode() not in session_logs, "the API key appears in the cluster's log files"
    details = listed.stdout
    assert "JINA_API_KEY" not in details, "no runtime env carries the key"

    assert_exact_output(str(out), rows, dimensions=64)
    report = ledger(str(out / "_checkpoint")).read_report()
    assert report.status == "completed" and report.progress.documents_embedded == 1500
    assert api_key not in json.dumps(report.to_dict())
    assert jina.stats()["inputs"] == 1500
