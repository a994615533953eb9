"""``run_job``: a run in three steps.

1. **prepare** (:mod:`.prepare`): plan the input, open the ledger, refuse duplicate ids, decide what is left to do
   and, for an incremental run, classify the rows. No API call, no Ray.
2. **execute** (:mod:`.execution`, :mod:`.cluster`): embed the shards left to do on Ray, each marked done once every
   sink holds it. Returns a typed :class:`~embedder.run.execution.RunOutcome`.
3. **finish**: commit the sinks when the run completed (or let them go when it did not), write the run report,
   print the summary.
"""

from __future__ import annotations

import sys
from typing import TextIO

from embedder.config import JobConfig
from embedder.ledger import Heartbeat, RunReport
from embedder.run.execution import Execution, LocalExecution, RunOutcome
from embedder.run.exits import end_by_exception
from embedder.run.prepare import PreparedJob, RunOptions, prepare
from embedder.run.report import build_report, print_summary
from embedder.run.resilience import HeartbeatWriter
from embedder.sinks.base import CommitReceipt

__all__ = ["RunOptions", "execution_for", "finish", "run_job"]

EXIT_CODES = {"completed": 0, "interrupted": 130}
"""Exit codes by run status; any other status (``failed``) exits 1."""


def run_job(config: JobConfig, options: RunOptions | None = None, *, out: TextIO | None = None) -> int:
    """Run the job to its end (or to the first fatal error, or to Ctrl-C); the process's exit code."""
    options = options or RunOptions()
    out = out or sys.stderr
    job = prepare(config, options, out)
    execution: Execution | None = None
    try:
        execution = execution_for(job, out)
        outcome = execution.execute(job.todo)
        report = finish(job, execution, outcome, out)
    except BaseException as exc:  # what the driver did not turn into an outcome: reported, then raised on
        end_by_exception(job, execution, exc, out)
        raise
    finally:
        if execution is not None:
            execution.close()
    return EXIT_CODES.get(report.status, 1)


def execution_for(job: PreparedJob, out: TextIO) -> Execution:
    """Ray when there is something to embed; else the sinks in this process, only to be committed."""
    if not job.todo:
        return LocalExecution(job.sinks, job.sink_info)
    from embedder.run.cluster import RayExecution  # Ray is imported only when it is needed

    return RayExecution(job, out)


def expected_rows(job: PreparedJob) -> int:
    """The rows the sinks should hold when the plan is done: one per chunk of every document written."""
    if not job.config.documents:  # a row per input row: every planned row but the dead-lettered ones
        return job.plan.rows - job.ledger.failed_rows().num_rows
    planned = set(job.shard_ids)
    return sum(marker.stats.chunks for marker in job.ledger.done_markers() if marker.shard_id in planned)


def retire_dead_letters(job: PreparedJob) -> None:
    """Dead letters of shards no longer in the plan (their file was fixed or removed, so its shards have new ids)
    move to ``_failed/history/``: kept for the record, no longer counted in the report, the sinks' expected rows
    or ``embedder status``."""
    stale = job.ledger.failed_shard_ids() - set(job.shard_ids)
    if stale:
        job.ledger.retire_failed(sorted(stale))


def finish(job: PreparedJob, execution: Execution, outcome: RunOutcome, out: TextIO) -> RunReport:
    """Commit (a completed run) or abort (any other), then write the report and print the summary."""
    commits: list[CommitReceipt] = []
    if outcome.completed:
        retire_dead_letters(job)
        commits = execution.commit(job.shard_ids, expected_rows(job), job.deleted_ids, outcome.receipts)
    else:
        execution.abort()
    report = build_report(job, outcome, commits)
    # the last beat carries the final counts; like every heartbeat, it may fail without failing the run
    HeartbeatWriter(job.ledger, failing=outcome.heartbeats_failing).write(Heartbeat(report.progress, final=True))
    job.ledger.write_report(report)
    print_summary(report, out)
    return report
