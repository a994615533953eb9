"""The checkpoint ledger: which shards are finished, their dead letters, and the run's heartbeat and report.

A folder on local disk or object storage (see :mod:`.checkpoint` for its layout). A shard's done marker is
written only after every sink holds the shard durably: it is the only truth that the shard is finished, so a
rerun skips exactly what was finished. The records it keeps are typed (:mod:`.records`), and nothing that looks
like a secret is ever written into it (:mod:`.guard`).

May import: ``embedder.storage``, ``embedder.errors``. Not the source, the sinks or the run: they call it.
"""

from __future__ import annotations

from embedder.ledger.checkpoint import Ledger, flatten_fields
from embedder.ledger.guard import check_no_secrets
from embedder.ledger.records import DEAD_LETTER_SCHEMA, DoneMarker, Heartbeat, Progress, RunReport, ShardStats

__all__ = ["DEAD_LETTER_SCHEMA", "DoneMarker", "Heartbeat", "Ledger", "Progress", "RunReport", "ShardStats",
           "check_no_secrets", "flatten_fields"]
