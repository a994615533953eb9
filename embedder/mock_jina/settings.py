"""Settings of the local server; most can be changed while it runs (``POST /admin/config``)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from embedder.mock_jina.faults import DEFAULT_FAULTS, parse_fault_kinds

API_KEY_ENV = "MOCK_JINA_API_KEY"


@dataclass
class MockSettings:
    """Everything the server can be told. ``0`` for a limit means unlimited."""

    host: str = "127.0.0.1"
    port: int = 8787
    seed: int = 0
    """Seeds the fault draws and the shuffling of ``data``."""
    api_key: str | None = field(default=None, repr=False)
    """When set, only this key is accepted. Never shown in settings, stats or logs."""
    rpm: int = 0
    """Requests per sliding 60 s window."""
    tpm: int = 0
    """Tokens per sliding 60 s window."""
    max_concurrency: int = 0
    """Requests served at the same time."""
    latency_ms: float = 0.0
    latency_ms_per_1k_tokens: float = 0.0
    fail_rate: float = 0.0
    """Fraction of requests answered with a fault drawn from ``faults``."""
    faults: tuple[str, ...] = DEFAULT_FAULTS
    stall_seconds: float = 30.0
    balance_tokens: int | None = None
    """Once this many tokens are billed (since start or the last reset), answer 403; ``None`` = unlimited."""
    revoked: bool = False
    """Answer 401 AUTH_INVALID_API_KEY to every key, as after a key is revoked."""
    shuffle: bool = False
    """Return ``data`` in a shuffled order, so clients must sort by ``index``."""
    retry_after: bool = True
    """Send ``Retry-After`` with 429s."""
    reject_inputs: str | None = None
    """A regular expression: a request with an input it matches (``re.search``) gets a 400 about that input, as
    the API answers an input it cannot take. ``"^"`` rejects every input: a poisoned corpus."""

    def public(self) -> dict[str, Any]:
        """The settings as JSON, without the key (only whether one is required)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "api_key"}
        out["faults"] = list(self.faults)
        out["api_key_required"] = self.api_key is not None
        return out

    def apply(self, updates: Mapping[str, Any]) -> None:
        """Validate every update first, then apply them all; ``ValueError`` names the bad keys."""
        unknown = sorted(set(updates) - set(RUNTIME_FIELDS))
        if unknown:
            raise ValueError(f"not runtime settings: {unknown}; changeable: {sorted(RUNTIME_FIELDS)}")
        converted = {}
        for key, value in updates.items():
            try:
                converted[key] = RUNTIME_FIELDS[key](value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{key}: {exc}") from None
        for key, value in converted.items():
            setattr(self, key, value)


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected an integer >= 0, got {value!r}")
    return value


def _optional_non_negative_int(value: Any) -> int | None:
    return None if value is None else _non_negative_int(value)


def _non_negative_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"expected a number >= 0, got {value!r}")
    return float(value)


def _fraction(value: Any) -> float:
    number = _non_negative_float(value)
    if number > 1:
        raise ValueError(f"expected a fraction between 0 and 1, got {value!r}")
    return number


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _optional_pattern(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a regular expression or null, got {value!r}")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return value


RUNTIME_FIELDS = {
    "rpm": _non_negative_int,
    "tpm": _non_negative_int,
    "max_concurrency": _non_negative_int,
    "latency_ms": _non_negative_float,
    "latency_ms_per_1k_tokens": _non_negative_float,
    "fail_rate": _fraction,
    "faults": parse_fault_kinds,
    "stall_seconds": _non_negative_float,
    "balance_tokens": _optional_non_negative_int,
    "revoked": _boolean,
    "shuffle": _boolean,
    "retry_after": _boolean,
    "reject_inputs": _optional_pattern,
}
"""Settings ``POST /admin/config`` may change, with their validating converters."""
