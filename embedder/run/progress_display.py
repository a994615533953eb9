"""How a running job's progress is shown: a ``rich`` progress bar on a terminal, plain periodic lines elsewhere.

Both show the same figures, from the driver's :class:`~embedder.ledger.records.Progress` snapshot:

- rows done of the total (and documents and chunks when they differ from rows), with the rows' rate;
- tokens billed in the last 60 s against the tokens-per-minute limit: the rate the quota sees, not a burst;
- 429 answers, retries and dead-lettered documents;
- the cost so far (``spent``) and the whole run's cost at the same price per row (``projected total``);
- the ETA;
- when the sink lags behind the workers, how many embedded shards wait for it.

Off a terminal (pipes, Ray job logs) a line goes out every ``progress.interval_s`` seconds and once at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import TextIO

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.text import Text

from embedder import humanize
from embedder.ledger import Progress as ProgressRecord

PLAIN_PREFIX = "[embedder] "


def shards_waiting_on_sink(p: ProgressRecord) -> int:
    """Embedded shards queued behind the one the sink is writing."""
    return max(0, getattr(p, "shards_writing", 0) - 1)


def figures(p: ProgressRecord) -> list[str]:
    """The labelled figures after the rows: rate against quota, 429s, failures, ETA, cost, sink lag."""
    tpm = f"tokens/min (last 60 s) {humanize.count(p.tokens_last_minute)}"
    if p.tpm_limit:
        tpm += f" of {humanize.count(p.tpm_limit)}"
    parts = [tpm, f"429s {p.rate_limited}", f"retries {p.retries}", f"failed {p.documents_failed}",
             f"ETA {humanize.duration(p.eta_s)}",
             f"spent {humanize.dollars(p.cost_usd)} · projected total {humanize.dollars(p.projected_cost_usd)}"]
    storage_retries = sum(p.storage_retries.values())
    if storage_retries:
        parts.append(f"storage retries {storage_retries}")
    waiting = shards_waiting_on_sink(p)
    if waiting:
        parts.append(f"sink lagging: {waiting} shard{'s' if waiting != 1 else ''} waiting")
    return parts


def counts(p: ProgressRecord) -> str:
    """Rows (and documents and chunks, when they are not the rows) done, with the rows' rate."""
    done_rows = p.rows_done + p.rows_skipped
    text = (f"shards {p.shards_done + p.shards_skipped}/{p.shards_total} · rows {humanize.count(done_rows)}/"
            f"{humanize.count(p.rows_total)} ({p.rows_per_s:,.0f}/s)")
    if p.chunks != p.documents_done or p.documents_done != p.rows_done:
        text += f" · docs {humanize.count(p.documents_done)} · chunks {humanize.count(p.chunks)}"
    return text


def progress_line(p: ProgressRecord) -> str:
    """One plain line: percent, counts and every figure, each labelled."""
    done_rows = p.rows_done + p.rows_skipped
    percent = 100.0 * done_rows / p.rows_total if p.rows_total else 100.0
    return " · ".join([f"{percent:5.1f}%", counts(p), *figures(p)])


class _Bar(Progress):
    """The bar with its counts, and below it the figures as text that wraps on a narrow terminal."""

    figures = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.figures:
            yield Text("  " + self.figures)


class ProgressDisplay:
    """Draws ``snapshot()``: a live ``rich`` bar on a terminal, else a plain line every ``interval_s``."""

    def __init__(self, snapshot: Callable[[], ProgressRecord], *, stream: TextIO | None = None,
                 interval_s: float = 5.0, tty: bool | None = None) -> None:
        self.snapshot = snapshot
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval_s = interval_s
        self._last = 0.0
        self._last_line = ""
        self._bar: _Bar | None = None
        self._task: TaskID | None = None

    def _start_bar(self, p: ProgressRecord) -> _Bar:
        console = Console(file=self.stream, force_terminal=True)
        bar = _Bar(TextColumn("[bold]embedding"), BarColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[counts]}"), console=console, refresh_per_second=4, transient=False)
        self._task = bar.add_task("embedding", total=p.rows_total or 1, counts="")
        bar.start()
        return bar

    def update(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            p = self.snapshot()
            if self._bar is None:
                self._bar = self._start_bar(p)
            assert self._task is not None
            self._bar.figures = " · ".join(figures(p))
            self._bar.update(self._task, completed=p.rows_done + p.rows_skipped, counts=counts(p))
            return
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        line = progress_line(self.snapshot())
        if line != self._last_line:  # the closing line repeats nothing
            self._last_line = line
            self.stream.write(PLAIN_PREFIX + line + "\n")
            self.stream.flush()

    def close(self) -> None:
        self.update(force=True)
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
