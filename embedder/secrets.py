"""A secret that can travel to Ray actors without ever being printed."""

from __future__ import annotations


class Secret:
    """Holds a key; ``repr`` and ``str`` never show it, so logs, tracebacks and Ray's task listings stay clean."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __reduce__(self):
        return (Secret, (self._value,))

    def __bool__(self) -> bool:
        return bool(self._value)


def mask(value: str | None) -> str:
    """How a secret is shown: whether it is set, and never more than its prefix."""
    if not value:
        return "<unset>"
    return f"{value[:5]}…(set, {len(value)} chars)" if value.startswith("jina_") else "<set>"
