"""One rate limiter for every request of a job: requests/minute, tokens/minute and concurrent requests.

:class:`RateWindow` is the pure core (clock handed in, so tests control time). :class:`RateLimiter` puts an
asyncio face on it; :class:`SharedLimiter` adds who holds which permit. The job runs one of those inside a Ray actor
(``embedder.run.actors``) so that all workers on all nodes share it, and each worker's client asks it for a permit
before every attempt.

Why a sliding 60-second window: it is what a per-minute quota means, and it lets a job start at full speed. A
request is counted from when it is granted until 60 s after its answer came back, which is never earlier than the
API counted it, so the job's view of the window is always the more cautious one. After a 429 every caller is paused
(Retry-After, else a backoff) and the rate is cut; each success then raises it again up to the configured ceiling
(additive increase, multiplicative decrease).

In a job the window is a *canary* too (``canary=True``): until the API has answered one request (vectors, or a
refusal of an input), one request at a time is in flight; after an answer that stops the job (a wrong endpoint, a
revoked key: the client's ``verdict="stop"``) no permit is granted again. So a wrong ``api_base`` costs one
request, not one per worker, and nothing is sent while the driver winds the job down.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 60.0
_RETURNED = object()
STOPPED_WAIT_S = 1.0
"""How often a caller waiting on a stopped window asks again (the driver ends the job meanwhile)."""


@dataclass(frozen=True)
class Limits:
    """The ceiling the limiter enforces; ``0`` means unlimited."""

    rpm: int = 0
    tpm: int = 0
    max_concurrency: int = 0


@dataclass
class _Grant:
    granted_at: float
    tokens: int


class RateWindow:
    """The limiter's state and arithmetic, without any waiting.

    A request counts against the window while in flight and for 60 s after its answer. In-flight grants are held
    by permit; finished ones sit in a deque in the order they finished, so expiring them is a pop from the left.
    A grant whose release never comes (its worker died, its task was cancelled) is retired after ``lease_s``.
    """

    def __init__(self, limits: Limits, *, clock: Callable[[], float] = time.monotonic, decrease: float = 0.7,
                 increase: float = 0.02, min_fraction: float = 0.1, default_pause_s: float = 2.0,
                 lease_s: float = 600.0, canary: bool = False) -> None:
        self.limits = limits
        self.confirmed = not canary  # the API has answered: more than one request may be in flight
        self.canary = canary
        self.stopped = False  # an answer stopped the job: no more permits
        self.clock = clock
        self.decrease, self.increase, self.min_fraction = decrease, increase, min_fraction
        self.default_pause_s = default_pause_s
        self.lease_s = lease_s
        self.fraction = 1.0  # share of rpm/tpm currently allowed
        self.concurrency_cap = limits.max_concurrency
        self.paused_until = 0.0
        self._active: dict[int, _Grant] = {}  # in flight, in grant order
        self._active_tokens = 0
        self._done: deque[tuple[float, int]] = deque()  # (finished at, tokens) still inside the window
        self._done_tokens = 0
        self._ids = itertools.count(1)
        self.totals = {"granted": 0, "rate_limited": 0, "tokens": 0, "requests_ok": 0, "failed": 0,
                       "leases_expired": 0}
        """Attempts by how they ended: ``requests_ok`` (billed ``tokens``), ``rate_limited`` (429) and ``failed``
        (any other error, a timeout, or a permit given back unused)."""
        self._billed: deque[tuple[float, int]] = deque()  # (answer time, tokens): the achieved rate

    @property
    def in_flight(self) -> int:
        return len(self._active)

    def _expire(self, now: float) -> None:
        while self._active:
            permit, grant = next(iter(self._active.items()))
            if grant.granted_at > now - self.lease_s:
                break
            self.totals["leases_expired"] += 1
            # counted as answered at the end of its lease: the latest it can have been billed
            self._finish(permit, grant.granted_at + self.lease_s, None)
        while self._done and self._done[0][0] <= now - WINDOW_S:
            self._done_tokens -= self._done.popleft()[1]
        while self._billed and self._billed[0][0] <= now - WINDOW_S:
            self._billed.popleft()

    def _finish(self, permit: int, now: float, used_tokens: int | None) -> _Grant | None:
        grant = self._active.pop(permit, None)
        if grant is None:
            return None
        self._active_tokens -= grant.tokens
        tokens = grant.tokens if used_tokens is None else used_tokens
        self._done.append((now, tokens))
        self._done_tokens += tokens
        return grant

    def try_acquire(self, estimated_tokens: int) -> tuple[int | None, float]:
        """``(permit, 0)`` when granted now, else ``(None, seconds to wait before asking again)``."""
        now = self.clock()
        self._expire(now)
        if self.stopped:
            return None, STOPPED_WAIT_S
        if now < self.paused_until:
            return None, self.paused_until - now
        if not self.confirmed and self._active:
            return None, 0.05  # the canary is out: woken by its release
        if self.concurrency_cap and self.in_flight >= self.concurrency_cap:
            return None, 0.05  # woken earlier by a release
        requests = len(self._active) + len(self._done)
        tokens = self._active_tokens + self._done_tokens
        wait = 0.0
        if self.limits.rpm:
            budget = max(1, int(self.limits.rpm * self.fraction))
            if requests + 1 > budget:
                wait = max(wait, self._time_until_freed(now, requests + 1 - budget, by_tokens=False))
        if self.limits.tpm:
            budget = max(1, int(self.limits.tpm * self.fraction))
            need = min(estimated_tokens, budget)  # a request larger than the whole budget goes alone
            if tokens + need > budget:
                wait = max(wait, self._time_until_freed(now, tokens + need - budget, by_tokens=True))
        if wait > 0:
            return None, wait
        permit = next(self._ids)
        self._active[permit] = _Grant(now, estimated_tokens)
        self._active_tokens += estimated_tokens
        self.totals["granted"] += 1
        return permit, 0.0

    def _time_until_freed(self, now: float, amount: int, *, by_tokens: bool) -> float:
        """Seconds until ``amount`` requests (or tokens) leave the window; in-flight grants free nothing yet."""
        freed = 0
        for done_at, tokens in self._done:
            freed += tokens if by_tokens else 1
            if freed >= amount:
                return max(0.01, done_at + WINDOW_S - now)
        return 0.25  # waiting on requests still in flight: their release wakes the waiters

    def release(self, permit: int, used_tokens: int | None, rate_limited_after: float | None = None,
                rate_limited_kind: str | None = None, verdict: str | None = None) -> None:
        """Record an attempt's outcome: tokens billed (``None`` for a failure) or a 429 with its Retry-After.
        ``verdict`` (canary mode): ``"answered"`` when the API refused an input (it is the API), ``"stop"`` when
        the answer stops the job."""
        now = self.clock()
        if self.canary and verdict == "stop":
            self.stopped = True
        elif used_tokens is not None or verdict == "answered":
            self.confirmed = True
        if self._finish(permit, now, used_tokens) is None:
            return  # already retired by its lease
        if rate_limited_kind is not None:
            self.totals["rate_limited"] += 1
            self.paused_until = max(self.paused_until, now + (rate_limited_after if rate_limited_after is not None
                                                              else self.default_pause_s))
            if rate_limited_kind == "concurrency" and self.in_flight:
                self.concurrency_cap = max(1, min(self.concurrency_cap or self.in_flight, self.in_flight))
            else:
                self.fraction = max(self.min_fraction, self.fraction * self.decrease)
            return
        if used_tokens is None:
            self.totals["failed"] += 1
        else:
            self.totals["requests_ok"] += 1
            self.totals["tokens"] += used_tokens
            self._billed.append((now, used_tokens))
            self.fraction = min(1.0, self.fraction + self.increase)
            if self.limits.max_concurrency and self.concurrency_cap < self.limits.max_concurrency:
                self.concurrency_cap += 1

    def snapshot(self) -> dict:
        now = self.clock()
        self._expire(now)
        return {**self.totals, "in_flight": self.in_flight, "window_requests": len(self._active) + len(self._done),
                "window_tokens": self._active_tokens + self._done_tokens,
                "tokens_last_minute": sum(t for _, t in self._billed), "fraction": round(self.fraction, 3),
                "paused_for_s": round(max(0.0, self.paused_until - now), 2), "rpm": self.limits.rpm,
                "tpm": self.limits.tpm, "max_concurrency": self.limits.max_concurrency,
                "confirmed": self.confirmed, "stopped": self.stopped}


class RateLimiter:
    """Async permits over a :class:`RateWindow`; implements the client's ``RequestGate`` protocol."""

    def __init__(self, limits: Limits, **window_options) -> None:
        self.window = RateWindow(limits, **window_options)
        self._changed = asyncio.Event()

    async def acquire(self, estimated_tokens: int) -> int:
        while True:
            permit, wait = self.window.try_acquire(estimated_tokens)
            if permit is not None:
                return permit
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=wait)

    async def release(self, permit: int, used_tokens: int | None, rate_limited_after: float | None = None,
                      rate_limited_kind: str | None = None, verdict: str | None = None) -> None:
        self.window.release(permit, used_tokens, rate_limited_after, rate_limited_kind, verdict)
        self._changed.set()

    async def snapshot(self) -> dict:
        return self.window.snapshot()


