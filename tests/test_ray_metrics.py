"""The job's Ray metrics, scraped from a ``ray start --head --metrics-export-port=P`` cluster while a job runs, and
the Grafana dashboard that plots them.

The job joins the cluster (``RAY_ADDRESS``); its driver reports through ``ray.util.metrics`` to the head's metrics
agent, which serves them to Prometheus at ``http://127.0.0.1:P/metrics``. Ray's agent exports every few seconds
(``RAY_metrics_report_interval_ms``, lowered here to one second), so the scraped counter lags the server's billing
by about that much: the job is slowed down (latency, small requests, two at a time) to last ~30 s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from jobtools import REPO, corpus_rows, start_cli, write_parquet
from prometheus_client.parser import text_string_to_metric_families

from embedder.config import load_job
from embedder.run.metrics import COUNTERS, GAUGES, JOB_TAG, exported_name
from embedder.testing import RayCluster, cli_env, job_tables, write_job

DASHBOARD = REPO / "docs" / "grafana" / "embedder.json"
REPORT_INTERVAL = {"RAY_metrics_report_interval_ms": "1000"}


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample at ``url`` by name: ``[(labels, value), ...]``; ``{}`` while the agent does not answer."""
    try:
        text = httpx.get(url, timeout=5.0, trust_env=False).text
    except httpx.HTTPError:
        return {}
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, job: str, **labels: str) -> float | None:
    """The sum of ``name``'s series of job ``job`` (and ``labels``), or None when it has none."""
    values = [value for tags, value in samples.get(name, ())
              if tags.get(JOB_TAG) == job and all(tags.get(k) == v for k, v in labels.items())]
    return sum(values) if values else None


@pytest.mark.slow
@pytest.mark.ray
def test_a_running_job_exports_its_metrics_to_rays_prometheus_endpoint(tmp_path: Path, jina, api_key) -> None:
    jina.configure(latency_ms=700)
    write_parquet(tmp_path / "corpus.parquet", corpus_rows(4000), row_group_rows=500)
    job = write_job(tmp_path / "metrics-job.toml",
                    **job_tables(tmp_path / "corpus.parquet", shard_rows=500, workers=2,
                                 limits={"rpm": 100_000, "tpm": 2_000_000, "max_concurrency": 2},
                                 embedding={"batch_size": 50}),
                    sink={"kind": "parquet", "path": tmp_path / "out"})
    with RayCluster(num_cpus=2, env={"JINA_API_KEY": api_key, **REPORT_INTERVAL}) as cluster:
        url = f"http://127.0.0.1:{cluster.head.metrics_export_port}/metrics"
        env = cluster.client_env(cli_env(jina.url, api_key), connect=True) | REPORT_INTERVAL
        run = start_cli(job, env=env)
        scrapes: list[tuple[float, int, dict]] = []  # (tokens metric, tokens the server billed, samples)
        samples: dict = {}
        try:
            while run.running():
                samples = scrape(url) or samples
                billed = jina.stats()["tokens"]
                tokens = total(samples, exported_name("embedder_tokens"), "metrics-job")
                if tokens is not None and run.running():
                    scrapes.append((tokens, billed, samples))
                time.sleep(1.0)
        finally:
            result = run.wait()
    assert result.returncode == 0, result.describe()
    final_billed = jina.stats()["tokens"]
    values = [tokens for tokens, _, _ in scrapes]
    exported = sorted(name for name in samples if "embedder" in name)
    assert scrapes, f"no {exported_name('embedder_tokens')} of job metrics-job at {url}; embedder series: {exported}"
    assert len(set(values)) >= 3 and values == sorted(values), f"the tokens counter grows while the job runs: {values}"
    tokens, billed, samples = scrapes[-1]
    print(f"\nlast scrape: metric {tokens:,.0f} tokens, server billed {billed:,} (of {final_billed:,} in all); "
          f"{len(scrapes)} scrapes")
    assert abs(tokens - billed) <= 0.2 * billed, f"metric {tokens} vs billed {billed} at the last scrape"
    during = [tokens for tokens, billed_then, _ in scrapes if billed_then < final_billed]
    assert len(during) >= 3, "several scrapes are taken while the job is still billing tokens"
    assert (total(samples, exported_name("embedder_rows"), "metrics-job", outcome="embedded") or 0) > 0
    assert total(samples, exported_name("embedder_requests"), "metrics-job", status="ok")
    quota = total(samples, exported_name("embedder_quota_use"), "metrics-job")
    assert quota is not None and 0 < quota < 1, f"quota use is tokens/min over the 2M TPM limit: {quota}"


def test_the_job_name_is_the_files_stem_unless_named_and_is_not_fingerprinted(tmp_path: Path) -> None:
    tables = job_tables(tmp_path / "in", passthrough=())
    unnamed = load_job(write_job(tmp_path / "nightly.toml", **tables, sink={"path": tmp_path / "out"}))
    named = load_job(write_job(tmp_path / "x.toml", **tables, sink={"path": tmp_path / "out"}), ["name=prod-embed"])
    assert unnamed.job_name == "nightly" and named.job_name == "prod-embed"
    assert named.fingerprint() == unnamed.fingerprint()
    assert load_job(tmp_path / "x.toml", ["name=2024"]).job_name == "2024"  # a name is text, as typed


# --- the Grafana dashboard -------------------------------------------------------------------------------------


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    """``(panel title, PromQL expression)`` of every target of every panel (rows' nested panels included)."""
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], target["expr"]) for target in inner.get("targets", [])]
    return found


def test_the_grafana_dashboard_is_a_dashboard_whose_queries_name_the_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for key, kind in (("title", str), ("uid", str), ("panels", list), ("schemaVersion", int),
                      ("templating", dict), ("time", dict)):
        assert isinstance(dashboard.get(key), kind), f"a Grafana dashboard has {key!r} ({kind.__name__})"
    assert "id" not in dashboard or dashboard["id"] is None, "an importable dashboard carries no database id"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in dashboard["panels"]:
        assert {"type", "title", "gridPos", "datasource"} <= set(panel), panel.get("title")
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
    exported = {exported_name(name) for name in (*COUNTERS, *GAUGES)}
    queries = panel_queries(dashboard)
    named: set[str] = set()
    for title, expr in queries:
        metrics = {word for word in expr.replace("(", " ").replace("{", " ").replace("[", " ").split()
                   if word.startswith("ray_")}
        assert metrics and metrics <= exported, f"panel {title!r} queries {metrics - exported or 'no metric'}"
        assert f'{JOB_TAG}=~"$job_name"' in expr, f"panel {title!r} follows the job picker"
        named |= metrics
    assert named == exported, f"every exported metric is plotted; missing {exported - named}"
    variables = {item["name"] for item in dashboard["templating"]["list"]}
    assert {"datasource", "job_name"} <= variables
