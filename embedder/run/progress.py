"""Live progress: the driver's counters, their rates, and how they are shown while the job runs.

:class:`ProgressTracker` keeps a :class:`~embedder.ledger.records.Progress` record up to date from each finished
shard's stats; :meth:`ProgressTracker.snapshot` fills in the rates. The same record goes into the heartbeat, the
run report and ``embedder status``. :class:`ProgressDisplay` draws it: redrawn in place on a terminal, one log line
every few seconds elsewhere (Ray job logs).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from embedder import humanize
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


def progress_line(p: Progress) -> str:
    """One line: percent, shards, rows, rates, 429s, retries, failures, ETA, spent and projected cost."""
    done_shards = p.shards_done + p.shards_skipped
    done_rows = p.rows_done + p.rows_skipped
    percent = 100.0 * done_rows / p.rows_total if p.rows_total else 100.0
    tpm = humanize.count(p.tokens_last_minute) + (f"/{humanize.count(p.tpm_limit)}" if p.tpm_limit else "")
    return (f"{percent:5.1f}% shards {done_shards}/{p.shards_total} rows {humanize.count(done_rows)}/"
            f"{humanize.count(p.rows_total)} | docs {humanize.count(p.documents_done)} chunks "
            f"{humanize.count(p.chunks)} | {p.rows_per_s:,.0f} rows/s | {tpm} tok/min | 429s {p.rate_limited} "
            f"| retries {p.retries} | failed {p.documents_failed} | ETA {humanize.duration(p.eta_s)} "
            f"| spent {humanize.dollars(p.cost_usd)} of ~{humanize.dollars(p.projected_cost_usd)} projected"
            + (f" | storage retries {sum(p.storage_retries.values())}" if p.storage_retries else ""))


class ProgressDisplay:
    """Draws the tracker's snapshot: redrawn in place on a terminal, else a log line every ``interval_s``."""

    def __init__(self, tracker: ProgressTracker, *, stream: TextIO | None = None, interval_s: float = 5.0,
                 tty: bool | None = None) -> None:
        self.tracker = tracker
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval_s = 0.5 if self.tty else interval_s
        self._last = 0.0

    def update(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        line = progress_line(self.tracker.snapshot())
        self.stream.write("\r\x1b[2K" + line if self.tty else f"[embedder] {line}\n")
        self.stream.flush()

    def close(self) -> None:
        self.update(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
