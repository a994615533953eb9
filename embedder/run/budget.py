"""The dead-letter budget: a job whose rows keep failing for one systemic reason stops, instead of walking the whole
corpus dead-lettering row after row (a text column that holds URLs, a model that refuses every input).

Every worker reports each request's outcome as it comes (rows embedded, rows dead-lettered with their reason, file
and row) to one :class:`FailureBudget` per job (a Ray actor: ``embedder.run.actors.budget_actor``); the driver asks
it for a verdict twice a second. Once ``limits.failed_fraction_min_rows`` rows were handled, more than
``limits.max_failed_fraction`` of them dead-lettered stops the job with the commonest reason and example rows.
Finished shards stay finished; the shards in flight are embedded again by the next run.

Rows are counted as the worker sends them: an input row, or a chunk when documents are chunked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from embedder.errors import TooManyFailures

EXAMPLES = 3
"""Example rows (``file:row``) the message gives."""
MAX_REASON_CHARS = 300


class FailureBudget:
    """Counts rows handled and dead-lettered by reason, with the first rows of each reason."""

    def __init__(self, max_fraction: float, min_rows: int) -> None:
        self.max_fraction = max_fraction
        self.min_rows = min_rows
        self.ok = 0
        self.failed = 0
        self.reasons: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def record(self, ok: int, failures: Sequence[tuple[str, str, int]] = ()) -> None:
        """``ok`` rows embedded; ``failures``: ``(reason, file, row)`` of each row dead-lettered."""
        self.ok += ok
        self.failed += len(failures)
        for reason, file, row in failures:
            reason = reason[:MAX_REASON_CHARS]
            self.reasons[reason] += 1
            examples = self.examples.setdefault(reason, [])
            if len(examples) < EXAMPLES:
                examples.append(f"{file}:{row}")

    @property
    def handled(self) -> int:
        return self.ok + self.failed

    def exceeded(self) -> bool:
        return self.handled >= max(1, self.min_rows) and self.failed > self.max_fraction * self.handled

    def verdict(self) -> str | None:
        """Why the job must stop, or ``None``."""
        if not self.exceeded():
            return None
        reason, count = self.reasons.most_common(1)[0]
        return (f"{self.failed:,} of the {self.handled:,} rows handled so far were dead-lettered "
                f"({self.failed / self.handled:.0%}), more than limits.max_failed_fraction = {self.max_fraction:g}: "
                f"a systemic cause, not bad rows. Commonest reason ({count:,} rows): {reason!r}; for example "
                f"{', '.join(self.examples[reason])}. Finished shards are kept: fix the cause, then run the job "
                f"again (with --retry-failed to embed again the dead-lettered rows of finished shards)")

    def snapshot(self) -> dict:
        return {"ok": self.ok, "failed": self.failed, "reasons": dict(self.reasons.most_common(5))}


def stop_error(verdict: str) -> TooManyFailures:
    """The error that stops the job, from :meth:`FailureBudget.verdict`."""
    return TooManyFailures(verdict)
