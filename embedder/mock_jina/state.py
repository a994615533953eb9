"""The mutable state of one running server: settings, rate-limit window, fault picker and counters."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from embedder.mock_jina.faults import FaultPicker
from embedder.mock_jina.limits import WindowLimiter
from embedder.mock_jina.settings import MockSettings


@dataclass
class Stats:
    """Counters since start or the last ``POST /admin/reset``.

    Every embedding request counts once in ``requests``; its answer counts in ``by_status`` (``"reset"`` for a
    connection dropped on purpose). ``rate_limited`` counts the limiter's 429s, ``faults`` the injected or drawn
    faults, ``errors`` every other non-2xx answer (auth, validation, balance). Only complete 200 answers are
    billed: ``tokens``, ``inputs`` and ``billed_requests``.
    """

    requests: int = 0
    billed_requests: int = 0
    tokens: int = 0
    inputs: int = 0
    rate_limited: int = 0
    errors: int = 0
    faults: int = 0
    late_chunking_over_cut: int = 0
    """Late-chunked requests whose inputs went past the model's cut (8,192 tokens for v3)."""
    by_status: Counter[str] = field(default_factory=Counter)
    rate_limited_by_code: Counter[str] = field(default_factory=Counter)
    faults_by_kind: Counter[str] = field(default_factory=Counter)
    rejected_inputs: int = 0
    """Distinct inputs answered 400 by ``reject_inputs`` (each text counts once, however often it is sent)."""
    unrouted: int = 0
    """Requests to a path or with a method the API does not serve (answered 404 / 405); not in ``requests``."""
    unrouted_by_route: Counter[str] = field(default_factory=Counter)
    """``"<status> <METHOD> <path>"`` -> count, for the first :data:`MAX_UNROUTED_KEYS` distinct ones."""


MAX_UNROUTED_KEYS = 50


class MockState:
    """Owned by the event loop; handlers mutate it without locks because they never await mid-update."""

    def __init__(self, settings: MockSettings) -> None:
        self.settings = settings
        self.limiter = WindowLimiter()
        self.picker = FaultPicker(settings.seed)
        self.shuffle_rng = random.Random(settings.seed)
        self.stats = Stats()
        self._rejected: set[int] = set()  # hashes of the texts reject_inputs refused, for rejected_inputs

    def reset(self) -> None:
        """Zero the counters and the windows, empty the fault queue, restart the seeded draws."""
        self.stats = Stats()
        self._rejected = set()
        self.limiter.reset()
        self.picker.reset()
        self.shuffle_rng = random.Random(self.settings.seed)

    def count_rejected(self, texts: list[str]) -> None:
        for text in texts:
            key = hash(text)
            if key not in self._rejected:
                self._rejected.add(key)
                self.stats.rejected_inputs += 1

    def count_unrouted(self, method: str, path: str, status: int) -> None:
        stats = self.stats
        stats.unrouted += 1
        key = f"{status} {method} {path[:200]}"
        if key in stats.unrouted_by_route or len(stats.unrouted_by_route) < MAX_UNROUTED_KEYS:
            stats.unrouted_by_route[key] += 1

    def snapshot(self) -> dict[str, Any]:
        s = self.stats
        return {
            "requests": s.requests,
            "billed_requests": s.billed_requests,
            "tokens": s.tokens,
            "inputs": s.inputs,
            "rate_limited": s.rate_limited,
            "errors": s.errors,
            "faults": s.faults,
            "late_chunking_over_cut": s.late_chunking_over_cut,
            "by_status": dict(s.by_status),
            "rate_limited_by_code": dict(s.rate_limited_by_code),
            "faults_by_kind": dict(s.faults_by_kind),
            "max_concurrent_seen": self.limiter.max_active_seen,
            "in_flight": self.limiter.active,
            "queued_faults": self.picker.queued,
            "rejected_inputs": s.rejected_inputs,
            "unrouted": s.unrouted,
            "unrouted_by_route": dict(s.unrouted_by_route),
        }
