"""Step 2 of a run: the embedding itself, and what it hands to step 3.

An execution starts what the run needs, embeds the shards left to do (:meth:`execute`), then commits the sinks
(:meth:`commit`) or, when the run did not complete, lets them go (:meth:`abort`). :class:`LocalExecution` is the
one for a run with nothing left to embed: no Ray cluster is started, so a finished job's rerun takes seconds. The
Ray one is :class:`embedder.run.cluster.RayExecution`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from embedder.sinks.base import CommitReceipt, Sink, SinkStartInfo, WriteReceipt
from embedder.sinks.fanout import commit_sinks
from embedder.source.shards import Shard


@dataclass
class RunOutcome:
    """How the embedding part of a run ended."""

    status: str
    """``completed``, ``interrupted`` or ``failed``."""
    error: str | None = None
    error_class: str | None = None
    receipts: list[list[WriteReceipt]] = field(default_factory=list)
    """The sinks' write receipts of this run, per sink (for their commit)."""
    heartbeats_failing: int = 0
    """Heartbeats that failed in a row at the end of the loop: the final one does not warn about the same streak."""

    @property
    def completed(self) -> bool:
        return self.status == "completed"


class Execution(Protocol):
    def execute(self, todo: list[Shard]) -> RunOutcome: ...

    def commit(self, shard_ids: list[str], expected_rows: int, deleted_ids: pa.Array | None,
               receipts: list[list[WriteReceipt]]) -> list[CommitReceipt]: ...

    def abort(self) -> None: ...

    def close(self) -> None: ...


class LocalExecution:
    """Nothing to embed: the sinks are started here, in this process, only to be committed."""

    def __init__(self, sinks: list[Sink], info: SinkStartInfo) -> None:
        self.sinks = sinks
        for sink in sinks:
            sink.start(info)

    def execute(self, todo: list[Shard]) -> RunOutcome:
        assert not todo, "a local execution has nothing to embed"
        return RunOutcome("completed")

    def commit(self, shard_ids: list[str], expected_rows: int, deleted_ids: pa.Array | None,
               receipts: list[list[WriteReceipt]]) -> list[CommitReceipt]:
        return commit_sinks(self.sinks, shard_ids, expected_rows, deleted_ids, receipts)

    def abort(self) -> None:
        for sink in self.sinks:
            sink.abort()

    def close(self) -> None:
        """Nothing runs in the background."""
