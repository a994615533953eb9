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
    minutes = elapsed / 60.0  # at least one: the quota's window (a shorter run's rate is a burst)
    return RunReport(
        status=outcome.status, error=outcome.error, error_class=outcome.error_class, progress=progress,
        fingerprint=job.config.fingerprint(), checkpoint=job.ledger.location, started_at=job.started,
        elapsed_s=round(elapsed, 2), plan=job.plan.summary(),
        tokens_per_minute=round(progress.tokens / max(minutes, 1.0), 1),
        tpm_limit=job.config.limits.tpm, cost_usd=progress.cost_usd,
        failed_rows_total=job.ledger.failed_rows().num_rows,
        outputs=[{"rows": c.rows, "parts": c.parts, "location": c.location, **c.extra} for c in commits],
        incremental=job.incremental.report(progress) if job.incremental is not None else None,
    )


def rate_text(report: RunReport) -> str:
    """Tokens per minute as the quota counts them; a run shorter than a minute fits in one window, so its rate
    over its seconds is a burst and is labelled as such."""
    p = report.progress
    limit = f" (limit {report.tpm_limit:,}/min)" if report.tpm_limit else ""
    if report.elapsed_s >= 60 or not p.tokens:
        return f"{report.tokens_per_minute:,.0f} tokens/min on average{limit}"
    burst = p.tokens / max(report.elapsed_s, 1e-9) * 60
    return (f"all {p.tokens:,} tokens within one minute{limit}; burst rate {burst:,.0f} tokens/min over "
            f"{report.elapsed_s:.0f}s")


def done_text(report: RunReport) -> str:
    """What happened to the documents: embedded now, kept (incremental), deleted, failed; and the rows written."""
    p = report.progress
    text = f"embedded {p.documents_embedded:,} documents"
    if report.incremental:
        inc = report.incremental
        text += f", kept {inc['unchanged']:,} unchanged, deleted {inc['deleted']:,}"
    text += f", {report.failed_rows_total:,} failed documents; wrote {p.chunks:,} rows"
    if p.rows_skipped:
        text += f" ({p.rows_skipped:,} input rows were done by an earlier run)"
    return text


def print_summary(report: RunReport, out: TextIO) -> None:
    p = report.progress
    print(f"embedder: {report.status} in {report.elapsed_s:.1f}s — {done_text(report)}", file=out)
    print(f"embedder: {p.tokens:,} tokens, spent {humanize.dollars(report.cost_usd)}; {rate_text(report)}; "
          f"429s {p.rate_limited}, retries {p.retries}", file=out)
    for output in report.outputs:
        print(f"embedder: output {output['location']}: {output['rows']:,} rows in {output['parts']:,} parts", file=out)
        expected = output.get("expected_rows")
        if expected is not None and output.get("count") != expected:
            print(f"embedder: warning: {output['location']} holds {output.get('count'):,} rows, this job's plan put "
                  f"{expected:,} rows there", file=out)
    if report.incremental:
        inc = report.incremental
        print(f"embedder: incremental: {inc['new']:,} new and {inc['changed']:,} changed documents embedded, "
              f"{inc['unchanged']:,} unchanged kept, {inc['deleted']:,} deleted; about "
              f"{inc['tokens_saved_estimate']:,} tokens saved", file=out)
    if report.failed_rows_total:
        print(f"embedder: {report.failed_rows_total:,} rows could not be embedded; see "
              f"{report.checkpoint}/_failed/ and rerun with --retry-failed after fixing them", file=out)
    if report.error:
        print(f"embedder: error: {report.error}", file=out)
    print(f"embedder: report at {report.checkpoint}/run_report.json", file=out)
