"""Every way a run can end leaves ``run_report.json``: also the ones that end by an exception.

The driver turns the errors it expects (the API's, bad input, Ctrl-C in its loop, the dead-letter budget) into a
:class:`~embedder.run.execution.RunOutcome` and the run finishes normally (abort, report, summary). What escapes it —
a storage error, Ctrl-C while Ray starts or the sinks commit, a refusal while preparing — ends here: the sinks are let
go, the report records ``failed`` or ``interrupted`` with the error's class and message (secrets redacted by the
ledger), and the exception goes on to the command line, which prints it and exits non-zero. Writing the report is
best effort: it never hides the error that ended the run.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, TextIO

from embedder.config import JobConfig
from embedder.errors import EndpointError, FatalError
from embedder.ledger import Ledger, Progress, RunReport
from embedder.run.execution import Execution, RunOutcome

if TYPE_CHECKING:  # prepare reports its own refusals through this module
    from embedder.run.prepare import PreparedJob

log = logging.getLogger(__name__)


def fatal_message(exc: FatalError) -> str:
    """The run's error for a fatal API answer; an :class:`EndpointError` already says what answered and what to
    check."""
    return str(exc) if isinstance(exc, EndpointError) else f"the embeddings API refused the job: {exc}"


def outcome_of(exc: BaseException) -> RunOutcome:
    """The run's outcome when ``exc`` ended it: ``interrupted`` for Ctrl-C, else ``failed``."""
    if isinstance(exc, KeyboardInterrupt):
        return RunOutcome("interrupted", "interrupted (Ctrl-C): finished shards are kept", "KeyboardInterrupt")
    return RunOutcome("failed", str(exc) or type(exc).__name__, type(exc).__name__)


def end_by_exception(job: PreparedJob, execution: Execution | None, exc: BaseException, out: TextIO) -> None:
    """Let the sinks go and write the run report of a run that ``exc`` ended."""
    from embedder.run.report import build_report
    if execution is not None:
        try:
            execution.abort()
        except Exception as error:  # the run already failed: this must not mask why
            log.warning("letting the sinks go failed too: %s: %s", type(error).__name__, error)
    try:
        job.ledger.write_report(build_report(job, outcome_of(exc), []))
    except Exception as error:
        log.warning("could not write the run report: %s: %s", type(error).__name__, error)
        return
    print(f"embedder: {outcome_of(exc).status}; report at {job.ledger.location}/run_report.json", file=out)


def report_refusal(config: JobConfig, ledger: Ledger, started: float, exc: BaseException) -> None:
    """The report of a run refused while it was being prepared (the ledger was open already): no shard was tried."""
    outcome = outcome_of(exc)
    report = RunReport(status=outcome.status, progress=Progress(), error=outcome.error,
                       error_class=outcome.error_class, fingerprint=config.fingerprint(),
                       checkpoint=ledger.location, started_at=started, elapsed_s=round(time.time() - started, 2))
    with contextlib.suppress(Exception):
        ledger.write_report(report)
