"""Incremental runs: compare the input with the last completed output, and embed only what changed.

Every output row carries ``content_hash``. An incremental run classifies the rows of the shards the previous
version does not hold as new, changed, unchanged or deleted (:mod:`.classify`, bucket by bucket so memory stays
bounded); unchanged documents keep their vectors (:mod:`.copies`), deleted ones leave the output. :mod:`.prepare`
is the job's side: find the previous version, classify once per plan, report the counts.

May import: ``embedder.source`` (to read shards), ``embedder.sinks`` (the previous Parquet version),
``embedder.ledger``, ``embedder.config``, ``embedder.storage``. Not the run: it calls this.
"""

from __future__ import annotations

from embedder.incremental.classify import Classification
from embedder.incremental.copies import Copies, copied_documents, shard_assignment
from embedder.incremental.prepare import IncrementalRun, prepare

__all__ = ["Classification", "Copies", "IncrementalRun", "copied_documents", "prepare", "shard_assignment"]
