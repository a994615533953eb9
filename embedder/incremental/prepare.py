"""The job's side of an incremental run: find the previous version, classify once, report the four counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from embedder import storage
from embedder.config import JobConfig, ParquetSinkConfig
from embedder.errors import ConfigError
from embedder.incremental.classify import Classification, classify, load_classification
from embedder.ledger import Ledger, Progress
from embedder.sinks.parquet import read_manifest
from embedder.source.planning import JobPlan, plan_digest

WORKDIR = "_incremental"


@dataclass
class IncrementalRun:
    classification: Classification
    workdir: str
    """Where the classification is, as a location the workers can open."""
    previous_output: str
    deleted_ids: pa.Array | None
    held_rows: int = 0
    """Rows of the plan's shards the previous version holds as they are (files that did not change)."""

    def report(self, progress: Progress) -> dict:
        """The four counts; ``unchanged`` takes in the rows of unchanged files, kept whole."""
        c = self.classification
        embedded = progress.documents_embedded
        per_row = progress.tokens / embedded if embedded > 0 else 0.0
        unchanged = c.unchanged + self.held_rows
        return {"new": c.new, "changed": c.changed, "unchanged": unchanged, "deleted": c.deleted,
                "tokens_saved_estimate": int(unchanged * per_row)}


def previous_output(config: JobConfig) -> str:
    for sink in config.sinks:
        if isinstance(sink, ParquetSinkConfig):
            return sink.path
    raise ConfigError("an incremental run needs a Parquet sink: its current version holds the vectors that "
                      "unchanged rows keep (add a [[sinks]] entry of kind \"parquet\" next to the Milvus one)")


def prepare(config: JobConfig, plan: JobPlan, ledger: Ledger, content_key: str, out: TextIO
            ) -> IncrementalRun | None:
    """Classify the rows of the shards the previous version does not hold (once per plan: a resumed run reuses
    the saved answer). ``None`` when there is no previous version (the run embeds everything) or nothing new."""
    output = previous_output(config)
    storage_options = config.storage_options
    manifest = read_manifest(output, storage_options=storage_options)
    if manifest is None:
        print(f"embedder: incremental: {output} holds no completed version yet; embedding everything", file=out)
        return None
    held = {part["shard_id"] for part in manifest["parts"]}
    planned = {shard.shard_id for shard in plan.shards}
    fresh = [shard for shard in plan.shards if shard.shard_id not in held]
    if not fresh and held == planned:
        print(f"embedder: incremental: the input matches version {manifest.get('dataset_version')} of {output}",
              file=out)
        return None
    output_fs, root = storage.resolve(output, storage_options)
    old_parts = [storage.join(root, part["path"]) for part in manifest["parts"] if part["shard_id"] not in planned]
    key = f"v{manifest.get('dataset_version', 0)}-{plan_digest(s.shard_id for s in fresh)[:16]}"
    workdir_fs, workdir = ledger.filesystem, storage.join(ledger.root, WORKDIR, key)
    classification = load_classification(workdir_fs, workdir)
    if classification is None:
        classification = classify(old_parts=old_parts, old_fs=output_fs, shards=fresh, config=config,
                                  content_key=content_key, ledger_fs=workdir_fs, workdir=workdir)
    deleted = None
    if classification.deleted_ids_file:
        deleted = pq.read_table(classification.deleted_ids_file, filesystem=workdir_fs)["id"].combine_chunks()
    c = classification
    print(f"embedder: incremental against version {manifest.get('dataset_version')}: {c.new:,} new, "
          f"{c.changed:,} changed, {c.unchanged:,} unchanged (kept without API calls), {c.deleted:,} deleted",
          file=out)
    held_rows = sum(shard.row_count for shard in plan.shards if shard.shard_id in held)
    return IncrementalRun(classification, storage.join(ledger.location, WORKDIR, key), output, deleted, held_rows)
