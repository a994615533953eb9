"""The typed records a ledger keeps: progress counters, the heartbeat, the run report and dead letters.

The job writes them, the progress display draws them and ``embedder status`` reads them back: one definition
each, with ``to_dict`` / ``from_dict``, so no reader guesses keys. ``from_dict`` ignores keys it does not know and
fills in missing ones with their defaults, so a ledger written by another version still reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa

R = TypeVar("R")

DEAD_LETTER_SCHEMA = pa.schema([
    ("shard_id", pa.string()), ("id", pa.string()), ("_row", pa.int64()), ("file", pa.string()),
    ("reason", pa.string()), ("error_class", pa.string()),
])
"""Dead-letter rows: the shard, the row's id (as text), its row number in ``file``, why it failed and the class of
the error."""


def _from_dict(cls: type[R], data: dict[str, Any]) -> R:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{key: value for key, value in data.items() if key in names})


@dataclass
class Progress:
    """Where a run stands: what it counted, and the rates derived from it. A snapshot, taken by the driver."""

    shards_total: int = 0
    rows_total: int = 0
    shards_skipped: int = 0
    """Shards an earlier run finished."""
    rows_skipped: int = 0
    shards_done: int = 0
    """Shards this run finished (written and marked done)."""
    shards_in_flight: int = 0
    """Shards handed out and not yet written."""
    shards_writing: int = 0
    """Of those, shards embedded and handed to the sink (more than one: the sink lags behind the workers)."""
    rows_done: int = 0
    """Input rows of the shards this run finished."""
    documents_done: int = 0
    documents_embedded: int = 0
    """Documents embedded now (a document is an input row, or the rows of one document of pre-chunked input)."""
    documents_copied: int = 0
    """Incremental runs: unchanged documents whose vectors were kept, without an API call."""
    documents_failed: int = 0
    """Documents dead-lettered."""
    chunks: int = 0
    """Output rows written (a row per chunk; a row per input row without chunking)."""
    tokens: int = 0
    """Tokens billed to this run."""
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    """429 answers the rate limiter saw."""
    storage_retries: dict[str, int] = field(default_factory=dict)
    """Transient storage errors retried, by operation (``shard read``, ``part write``, ``ledger marker``...): the
    shards' reads and writes plus the driver's own ledger and heartbeat writes (``embedder.storage.retry``)."""
    elapsed_s: float = 0.0
    rows_per_s: float = 0.0
    tokens_last_minute: int = 0
    """Tokens billed in the last 60 s: the current rate against the tokens-per-minute limit."""
    tpm_limit: int = 0
    eta_s: float | None = None
    cost_usd: float = 0.0
    """What the tokens billed so far cost."""
    projected_cost_usd: float = 0.0
    """The whole run's cost if the rest costs what the rows so far did."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        return _from_dict(cls, data)


@dataclass
class ShardStats:
    """What embedding one shard took and gave (a worker's answer, kept in the shard's done marker)."""

    shard_id: str
    rows: int = 0
    """Input rows read (for pre-chunked input, the rows of the documents the shard owns)."""
    documents: int = 0
    """Documents the shard owns: its rows, or for pre-chunked input the documents starting in it."""
    embedded: int = 0
    """Documents embedded now."""
    copied: int = 0
    """Documents whose vectors an incremental run kept."""
    failed: int = 0
    """Documents dead-lettered."""
    chunks: int = 0
    """Output rows written (a row per chunk; a row per input row without chunking)."""
    tokens: int = 0
    requests: int = 0
    attempts: int = 0
    rate_limited: int = 0
    splits: int = 0
    read_s: float = 0.0
    seconds: float = 0.0
    storage_retries: dict[str, int] = field(default_factory=dict)
    """Transient storage errors retried for this shard (its read, its writes), by operation."""

    @property
    def retries(self) -> int:
        return self.attempts - self.requests


@dataclass
class DoneMarker:
    """A finished shard: where its rows are in the input, and its stats. The only truth that it is done."""

    stats: ShardStats
    file: str = ""
    row_start: int = 0
    row_count: int = 0
    finished_at: str = ""

    @property
    def shard_id(self) -> str:
        return self.stats.shard_id

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.stats), "file": self.file, "row_start": self.row_start,
                "row_count": self.row_count, "finished_at": self.finished_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DoneMarker:
        if "chunks" not in data:  # a marker from before documents: a row was a document with one output row
            data = {**data, "documents": data.get("rows", 0), "chunks": data.get("embedded", 0),
                    "embedded": data.get("embedded", 0) - data.get("copied", 0)}
        return _from_dict(cls, {**data, "stats": _from_dict(ShardStats, data)})


@dataclass
class Heartbeat:
    """The running driver's progress, rewritten every few seconds; ``final`` once the run has ended."""

    progress: Progress
    updated_at: str = ""
    unix_time: float = 0.0
    host: str = ""
    pid: int = 0
    final: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**self.progress.to_dict(), "updated_at": self.updated_at, "unix_time": self.unix_time,
                "host": self.host, "pid": self.pid, "final": self.final}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Heartbeat:
        beat = _from_dict(cls, {**data, "progress": Progress.from_dict(data)})
        return beat


@dataclass
class RunReport:
    """What a run did, written when it ends however it ends (``status``: completed, interrupted or failed)."""

    status: str
    progress: Progress
    fingerprint: str = ""
    checkpoint: str = ""
    error: str | None = None
    error_class: str | None = None
    started_at: float = 0.0
    finished_at: str = ""
    elapsed_s: float = 0.0
    plan: dict[str, Any] = field(default_factory=dict)
    tokens_per_minute: float = 0.0
    """Tokens billed per minute of the run, over at least one minute (the quota's window): a run shorter than a
    minute reports its tokens, not its burst rate."""
    tpm_limit: int = 0
    cost_usd: float = 0.0
    failed_rows_total: int = 0
    """Dead-lettered rows of the shards in the plan (this run's and earlier runs')."""
    outputs: list[dict[str, Any]] = field(default_factory=list)
    incremental: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["progress"] = self.progress.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        progress = Progress.from_dict(data.get("progress") or {})
        return _from_dict(cls, {"status": "finished", **data, "progress": progress})
