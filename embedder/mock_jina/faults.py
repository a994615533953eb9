"""Fault kinds of the local server and the seeded picker that decides which request gets one.

A fault is drawn for a request that passed authentication and validation: first from the queue filled by
``POST /admin/inject`` (FIFO, deterministic), otherwise with probability ``fail_rate`` among the configured kinds,
from a ``random.Random(seed)`` so a run is reproducible when requests arrive in the same order.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Sequence

FAULT_KINDS: dict[str, str] = {
    "500": "500 JSON INTERNAL_ERROR",
    "502_html": "502 with an HTML body, as from a proxy",
    "503": "503 JSON SERVICE_UNAVAILABLE",
    "503_html": "503 with an HTML body, as from a proxy",
    "504": "504 JSON SERVICE_TIMEOUT",
    "429": "429 RATE_REQUEST_LIMIT_EXCEEDED with Retry-After: 1",
    "401": "401 AUTH_INVALID_API_KEY",
    "402": "402 AUTHZ_INSUFFICIENT_BALANCE (older servers)",
    "403": "403 AUTHZ_INSUFFICIENT_BALANCE",
    "400_too_long": "400 'Single text cannot exceed N tokens'",
    "stall": "sleeps stall_seconds, then answers normally (a client timeout should fire first)",
    "malformed_json": "200 with a truncated JSON body",
    "missing_embedding": "200 with one data entry dropped",
    "reset": "connection closed half-way through a 200 body",
}
DEFAULT_FAULTS: tuple[str, ...] = ("500", "503_html")

# Faults answered at once, before rate limiting and latency; the others go through the normal path.
IMMEDIATE_FAULTS = frozenset({"500", "502_html", "503", "503_html", "504", "429", "401", "402", "403",
                              "400_too_long"})


def parse_fault_kinds(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"500,stall"`` or ``["500", "stall"]`` → validated tuple; raises ``ValueError`` naming unknown kinds."""
    kinds = [k.strip() for k in value.split(",")] if isinstance(value, str) else [str(k).strip() for k in value]
    kinds = [k for k in kinds if k]
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind(s) {unknown}; known: {', '.join(FAULT_KINDS)}")
    return tuple(kinds)


class FaultPicker:
    """Injected faults first (FIFO), then a seeded random draw."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._rng = random.Random(seed)
        self._queue: deque[str] = deque()

    def inject(self, kinds: Sequence[str]) -> int:
        self._queue.extend(parse_fault_kinds(kinds))
        return len(self._queue)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def next(self, fail_rate: float, kinds: Sequence[str]) -> str | None:
        if self._queue:
            return self._queue.popleft()
        if fail_rate > 0 and kinds and self._rng.random() < fail_rate:
            return self._rng.choice(list(kinds))
        return None

    def reset(self) -> None:
        """Empty the queue and restart the random sequence from the seed."""
        self._queue.clear()
        self._rng = random.Random(self._seed)
