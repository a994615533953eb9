"""The ledger's guard: nothing that looks like a secret is ever written into a checkpoint folder.

Refused: a field whose name looks like a secret (``api_key``, ``token``, ``password``...), and the value of any
environment variable a secret may come from (the Jina key's variables — ``$JINA_API_KEY``, ``$JINAAI_API_KEY`` and
the one ``embedding.api_key_env`` names —, the Milvus token's, AWS's secret key and session token) anywhere in the
text. Free text that must be stored whatever it says (a run report's error message) is redacted instead
(:func:`redact_secrets`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from embedder import storage

SECRET_NAMES = frozenset({
    "api_key", "apikey", "jina_api_key", "token", "password", "passwd", "secret", "secret_key",
    "access_key", "secret_access_key", "aws_secret_access_key", "authorization", "session_token",
})
DEFAULT_SECRET_ENVS = ("JINA_API_KEY", "JINAAI_API_KEY", "MILVUS_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                       "AWS_SECURITY_TOKEN")
"""Variables always guarded; a job adds the ones its configuration names (``embedding.api_key_env``...)."""
MIN_SECRET_LENGTH = 8
"""Shorter values (``1``, ``true``) would match everywhere and protect nothing."""
REDACTED = "***"


def secret_values(secret_envs: Iterable[str] = DEFAULT_SECRET_ENVS) -> dict[str, str]:
    """Variable name -> value of every guarded variable that is set (long enough to be told apart)."""
    found = {}
    for name in dict.fromkeys((*DEFAULT_SECRET_ENVS, *secret_envs)):
        secret = os.environ.get(name, "")
        if len(secret) >= MIN_SECRET_LENGTH:
            found[name] = secret
    return found


def redact_secrets(text: str | None, secret_envs: Iterable[str] = DEFAULT_SECRET_ENVS) -> str | None:
    """``text`` with the value of every guarded variable replaced by ``***``."""
    if not text:
        return text
    for secret in sorted(secret_values(secret_envs).values(), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def redact_columns(table: pa.Table, columns: Iterable[str],
                   secret_envs: Iterable[str] = DEFAULT_SECRET_ENVS) -> pa.Table:
    """``table`` with the value of every guarded variable replaced by ``***`` in the string ``columns``."""
    values = sorted(secret_values(secret_envs).values(), key=len, reverse=True)
    for name in columns:
        if not values or name not in table.column_names:
            continue
        column = table.column(name)
        for secret in values:
            column = pc.replace_substring(column, pattern=secret, replacement=REDACTED)
        table = table.set_column(table.column_names.index(name), name, column)
    return table


def check_no_secrets(obj: Any, where: str, secret_envs: Iterable[str] = DEFAULT_SECRET_ENVS) -> None:
    """``ValueError`` when ``obj`` has a secret-looking field name or holds a secret variable's value."""
    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if str(key).lower() in SECRET_NAMES:
                    raise ValueError(f"refusing to store field {path}{key!s} in the ledger ({where}): "
                                     "it looks like a secret")
                walk(item, f"{path}{key}.")
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, path)

    walk(obj, "")
    text = json.dumps(obj, default=storage.json_default)
    for name, secret in secret_values(secret_envs).items():
        if secret in text:
            raise ValueError(f"refusing to store the value of ${name} in the ledger ({where})")