class SharedLimiter:
    """One per job: every worker on every node asks it before each request (async actor: no thread per call).

    A worker that dies while it holds permits never returns them; they would count as requests in flight for
    ever, and the concurrency cap and the sliding window would never free them: the whole job would stall. So
    each permit is recorded with its owner, ``<worker name>/<incarnation>``. A restarted worker registers its new
    incarnation before it asks for anything (:meth:`register`): the permits of its earlier incarnations go back,
    and so does any permit an earlier incarnation's still-waiting ``acquire`` is granted later (Ray does not
    cancel the calls of a dead caller). Any permit held longer than ``lease_s`` (far longer than one request may
    take) is retired by the window itself (:class:`~embedder.run.limiter.RateWindow`): a safety net for losses no one
    reports.
    """

    CHECK_S = 5.0
    """How often a waiting ``acquire`` checks that its caller is still alive."""

    def __init__(self, limits: Limits, lease_s: float | None = None, canary: bool = False) -> None:
        self.limiter = RateLimiter(limits, canary=canary, **({"lease_s": lease_s} if lease_s else {}))
        self._held: dict[int, str | None] = {}  # permit -> owner
        self._live: dict[str, str] = {}  # worker name -> its current incarnation

    async def acquire(self, estimated_tokens: int, owner: str | None = None) -> int | None:
        while True:
            if self._is_dead(owner):
                return None  # nobody is waiting for this answer
            try:  # cancelled only while waiting, never between a grant and its return
                permit = await asyncio.wait_for(self.limiter.acquire(estimated_tokens), timeout=self.CHECK_S)
            except TimeoutError:
                continue
            self._held[permit] = owner
            if self._is_dead(owner):
                await self.release(permit, None)
            return permit

    async def release(self, permit: int, used_tokens: int | None, rate_limited_after: float | None = None,
                      rate_limited_kind: str | None = None, verdict: str | None = None) -> None:
        if self._held.pop(permit, _RETURNED) is not _RETURNED:  # a permit taken back is not released twice
            await self.limiter.release(permit, used_tokens, rate_limited_after, rate_limited_kind, verdict)

    async def register(self, owner: str) -> int:
        """``owner`` (``<worker name>/<incarnation>``) is its worker's live incarnation from now on; the permits
        earlier incarnations hold go back as failed attempts. Returns how many."""
        worker, _, incarnation = owner.partition("/")
        self._live[worker] = incarnation
        permits = [permit for permit, held_by in self._held.items() if self._is_dead(held_by)]
        for permit in permits:
            await self.release(permit, None)
        return len(permits)

    async def snapshot(self) -> dict:
        return await self.limiter.snapshot()

    def _is_dead(self, owner: str | None) -> bool:
        if owner is None:
            return False
        worker, _, incarnation = owner.partition("/")
        return self._live.get(worker, incarnation) != incarnation


_RETURNED = object()
