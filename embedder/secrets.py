"""Secrets: a key that can travel to Ray actors without ever being printed, and credentials kept out of URIs.

Keys come from the environment only. :class:`Secret` hides a key from ``repr``, ``str``, logs, tracebacks and
Ray's task listings; :func:`mask_uri` hides a ``user:password@`` part of a URI before it is shown.
"""

from __future__ import annotations

import re

SECRET_MESSAGE = "put secrets in the environment (JINA_API_KEY / MILVUS_TOKEN), not in the job file"
"""What every refusal of a secret in a job file tells the user to do instead."""

_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")


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

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))

    def __bool__(self) -> bool:
        return bool(self._value)


def mask_uri(uri: str) -> str:
    """``uri`` with any ``user:password@`` part replaced by ``***@``."""
    return _USERINFO.sub(r"\1***@", uri)


def secret_marker(source: str | None, looked_in: tuple[str, ...]) -> str:
    """How a secret is shown: the variable it came from, or where it was looked for; never its value."""
    if source is not None:
        return f"<from ${source}: set>"
    return "<unset: " + ", ".join(f"${name}" for name in looked_in) + ">"
