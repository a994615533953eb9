"""Transient storage errors retried: exponential backoff with jitter, a named limit per operation, every retry
counted.

:func:`call` runs one operation (idempotent: a whole shard read, one part write, one marker write...). A failure
is translated by :mod:`embedder.storage.errors`; a permanent one is raised at once as a
:class:`~embedder.errors.StoragePermanent` naming the operation and the path, a transient one is retried after
``min(max_s, base_s * 2**(attempt-1))`` seconds times a random factor in [0.5, 1] (so many workers hit by the same
SlowDown do not come back together), up to the operation's :class:`Limit`. When the attempts are used up, the
last error is raised as a :class:`~embedder.errors.StorageTransient`: the caller decides (the driver tries the
shard again, the heartbeat is skipped, a marker write stops the job).

Our layer is the only one that retries: S3 filesystems are built with pyarrow's own retries off (see
:data:`embedder.storage.locations.PYARROW_S3_ATTEMPTS`), so each retry is seen, waited for and counted here.

Counting: each retry adds one to a :class:`RetryCounter`, the caller's (a shard's, a write's) or else the
process's :data:`PROCESS` counter (the driver's ledger, plan and heartbeat writes).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from embedder.errors import StorageError
from embedder.storage.errors import STORAGE_FAILURES, translate

log = logging.getLogger(__name__)
T = TypeVar("T")

SHARD_READ = "shard read"
PART_WRITE = "part write"
MANIFEST = "manifest"
LEDGER_MARKER = "ledger marker"
LEDGER_READ = "ledger read"
HEARTBEAT = "heartbeat"
PLANNING = "planning"
MILVUS_CALL = "milvus call"


@dataclass(frozen=True)
class Limit:
    """How often an operation is tried, and how long to wait between tries."""

    attempts: int
    """Tries in all, the first included."""
    base_s: float
    """The wait after the first failure; doubled after each further one..."""
    max_s: float
    """... up to this."""


LIMITS: Mapping[str, Limit] = {
    SHARD_READ: Limit(attempts=8, base_s=0.2, max_s=10.0),     # several requests each: a 10% fault rate hits often
    PART_WRITE: Limit(attempts=8, base_s=0.2, max_s=10.0),
    MANIFEST: Limit(attempts=10, base_s=0.2, max_s=10.0),      # the commit: worth waiting for
    LEDGER_MARKER: Limit(attempts=10, base_s=0.2, max_s=10.0),  # markers, dead letters, plan, report
    LEDGER_READ: Limit(attempts=8, base_s=0.2, max_s=10.0),
    HEARTBEAT: Limit(attempts=2, base_s=0.2, max_s=1.0),       # skipped when it fails: the next one is 5 s away
    PLANNING: Limit(attempts=8, base_s=0.2, max_s=10.0),       # listings and footers before the run
    MILVUS_CALL: Limit(attempts=5, base_s=0.5, max_s=8.0),
}
"""The named limits: worst case about 30 s of waiting for the 8-attempt ones, a minute for the 10-attempt ones."""


class Clock(Protocol):
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class RetryCounter:
    """Retries by operation name; safe to share between threads."""

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self._counts: dict[str, int] = dict(counts or {})
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, int]:  # travels into Ray actors with the object holding it
        return self.counts()

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(state)  # type: ignore[misc]

    def add(self, operation: str, n: int = 1) -> None:
        with self._lock:
            self._counts[operation] = self._counts.get(operation, 0) + n

    def merge(self, counts: Mapping[str, int]) -> None:
        for operation, n in counts.items():
            if n:
                self.add(operation, n)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))

    def since(self, earlier: Mapping[str, int]) -> dict[str, int]:
        """What was added after ``earlier`` (a :meth:`counts` taken before)."""
        return {op: n - earlier.get(op, 0) for op, n in self.counts().items() if n > earlier.get(op, 0)}

    @property
    def total(self) -> int:
        return sum(self.counts().values())


PROCESS = RetryCounter()
"""This process's retries that no caller counted itself."""
_CLOCK: Clock = SystemClock()
_RNG = random.Random()


def delay(limit: Limit, attempt: int, rng: random.Random | None = None) -> float:
    """The wait after failed try number ``attempt`` (1-based): exponential, capped, jittered into [½, 1]."""
    return min(limit.max_s, limit.base_s * 2 ** (attempt - 1)) * (rng or _RNG).uniform(0.5, 1.0)


def call(operation: str, path: str, fn: Callable[[], T], *, counter: RetryCounter | None = None,
         clock: Clock | None = None, rng: random.Random | None = None, limit: Limit | None = None) -> T:
    """``fn()``, retried on transient storage errors within ``operation``'s limit; a failure is raised as a
    :class:`~embedder.errors.StorageError` naming ``operation`` and ``path`` (see the module docstring)."""
    limit = limit or LIMITS[operation]
    attempt = 1
    while True:
        try:
            return fn()
        except StorageError as exc:  # translated further down already (a nested call)
            error: StorageError = exc
            cause: BaseException = exc
        except STORAGE_FAILURES as exc:
            error, cause = translate(exc, operation, path, attempts=attempt), exc
        if not error.retryable or attempt >= limit.attempts:
            if error is cause:
                raise error
            raise error from cause
        wait = delay(limit, attempt, rng)
        log.warning("storage %s of %s failed (%s); retry %d of %d in %.1fs", operation, path, error.reason,
                    attempt, limit.attempts - 1, wait)
        (counter if counter is not None else PROCESS).add(operation)
        (clock or _CLOCK).sleep(wait)
        attempt += 1
