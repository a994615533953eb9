"""``run_job``: plan, consult the ledger, embed what is left on Ray, commit the sinks, write the report."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, TextIO

import pyarrow as pa

from embedder.config import JobConfig
from embedder.errors import ConfigError, FatalError
from embedder.incremental.prepare import IncrementalRun
from embedder.incremental.prepare import prepare as prepare_incremental
from embedder.jina.client import EmbedOptions
from embedder.ledger.checkpoint import Ledger
from embedder.run.limiter import Limits
from embedder.run.progress import ProgressDisplay, ProgressState
from embedder.run.worker import WorkerSettings
from embedder.secrets import Secret
from embedder.sinks.base import Sink, SinkStartInfo
from embedder.sinks.factory import build_sinks
from embedder.sinks.fanout import commit_sinks
from embedder.source.duplicates import check_duplicate_ids
from embedder.source.planning import (
    JobPlan,
    build_plan,
    plan_digest,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    restart: bool = False
    retry_failed: bool = False
    incremental: bool = False


def api_key_or_fail(config: JobConfig) -> Secret:
    key = config.api_key()
    if not key:
        raise FatalError(f"no Jina API key: set the environment variable {config.embedding.api_key_env} "
                         "(the key is read only from the environment)")
    return Secret(key)


def embed_options(config: JobConfig) -> EmbedOptions:
    emb = config.embedding
    return EmbedOptions(model=emb.model, task=emb.task, dimensions=emb.dimensions, normalized=emb.normalized,
                        truncate=emb.truncate, late_chunking=emb.late_chunking, embedding_type=emb.embedding_type)


def worker_settings(config: JobConfig, incremental: IncrementalRun | None = None) -> WorkerSettings:
    emb = config.embedding
    per_worker = max(1, -(-config.limits.max_concurrency // config.workers.count))
    return WorkerSettings(options=embed_options(config), source=config.source, api_base=emb.api_base,
                          timeout_s=emb.timeout_s, max_attempts=emb.max_retries + 1,
                          max_inputs=emb.batch_size or None, max_tokens_per_request=emb.max_tokens_per_request or None,
                          request_concurrency=per_worker + 1, storage_options=config.storage_options,
                          content_key=content_key(config),
                          incremental_dir=incremental.workdir if incremental else None,
                          previous_output=incremental.previous_output if incremental else None)


def content_key(config: JobConfig) -> str:
    """What, besides the text, decides a vector: the part of the fingerprint every ``content_hash`` folds in."""
    emb = config.embedding
    fields = {"model": emb.model, "task": emb.task, "dimensions": emb.effective_dimensions,
              "normalized": emb.normalized, "late_chunking": emb.late_chunking, "truncate": emb.truncate}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def sink_start_info(config: JobConfig, sample: pa.Table) -> SinkStartInfo:
    names = ["id", *config.source.passthrough]
    schema = pa.schema([sample.schema.field(name) for name in names])
    return SinkStartInfo(model=config.embedding.model, task=config.embedding.task,
                         dimensions=config.embedding.effective_dimensions, fingerprint=config.fingerprint(),
                         passthrough_schema=schema, id_type=sample.schema.field("id").type)


def ledger_location(config: JobConfig) -> str:
    return config.checkpoint.path


def ledger_filesystem_options(config: JobConfig) -> dict | None:
    """``source.s3_endpoint`` for a ledger on S3, as the reader and the Parquet sink get it (without it a ledger on
    an S3-compatible store set only in the job file would be looked for on AWS)."""
    return config.storage_options if ledger_location(config).startswith("s3://") else None


def _init_ray() -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    # a local cluster gets no dashboard: it starts faster, and nothing here needs it
    kwargs: dict[str, Any] = {"address": address} if address else {"include_dashboard": False}
    ray.init(logging_level=logging.WARNING, log_to_driver=True, **kwargs)


def run_job(config: JobConfig, options: RunOptions = RunOptions(), *, out: TextIO | None = None) -> int:
    out = out or sys.stderr
    started = time.time()
    key = api_key_or_fail(config)
    print("embedder: effective configuration (secrets masked):", file=out)
    print(json.dumps(config.to_display_dict(), indent=2, default=str), file=out)
    plan = build_plan(config)
    ledger = Ledger.open(ledger_location(config), config.fingerprint(), config.fingerprint_fields(),
                         restart=options.restart, storage_options=ledger_filesystem_options(config))
    shard_ids = [shard.shard_id for shard in plan.shards]
    digest = plan_digest(shard_ids)
    previous = ledger.read_plan(include_shard_ids=False) or {}
    if previous.get("plan_digest") != digest or not previous.get("ids_checked"):
        # once per unchanged input: a resumed job does not read every id again
        check_duplicate_ids(plan.shards, config.source, config.storage_options)
        # Arrow's allocator keeps what the check freed (~90 MB at 1M ids) for reuse: give it back, so the
        # driver's memory does not depend on the corpus size (benchmarks/memory_scale.py)
        pa.default_memory_pool().release_unused()
    ledger.write_plan({**plan.summary(), "plan_digest": digest, "ids_checked": True}, shard_ids)
    done = ledger.done_ids()
    if options.retry_failed:
        retry = ledger.failed_shard_ids() & set(shard_ids)
        ledger.forget(retry)
        done -= retry
    todo = [shard for shard in plan.shards if shard.shard_id not in done]
    skipped = [shard for shard in plan.shards if shard.shard_id in done]
    progress = ProgressState(shards_total=len(plan.shards), rows_total=plan.rows, shards_skipped=len(skipped),
                             rows_skipped=sum(s.row_count for s in skipped), tpm_limit=config.limits.tpm,
                             price_per_million_tokens=config.limits.price_per_million_tokens)
    print(f"embedder: {len(plan.shards)} shards, {plan.rows:,} rows; {len(skipped)} shards already done, "
          f"{len(todo)} to embed; checkpoint at {ledger.location}", file=out)
    incremental = None
    if options.incremental or config.mode == "incremental":
        incremental = prepare_incremental(config, plan, ledger, content_key(config), out)
    sinks = build_sinks(config)
    info = sink_start_info(config, plan.sample)
    status, error, commits = "completed", None, []
    deleted = incremental.deleted_ids if incremental else None
    if todo:
        status, error, commits = _embed_on_ray(config, plan, todo, ledger, sinks, info, key, progress, out,
                                               incremental)
    else:
        for sink in sinks:
            sink.start(info)
        # nothing to embed: no Ray cluster is started, so a finished job's rerun takes seconds
        commits = commit_sinks(sinks, shard_ids, expected_output_rows(plan, ledger), deleted)
    report = _report(config, plan, progress, status, error, commits, started, ledger)
    if incremental is not None:
        report["incremental"] = incremental.report(progress)
    ledger.write_report(report)
    _print_summary(report, out)
    if status == "interrupted":
        return 130
    return 0 if status == "completed" else 1


def expected_output_rows(plan: JobPlan, ledger: Ledger) -> int:
    """Rows the sinks should hold: every planned row but the dead-lettered ones."""
    return plan.rows - ledger.failed_rows().num_rows


def _embed_on_ray(config: JobConfig, plan: JobPlan, todo: list, ledger: Ledger, sinks: list[Sink],
                  info: SinkStartInfo, key: Secret, progress: ProgressState, out: TextIO,
                  incremental: IncrementalRun | None = None) -> tuple:
    import ray

    from embedder.run import actors as actors
    from embedder.run.driver import Driver, DriverSettings, unwrap

    _init_ray()
    limits = config.limits
    limiter_name = f"embedder-limiter-{uuid.uuid4().hex[:12]}"
    # a permit held far longer than one request can take belongs to a lost request: the limiter takes it back
    lease_s = 2 * config.embedding.timeout_s + 60
    limiter = actors.limiter_actor(Limits(rpm=limits.rpm, tpm=limits.tpm, max_concurrency=limits.max_concurrency),
                                   limiter_name, lease_s)
    workers = config.workers
    settings = DriverSettings(workers=workers.count, cpus_per_worker=workers.cpus_per_worker,
                              max_shards_in_flight=workers.max_shards_in_flight or 2 * workers.count)
    display = ProgressDisplay(progress, stream=out, interval_s=config.progress.interval_s)
    worker_args = (worker_settings(config, incremental), key, limiter_name)
    driver = Driver(settings=settings, ledger=ledger, worker_args=worker_args, limiter=limiter, sinks=sinks,
                    sink_info=info, progress=progress, display=display)
    try:
        try:  # a sink that refuses its destination fails here, before any request
            ray.get(driver.sink.ready.remote())
        except Exception as exc:
            raise unwrap(exc) from None
        outcome = driver.run(todo)
        display.close()
        commits = []
        if outcome.status == "completed":
            commits = driver.commit([s.shard_id for s in plan.shards], expected_output_rows(plan, ledger),
                                    incremental.deleted_ids if incremental else None)
        return outcome.status, outcome.error, commits
    finally:
        driver.shutdown()
        ray.kill(limiter)


def _report(config: JobConfig, plan: JobPlan, progress: ProgressState, status: str, error: str | None,
            commits: list, started: float, ledger: Ledger) -> dict:
    elapsed = time.time() - started
    minutes = max(elapsed / 60.0, 1e-9)
    return {
        "status": status, "error": error, "started_at": started, "elapsed_s": round(elapsed, 2),
        "fingerprint": config.fingerprint(), "plan": plan.summary(), "progress": progress.as_dict(),
        "tokens_per_minute": round(progress.tokens / minutes, 1), "tpm_limit": config.limits.tpm,
        "cost_usd": round(progress.tokens / 1e6 * config.limits.price_per_million_tokens, 6),
        "failed_rows_total": ledger.failed_rows().num_rows,
        "outputs": [{"rows": c.rows, "parts": c.parts, "location": c.location, **c.extra} for c in commits],
        "checkpoint": ledger.location,
    }


def _print_summary(report: dict, out: TextIO) -> None:
    p = report["progress"]
    print(f"embedder: {report['status']} in {report['elapsed_s']:.1f}s — embedded {p['rows_embedded']:,} rows "
          f"({p['rows_skipped']:,} already done), {report['failed_rows_total']:,} failed rows, {p['tokens']:,} tokens "
          f"(~${report['cost_usd']:.4f}), {report['tokens_per_minute']:,.0f} tokens/min, 429s {p['rate_limited']}",
          file=out)
    for output in report["outputs"]:
        print(f"embedder: output {output['location']}: {output['rows']:,} rows in {output['parts']:,} parts", file=out)
        expected = output.get("expected_rows")
        if expected is not None and output.get("count") != expected:
            print(f"embedder: warning: {output['location']} holds {output.get('count'):,} rows, this job's plan put "
                  f"{expected:,} rows there", file=out)
    if report.get("incremental"):
        inc = report["incremental"]
        print(f"embedder: incremental: {inc['new']:,} new, {inc['changed']:,} changed, {inc['unchanged']:,} "
              f"unchanged, {inc['deleted']:,} deleted; about {inc['tokens_saved_estimate']:,} tokens saved", file=out)
    if report["failed_rows_total"]:
        print(f"embedder: {report['failed_rows_total']:,} rows could not be embedded; see "
              f"{report['checkpoint']}/_failed/ and rerun with --retry-failed after fixing them", file=out)
    if report["error"]:
        print(f"embedder: error: {report['error']}", file=out)
    print(f"embedder: report at {report['checkpoint']}/run_report.json", file=out)


def refuse_unknown(args: Any) -> None:
    if getattr(args, "restart", False) and getattr(args, "retry_failed", False):
        raise ConfigError("--restart and --retry-failed cannot be used together")
