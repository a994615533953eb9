"""Step 1 of a run: plan the input, open the ledger, refuse duplicate ids, decide what is left to do.

Nothing here talks to the embeddings API or to Ray: every refusal (bad input, another job's ledger, a sink that
cannot take the rows) happens before the first request.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TextIO

import pyarrow as pa

from embedder.config import JobConfig
from embedder.incremental import IncrementalRun
from embedder.incremental import prepare as prepare_incremental
from embedder.ledger import Ledger, Progress
from embedder.run.exits import report_refusal
from embedder.run.progress import ProgressTracker
from embedder.run.settings import api_key_or_fail, content_key, sink_start_info, worker_settings
from embedder.run.worker import WorkerSettings
from embedder.secrets import Secret
from embedder.sinks.base import Sink, SinkStartInfo
from embedder.sinks.factory import build_sinks
from embedder.source.checks import check_input
from embedder.source.planning import JobPlan, build_plan, plan_digest
from embedder.source.shards import Shard
from embedder.storage import retry


@dataclass(frozen=True)
class RunOptions:
    """How ``embedder run`` was asked to treat the ledger."""

    restart: bool = False
    """Forget every finished shard (needed after the fingerprint changed)."""
    retry_failed: bool = False
    """Embed again the shards whose rows were dead-lettered."""
    incremental: bool = False
    """Embed only new and changed rows against the last completed output."""


@dataclass
class PreparedJob:
    """Everything the run needs, decided before the first request."""

    config: JobConfig
    options: RunOptions
    key: Secret
    plan: JobPlan
    ledger: Ledger
    todo: list[Shard]
    """Shards to embed now, in plan order."""
    incremental: IncrementalRun | None
    sinks: list[Sink]
    sink_info: SinkStartInfo
    worker_settings: WorkerSettings
    tracker: ProgressTracker
    started: float

    @property
    def shard_ids(self) -> list[str]:
        return [shard.shard_id for shard in self.plan.shards]

    @property
    def deleted_ids(self) -> pa.Array | None:
        return self.incremental.deleted_ids if self.incremental else None


def prepare(config: JobConfig, options: RunOptions, out: TextIO) -> PreparedJob:
    started = time.time()
    retries_before = retry.PROCESS.counts()  # this run's storage retries in this process start here
    key = api_key_or_fail(config)
    print("embedder: effective configuration (secrets masked):", file=out)
    print(json.dumps(config.to_display_dict(), indent=2, default=str), file=out)
    plan = build_plan(config)
    ledger = Ledger.open(config.checkpoint.path, config.fingerprint(), config.fingerprint_fields(),
                         restart=options.restart, storage_options=config.storage_options,
                         secret_envs=config.secret_envs)
    try:
        return _prepare_with(config, options, out, started, key, plan, ledger, retries_before)
    except BaseException as exc:  # refused before any shard was tried: the report says why
        report_refusal(config, ledger, started, exc)
        raise


def _prepare_with(config: JobConfig, options: RunOptions, out: TextIO, started: float, key: Secret,
                  plan: JobPlan, ledger: Ledger, retries_before: dict[str, int]) -> PreparedJob:
    _check_ids_once(config, plan, ledger)
    todo, skipped = _todo(plan, ledger, retry_failed=options.retry_failed)
    print(f"embedder: {len(plan.shards)} shards, {plan.rows:,} rows; {len(skipped)} shards already done, "
          f"{len(todo)} to embed; checkpoint at {ledger.location}", file=out)
    incremental = None
    if options.incremental or config.mode == "incremental":
        incremental = prepare_incremental(config, plan, ledger, content_key(config), out)
    progress = Progress(shards_total=len(plan.shards), rows_total=plan.rows, shards_skipped=len(skipped),
                        rows_skipped=sum(s.row_count for s in skipped), tpm_limit=config.limits.tpm)
    tracker = ProgressTracker(progress, price_per_million_tokens=config.limits.price_per_million_tokens,
                              process_retries_base=retries_before)
    return PreparedJob(config=config, options=options, key=key, plan=plan, ledger=ledger, todo=todo,
                       incremental=incremental, sinks=build_sinks(config),
                       sink_info=sink_start_info(config, plan.sample),
                       worker_settings=worker_settings(
                           config, incremental_dir=incremental.workdir if incremental else None,
                           previous_output=incremental.previous_output if incremental else None),
                       tracker=tracker,
                       started=started)


def _check_ids_once(config: JobConfig, plan: JobPlan, ledger: Ledger) -> None:
    """The global duplicate-id check, once per unchanged input: a resumed job does not read every id again."""
    shard_ids = [shard.shard_id for shard in plan.shards]
    digest = plan_digest(shard_ids)
    previous = ledger.read_plan(include_shard_ids=False) or {}
    if previous.get("plan_digest") != digest or not previous.get("ids_checked"):
        check_input(plan.shards, config.source, config.storage_options)
        # Arrow's allocator keeps what the check freed (~90 MB at 1M ids) for reuse: give it back, so the
        # driver's memory does not depend on the corpus size (benchmarks/memory_scale.py)
        pa.default_memory_pool().release_unused()
    ledger.write_plan({**plan.summary(), "plan_digest": digest, "ids_checked": True}, shard_ids)


def _todo(plan: JobPlan, ledger: Ledger, *, retry_failed: bool) -> tuple[list[Shard], list[Shard]]:
    """The shards to embed and the shards an earlier run finished; ``retry_failed`` forgets those with dead
    letters first."""
    done = ledger.done_ids()
    if retry_failed:
        retry = ledger.failed_shard_ids() & {shard.shard_id for shard in plan.shards}
        ledger.forget(retry)
        done -= retry
    todo = [shard for shard in plan.shards if shard.shard_id not in done]
    skipped = [shard for shard in plan.shards if shard.shard_id in done]
    return todo, skipped
