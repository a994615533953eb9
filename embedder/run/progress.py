"""Live progress: a redrawn line on a terminal, one log line every few seconds elsewhere (Ray job logs)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _count(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


@dataclass
class ProgressState:
    """Counters of the running job, as the driver sees them."""

    shards_total: int
    rows_total: int
    shards_skipped: int = 0  # already done by an earlier run
    rows_skipped: int = 0
    shards_done: int = 0
    rows_done: int = 0
    rows_embedded: int = 0
    rows_copied: int = 0  # incremental runs: unchanged rows whose vectors were kept
    rows_failed: int = 0
    tokens: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    tokens_last_minute: int = 0
    tpm_limit: int = 0
    price_per_million_tokens: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def rows_per_s(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.rows_done / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rows_per_s()
        remaining = self.rows_total - self.rows_skipped - self.rows_done
        return remaining / rate if rate > 0 else None

    def estimated_cost(self) -> float:
        """Dollars for the whole run: tokens so far, extrapolated over the rows still to do."""
        todo = self.rows_total - self.rows_skipped
        projected = self.tokens * todo / self.rows_done if self.rows_done else 0
        return projected / 1e6 * self.price_per_million_tokens

    def as_dict(self) -> dict:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "started"}
        data.update(elapsed_s=round(time.monotonic() - self.started, 1), rows_per_s=round(self.rows_per_s(), 1),
                    eta_s=None if self.eta_s() is None else round(self.eta_s() or 0, 1),
                    estimated_cost_usd=round(self.estimated_cost(), 6))
        return data

    def line(self) -> str:
        done_shards = self.shards_done + self.shards_skipped
        done_rows = self.rows_done + self.rows_skipped
        percent = 100.0 * done_rows / self.rows_total if self.rows_total else 100.0
        tpm = f"{_count(self.tokens_last_minute)}/{_count(self.tpm_limit)} tok/min" if self.tpm_limit else \
            f"{_count(self.tokens_last_minute)} tok/min"
        return (f"{percent:5.1f}% shards {done_shards}/{self.shards_total} rows {_count(done_rows)}/"
                f"{_count(self.rows_total)} | {self.rows_per_s():,.0f} rows/s | {tpm} | 429s {self.rate_limited} "
                f"| retries {self.retries} | failed {self.rows_failed} | ETA {_duration(self.eta_s())} "
                f"| ~${self.estimated_cost():.4f}")


class ProgressDisplay:
    """Draws :class:`ProgressState`: redrawn in place on a terminal, else a log line every ``interval_s``."""

    def __init__(self, state: ProgressState, *, stream: TextIO | None = None, interval_s: float = 5.0,
                 tty: bool | None = None) -> None:
        self.state = state
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval_s = 0.5 if self.tty else interval_s
        self._last = 0.0

    def update(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.state.line())
        else:
            self.stream.write(f"[embedder] {self.state.line()}\n")
        self.stream.flush()

    def close(self) -> None:
        self.update(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
