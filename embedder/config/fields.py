"""Typed sections from TOML tables: every key's name, type and range checked, errors that name the key.

A section is a frozen dataclass of :mod:`embedder.config.schema`; a field's metadata carries its checks (``ge``,
``gt``, ``le``, ``choices``, ``upper``). :class:`Context` remembers where each value came from (the job file, a
``--set``, an environment variable), so every message can say so.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from embedder.errors import ConfigError

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


@dataclass
class Context:
    """Where values came from, so every message can name the file, the ``--set`` or the variable."""

    source_name: str
    origins: dict[str, str] = field(default_factory=dict)

    def where(self, key: str) -> str:
        origin = self.origins.get(key)
        return f"{origin} (job {self.source_name})" if origin else self.source_name

    def invalid(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"invalid '{key}' in {self.where(key)}: {reason}")

    def unknown(self, key: str, candidates: Sequence[str], what: str = "key") -> ConfigError:
        # compare the last parts only: a shared "section." prefix would make every key look alike
        leaves = {candidate.rpartition(".")[2]: candidate for candidate in candidates}
        close = difflib.get_close_matches(key.rpartition(".")[2], list(leaves), n=1, cutoff=0.6)
        hint = f"; did you mean '{leaves[close[0]]}'?" if close else ""
        return ConfigError(f"unknown {what} '{key}' in {self.where(key)}{hint}")

    def missing(self, key: str) -> ConfigError:
        return ConfigError(f"missing required key '{key}' in {self.source_name}")


def did_you_mean(value: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def show_value(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{text if len(text) <= 60 else text[:57] + '...'} ({kind})"


def dotted_key(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def build_section(cls: type, table: Any, prefix: str, ctx: Context) -> Any:
    """``cls(**table)`` after checking every key's name, type and range."""
    if not isinstance(table, dict):
        raise ctx.invalid(prefix, f"expected a table, got {show_value(table)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            raise ctx.unknown(f"{prefix}.{key}", [f"{prefix}.{name}" for name in fields])
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, spec in fields.items():
        key = f"{prefix}.{name}"
        if name not in table:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ctx.missing(key)
            continue
        kwargs[name] = check_value(coerce(table[name], hints[name], key, ctx), spec.metadata, key, ctx)
    return cls(**kwargs)


def coerce(value: Any, tp: Any, key: str, ctx: Context) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):  # "X | None": TOML has no null; "" means unset for strings
        inner = next(arg for arg in args if arg is not type(None))
        return None if value == "" and inner is str else coerce(value, inner, key, ctx)
    if origin is Literal:
        if value not in args:
            raise ctx.invalid(key, f"must be {' or '.join(map(repr, args))}, got {show_value(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ctx.invalid(key, f"expected an array of strings, got {show_value(value)}")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ctx.invalid(key, f"expected a table, got {show_value(value)}")
        for sub, item in value.items():
            if not isinstance(item, str | int | float | bool):
                raise ctx.invalid(f"{key}.{sub}", f"expected a string, number or boolean, got {show_value(item)}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # TOML writes 120 for 120.0
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ctx.invalid(key, f"expected {_TYPE_NAMES[tp]}, got {show_value(value)}")
    if tp is float and not math.isfinite(value):
        raise ctx.invalid(key, f"expected a finite number, got {value!r}")
    return value


def check_value(value: Any, checks: Mapping[str, Any], key: str, ctx: Context) -> Any:
    if value is None:
        return value
    if checks.get("upper"):
        value = value.upper()
    if "choices" in checks and value not in checks["choices"]:
        raise ctx.invalid(key, f"must be one of {', '.join(checks['choices'])}, got {value!r}"
                               f"{did_you_mean(value, checks['choices'])}")
    if "ge" in checks and value < checks["ge"]:
        raise ctx.invalid(key, f"must be ≥ {checks['ge']}, got {value!r}")
    if "gt" in checks and value <= checks["gt"]:
        raise ctx.invalid(key, f"must be > {checks['gt']}, got {value!r}")
    if "le" in checks and value > checks["le"]:
        raise ctx.invalid(key, f"must be ≤ {checks['le']}, got {value!r}")
    return value


def checked(default: Any, **checks: Any) -> Any:
    """A field with a default and checks for the parser: ``ge``, ``gt``, ``le``, ``choices``, ``upper``."""
    return field(default=default, metadata=checks)
