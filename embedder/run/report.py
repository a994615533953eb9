"""Step 3 of a run, its last part: the run report (``run_report.json``) and the summary printed at the end."""

from __future__ import annotations

import time
from typing import TextIO

from embedder import humanize
from embedder.ledger import RunReport
from embedder.run.execution import RunOutcome
from embedder.run.prepare import PreparedJob
from embedder.sinks.base import CommitReceipt


def build_report(job: PreparedJob, outcome: RunOutcome, commits: list[CommitReceipt]) -> RunReport:
    for commit in commits:  # the commit's storage retries (counted in the sink actor) count too
        job.tracker.storage_retries.merge(commit.extra.get("storage_retries") or {})
    progress = job.tracker.snapshot()
    elapsed = time.time() - job.started
    minutes = max(elapsed / 60.0, 1e-9)
    return RunReport(
        status=outcome.status, error=outcome.error, error_class=outcome.error_class, progress=progress,
        fingerprint=job.config.fingerprint(), checkpoint=job.ledger.location, started_at=job.started,
        elapsed_s=round(elapsed, 2), plan=job.plan.summary(), tokens_per_minute=round(progress.tokens / minutes, 1),
        tpm_limit=job.config.limits.tpm, cost_usd=progress.cost_usd,
        failed_rows_total=job.ledger.failed_rows().num_rows,
        outputs=[{"rows": c.rows, "parts": c.parts, "location": c.location, **c.extra} for c in commits],
        incremental=job.incremental.report(progress) if job.incremental is not None else None,
    )


def print_summary(report: RunReport, out: TextIO) -> None:
    p = report.progress
    print(f"embedder: {report.status} in {report.elapsed_s:.1f}s — embedded {p.documents_embedded:,} documents "
          f"into {p.chunks:,} rows ({p.rows_skipped:,} input rows already done), {report.failed_rows_total:,} failed "
          f"documents, {p.tokens:,} tokens "
          f"({humanize.dollars(report.cost_usd)}), {report.tokens_per_minute:,.0f} tokens/min, 429s {p.rate_limited}",
          file=out)
    for output in report.outputs:
        print(f"embedder: output {output['location']}: {output['rows']:,} rows in {output['parts']:,} parts", file=out)
        expected = output.get("expected_rows")
        if expected is not None and output.get("count") != expected:
            print(f"embedder: warning: {output['location']} holds {output.get('count'):,} rows, this job's plan put "
                  f"{expected:,} rows there", file=out)
    if report.incremental:
        inc = report.incremental
        print(f"embedder: incremental: {inc['new']:,} new, {inc['changed']:,} changed, {inc['unchanged']:,} "
              f"unchanged, {inc['deleted']:,} deleted; about {inc['tokens_saved_estimate']:,} tokens saved", file=out)
    if report.failed_rows_total:
        print(f"embedder: {report.failed_rows_total:,} rows could not be embedded; see "
              f"{report.checkpoint}/_failed/ and rerun with --retry-failed after fixing them", file=out)
    if report.error:
        print(f"embedder: error: {report.error}", file=out)
    print(f"embedder: report at {report.checkpoint}/run_report.json", file=out)
