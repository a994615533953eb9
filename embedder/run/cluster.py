"""Embedding on Ray: start (or join) the cluster, start the job's actors, run the driver, commit through the sink
actor, and take every actor down at the end.

One of the three modules that import Ray (with :mod:`.actors` and :mod:`.driver`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import uuid
from typing import Any, TextIO

import pyarrow as pa
import ray

from embedder.run import actors, quiet
from embedder.run.driver import Driver, unwrap
from embedder.run.execution import RunOutcome
from embedder.run.limiter import Limits
from embedder.run.metrics import JobMetrics
from embedder.run.prepare import PreparedJob
from embedder.run.progress_display import ProgressDisplay
from embedder.sinks.base import CommitReceipt, WriteReceipt
from embedder.source.shards import Shard


def init_ray() -> None:
    """Join the cluster named by ``$RAY_ADDRESS``, else start a local one (without a dashboard: it starts faster,
    and nothing here needs it). Without debug, the actors' logs reach this terminal at WARNING and up, and Ray's
    own notes (raylet messages about killed actors, the token-authentication notice) do not."""
    if ray.is_initialized():
        return
    debug = quiet.debug_enabled()
    quiet.quiet_loggers()
    if not debug:  # Ray warns that it enabled token authentication by default: it did, and nothing needs saying
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
        os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")  # the driver reads every result it awaits
    address = os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"address": address} if address else {"include_dashboard": False}
    level = "DEBUG" if debug else "WARNING"
    root = logging.getLogger()
    handlers_before = list(root.handlers)
    ray.init(logging_level=logging.DEBUG if debug else logging.WARNING, log_to_driver=True,
             logging_config=ray.LoggingConfig(log_level=level), **kwargs)
    if handlers_before:  # the CLI already logs to this terminal: Ray's handler on the root would print each line twice
        for handler in [h for h in root.handlers if h not in handlers_before]:
            root.removeHandler(handler)
    if not debug:
        _hide_raylet_messages()


def _hide_raylet_messages() -> None:
    """Ray prints the raylet's error messages (an actor killed at shutdown, a worker restarted) with the actors'
    forwarded output; the driver handles those events and says what matters itself, so without debug they go."""
    from ray._private import worker as ray_worker

    original = ray_worker.print_to_stdstream

    def filtered(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            original(data, ignore_prefix)

    ray_worker.print_to_stdstream = filtered  # the error listener looks it up on every message
    dispatcher = ray_worker.global_worker_stdstream_dispatcher
    with contextlib.suppress(Exception):  # the actors' output: same filter (the handler binds the function)
        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler("ray_print_logs", functools.partial(
            filtered, ignore_prefix=ray_worker._should_ignore_worker_log_prefix(ray_worker.global_worker)))


class RayExecution:
    """The job's actors on Ray: one rate limiter, the embedding workers and one sink actor."""

    def __init__(self, job: PreparedJob, out: TextIO) -> None:
        config = job.config
        init_ray()
        limits = config.limits
        self.limiter_name = f"embedder-limiter-{uuid.uuid4().hex[:12]}"
        # a permit held far longer than one request can take belongs to a lost request: the limiter takes it back
        lease_s = 2 * config.embedding.timeout_s + 60
        self.limiter = actors.limiter_actor(Limits(rpm=limits.rpm, tpm=limits.tpm,
                                                   max_concurrency=limits.max_concurrency), self.limiter_name, lease_s)
        budget_name = f"embedder-budget-{self.limiter_name.rsplit('-', 1)[1]}"
        self.budget = actors.budget_actor(limits.max_failed_fraction, limits.failed_fraction_min_rows, budget_name)
        self.workers = actors.worker_actors(config.workers.count, config.workers.cpus_per_worker,
                                            job.worker_settings, job.key, self.limiter_name, budget_name)
        self.sink = actors.sink_actor(job.sinks, job.sink_info)
        self.job = job
        self.display = ProgressDisplay(job.tracker.snapshot, stream=out, interval_s=config.progress.interval_s)
        try:  # a sink that refuses its destination fails here, before any request
            ray.get(self.sink.ready.remote())
        except Exception as exc:
            self.close()
            raise unwrap(exc) from None

    def execute(self, todo: list[Shard]) -> RunOutcome:
        driver = Driver(workers=self.workers, sink=self.sink, limiter=self.limiter, ledger=self.job.ledger,
                        tracker=self.job.tracker, display=self.display,
                        max_in_flight=self.job.config.workers.effective_max_shards_in_flight,
                        sink_count=len(self.job.sinks), metrics=JobMetrics(self.job.config.job_name),
                        budget=self.budget)
        try:
            return driver.run(todo)
        finally:
            self.display.close()

    def commit(self, shard_ids: list[str], expected_rows: int, deleted_ids: pa.Array | None,
               receipts: list[list[WriteReceipt]]) -> list[CommitReceipt]:
        try:
            return ray.get(self.sink.commit.remote(shard_ids, expected_rows, deleted_ids, receipts))
        except Exception as exc:
            raise unwrap(exc) from None

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            ray.get(self.sink.abort.remote(), timeout=60)

    def close(self) -> None:
        for handle in [*getattr(self, "workers", []), getattr(self, "sink", None), self.limiter,
                       getattr(self, "budget", None)]:
            if handle is not None:
                with contextlib.suppress(Exception):
                    ray.kill(handle, no_restart=True)

    def __enter__(self) -> RayExecution:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
