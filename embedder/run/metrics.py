"""The job's figures as Ray application metrics (``ray.util.metrics``), for the Ray dashboard, Prometheus and Grafana.

The driver's progress loop calls :meth:`JobMetrics.report` with its :class:`~embedder.ledger.records.Progress` and
the rate limiter's snapshot (``run.limiter.RateWindow.snapshot``); counters go up by what changed since the last
report, gauges are set. Every series carries the tag ``job_name`` (the job file's ``name``, default its stem), so
several jobs on one cluster are told apart. Ray prefixes each name with ``ray_`` on export, and a counter is exported
with ``_total`` appended (``ray_embedder_tokens_total``); see docs/metrics.md and docs/grafana/embedder.json.

Why the limiter's totals for tokens and requests: the limiter hears of every answer as it comes, where the
progress record counts a shard's tokens only once the shard is written, so the metric follows the API's billing
closely. A limiter restarted after a node loss starts from zero; its counts then resume from there (a counter
never goes down).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.util import metrics

from embedder.ledger import Progress

JOB_TAG = "job_name"
"""The tag naming the job (not ``job``: Prometheus gives its own ``job`` label, the scrape job, to every series)."""

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "embedder_tokens": ("Tokens billed by the embeddings API", ()),
    "embedder_requests": ("Embedding requests answered, by status: ok, rate_limited (429) or error", ("status",)),
    "embedder_rows": ("Documents finished, by outcome: embedded, copied (incremental runs) or failed "
                      "(dead-lettered)", ("outcome",)),
    "embedder_shards": ("Shards written and marked done", ()),
}
GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "embedder_quota_use": ("Tokens billed in the last minute divided by the tokens-per-minute limit", ()),
    "embedder_in_flight": ("Work in flight, by kind: requests (holding a rate-limiter permit) or shards", ("kind",)),
    "embedder_eta_seconds": ("Estimated seconds until the run's last shard is done", ()),
}


def exported_name(name: str) -> str:
    """The name Prometheus sees (Ray 2.60: ``ray_`` before every name, ``_total`` after a counter's)."""
    return f"ray_{name}_total" if name in COUNTERS else f"ray_{name}"


class JobMetrics:
    """The job's counters and gauges, registered with Ray once, reported from the driver's loop."""

    def __init__(self, job_name: str) -> None:
        self.tags = {JOB_TAG: job_name}
        self._counters = {name: metrics.Counter(name, description=text, tag_keys=(JOB_TAG, *keys))
                          for name, (text, keys) in COUNTERS.items()}
        self._gauges = {name: metrics.Gauge(name, description=text, tag_keys=(JOB_TAG, *keys))
                        for name, (text, keys) in GAUGES.items()}
        self._last: dict[tuple[str, str], float] = {}

    def report(self, progress: Progress, limiter: Mapping[str, Any] | None, *, final: bool = False) -> None:
        """Bring every series up to ``progress`` and the limiter's ``snapshot`` (``None``: not available now)."""
        if limiter is not None:
            self._add("embedder_tokens", "", limiter.get("tokens", 0))
            self._add("embedder_requests", "ok", limiter.get("requests_ok", 0), "status")
            self._add("embedder_requests", "rate_limited", limiter.get("rate_limited", 0), "status")
            self._add("embedder_requests", "error", limiter.get("failed", 0), "status")
            self._set("embedder_in_flight", 0 if final else limiter.get("in_flight", 0), kind="requests")
            tpm = limiter.get("tpm") or progress.tpm_limit
            if tpm:
                self._set("embedder_quota_use", limiter.get("tokens_last_minute", 0) / tpm)
        for outcome, value in (("embedded", progress.documents_embedded), ("copied", progress.documents_copied),
                               ("failed", progress.documents_failed)):
            self._add("embedder_rows", outcome, value, "outcome")
        self._add("embedder_shards", "", progress.shards_done)
        self._set("embedder_in_flight", 0 if final else progress.shards_in_flight, kind="shards")
        if final or progress.eta_s is not None:
            self._set("embedder_eta_seconds", 0.0 if final else progress.eta_s or 0.0)

    def _add(self, name: str, tag_value: str, total: float, tag_key: str = "") -> None:
        """Add to counter ``name`` what ``total`` grew by since the last report (a total that went down started
        again from zero: a restarted limiter)."""
        last = self._last.get((name, tag_value), 0.0)
        delta = total - last if total >= last else total
        self._last[(name, tag_value)] = total
        if delta > 0:
            tags = {**self.tags, tag_key: tag_value} if tag_key else self.tags
            self._counters[name].inc(delta, tags=tags)

    def _set(self, name: str, value: float, **extra_tags: str) -> None:
        self._gauges[name].set(float(value), tags={**self.tags, **extra_tags})
