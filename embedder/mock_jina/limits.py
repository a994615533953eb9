"""Sliding-window rate limits and a concurrency cap, as a real API key has them.

The window holds the requests accepted in the last 60 seconds with their tokens. A request that would take the
window over ``rpm`` or ``tpm`` is refused with the number of seconds until enough of the window has expired:
that is the ``Retry-After`` the server sends. Limits are passed to every call, so a change made at runtime
applies to the very next request.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Rejection:
    """Why a request is refused, and when it may be tried again."""

    code: str
    retry_after: int


def _seconds(delay: float) -> int:
    # Retry-After is whole seconds; round up so a client honouring it never comes back too early.
    return max(1, math.ceil(delay))


class WindowLimiter:
    """Requests and tokens per sliding minute, plus requests in flight. Not thread-safe: one event loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._events: deque[tuple[float, int]] = deque()
        self._tokens = 0
        self.active = 0
        self.max_active_seen = 0

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - WINDOW_SECONDS:
            _, tokens = self._events.popleft()
            self._tokens -= tokens

    def check(self, tokens: int, rpm: int, tpm: int, max_concurrency: int) -> Rejection | None:
        """``None`` when a request of ``tokens`` tokens may start now; 0 for a limit means unlimited."""
        now = self._clock()
        self._expire(now)
        if max_concurrency and self.active >= max_concurrency:
            return Rejection("RATE_CONCURRENCY_LIMIT_EXCEEDED", 1)
        if rpm and len(self._events) + 1 > rpm:
            oldest = self._events[len(self._events) - rpm][0]
            return Rejection("RATE_REQUEST_LIMIT_EXCEEDED", _seconds(oldest + WINDOW_SECONDS - now))
        if tpm and self._tokens + tokens > tpm:
            return Rejection("RATE_TOKEN_LIMIT_EXCEEDED", self._token_wait(tokens, tpm, now))
        return None

    def _token_wait(self, tokens: int, tpm: int, now: float) -> int:
        if tokens > tpm:  # can never fit in one window; a full window is the honest answer
            return _seconds(WINDOW_SECONDS)
        excess = self._tokens + tokens - tpm
        freed = 0
        for stamp, spent in self._events:
            freed += spent
            if freed >= excess:
                return _seconds(stamp + WINDOW_SECONDS - now)
        return _seconds(WINDOW_SECONDS)

    def acquire(self, tokens: int) -> None:
        """Record an accepted request in the window and count it in flight."""
        self._events.append((self._clock(), tokens))
        self._tokens += tokens
        self.active += 1
        self.max_active_seen = max(self.max_active_seen, self.active)

    def release(self) -> None:
        self.active -= 1

    def remaining(self, rpm: int, tpm: int) -> tuple[int | None, int | None]:
        """Requests and tokens left in the current window (``None`` when unlimited)."""
        self._expire(self._clock())
        requests = max(0, rpm - len(self._events)) if rpm else None
        tokens = max(0, tpm - self._tokens) if tpm else None
        return requests, tokens

    def reset(self) -> None:
        """Forget the window (requests in flight stay counted: they are still running)."""
        self._events.clear()
        self._tokens = 0
        self.max_active_seen = self.active
