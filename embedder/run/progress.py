"""Live progress: the driver's counters, their rates, and how they are shown while the job runs.

:class:`ProgressTracker` keeps a :class:`~embedder.ledger.records.Progress` record up to date from each finished
shard's stats; :meth:`ProgressTracker.snapshot` fills in the rates. The same record goes into the heartbeat, the
run report and ``embedder status``; :mod:`embedder.run.progress_display` draws it (a ``rich`` bar on a terminal,
plain lines elsewhere).
"""

from __future__ import annotations

import time

from embedder.ledger import Progress, ShardStats
from embedder.storage import retry


class ProgressTracker:
    """Counts what finished shards report; derives rates, the ETA and the cost when asked for a snapshot."""

    def __init__(self, progress: Progress, *, price_per_million_tokens: float,
                 process_retries_base: dict[str, int] | None = None) -> None:
        self.progress = progress
        self.price_per_million_tokens = price_per_million_tokens
        self.started = time.monotonic()
        self.storage_retries = retry.RetryCounter(progress.storage_retries)
        """Shards' storage retries (from their stats) and the ones of this process since it started counting."""
        self._process_base = retry.PROCESS.counts() if process_retries_base is None else process_retries_base

    def count(self, stats: ShardStats) -> None:
        """One shard written and marked done."""
        p = self.progress
        p.shards_done += 1
        p.rows_done += stats.rows
        p.documents_done += stats.documents
        p.documents_embedded += stats.embedded
        p.documents_copied += stats.copied
        p.documents_failed += stats.failed
        p.chunks += stats.chunks
        p.tokens += stats.tokens
        p.requests += stats.requests
        p.retries += stats.retries
        self.storage_retries.merge(stats.storage_retries)

    def snapshot(self) -> Progress:
        """The record with its rates brought up to date (the same object: cheap, and always current)."""
        p = self.progress
        p.elapsed_s = round(time.monotonic() - self.started, 1)
        p.rows_per_s = round(p.rows_done / p.elapsed_s, 1) if p.elapsed_s > 0 else 0.0
        remaining = p.rows_total - p.rows_skipped - p.rows_done
        p.eta_s = round(remaining / p.rows_per_s, 1) if p.rows_per_s > 0 else None
        p.cost_usd = round(p.tokens / 1e6 * self.price_per_million_tokens, 6)
        todo = p.rows_total - p.rows_skipped
        p.projected_cost_usd = round(p.cost_usd * todo / p.rows_done, 6) if p.rows_done else 0.0
        merged = retry.RetryCounter(self.storage_retries.counts())
        merged.merge(retry.PROCESS.since(self._process_base))
        p.storage_retries = merged.counts()
        return p
