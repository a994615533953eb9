"""Numbers as people read them: durations, large counts and money, the same on every screen and report."""

from __future__ import annotations

import math


def duration(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 07m``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def count(value: float) -> str:
    """``950``, ``12.3k``, ``4.5M``, ``1.2G``."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def dollars(value: float) -> str:
    """``$0.0123``: four decimals, as token prices are tiny."""
    return f"${value:,.4f}"
