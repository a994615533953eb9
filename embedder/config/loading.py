"""Reading a job file: TOML → ``--set`` overrides → environment → validated :class:`JobConfig`.

Order of precedence, highest first: ``--set section.key=value``, the environment (``JINA_API_BASE`` for
``embedding.api_base``; ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` for ``source.s3_endpoint``), the job
file, the defaults of :mod:`embedder.config.schema`. Every error is a :class:`ConfigError` naming the key and
where its value came from; no error repeats the value of a key that looks like a secret.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from embedder.config.fields import Context, dotted_key
from embedder.config.rules import build_job
from embedder.config.schema import SECTIONS, JobConfig
from embedder.config.sinks import SINK_CLASSES
from embedder.errors import ConfigError
from embedder.secrets import SECRET_MESSAGE

# The job the demo runs when given no file: the local sample into local Parquet (= jobs/configs/laptop.toml).
DEFAULT_JOB_DATA: dict[str, Any] = {
    "source": {"path": "data/sample", "format": "parquet"},
    "workers": {"count": 2},
    "sink": {"kind": "parquet", "path": "out/embeddings"},
}

_SECRET_WORDS = frozenset({"token", "password", "passwd", "pwd", "secret", "apikey", "credential", "credentials"})
_CREDENTIALS_IN_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*:[^/@\s]*@")
# key -> environment variables that override it, first set one wins
_ENVIRONMENT_KEYS = {
    "embedding.api_base": ("JINA_API_BASE",),
    "source.s3_endpoint": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
}


def load_job(path: str | os.PathLike[str], overrides: Sequence[str] = (), *,
             environ: Mapping[str, str] | None = None) -> JobConfig:
    """Read, override and validate the TOML job file at ``path``."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"job file not found: {name}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read job file {name}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:  # its message gives line and column, never the file's content
        raise ConfigError(f"cannot parse {name}: {exc}") from None
    job = parse_job(data, source_name=name, overrides=overrides, environ=environ)
    return dataclasses.replace(job, config_path=name)


def parse_job(data: dict[str, Any], *, source_name: str = "<job>", overrides: Sequence[str] = (),
              environ: Mapping[str, str] | None = None) -> JobConfig:
    """Validate an already parsed job table (``data`` is not modified)."""
    env = os.environ if environ is None else environ
    ctx = Context(source_name)
    data = copy.deepcopy(data)
    for number, item in enumerate(overrides, start=1):
        _apply_override(data, item, number, ctx)
    _apply_environment(data, env, ctx)
    _refuse_secrets(data, (), ctx)
    return build_job(data, ctx)


def default_job(*, overrides: Sequence[str] = (), environ: Mapping[str, str] | None = None,
                **sections: Any) -> JobConfig:
    """The built-in demo job; each keyword is a section table (or ``mode``) merged over it."""
    data = copy.deepcopy(DEFAULT_JOB_DATA)
    if "sinks" in sections:
        del data["sink"]
    for name, value in sections.items():
        if name in SECTIONS and isinstance(value, Mapping):  # sections merge; sinks and mode replace
            data.setdefault(name, {}).update(copy.deepcopy(dict(value)))
        else:
            data[name] = copy.deepcopy(value)
    return parse_job(data, source_name="<built-in defaults>", overrides=overrides, environ=environ)


# --- context and messages ---------------------------------------------------------------------------------


# --- overrides, environment, secrets ---------------------------------------------------------------------


def _apply_override(data: dict[str, Any], item: str, number: int, ctx: Context) -> None:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:  # the argument is not echoed: it might be a pasted secret
        raise ConfigError(f"--set argument #{number} must look like section.key=value (on {ctx.source_name})")
    parts: list[str | int] = list(key.split("."))
    if parts[0] == "sink" and "sink" not in data and isinstance(data.get("sinks"), list):
        if len(data["sinks"]) != 1:  # "sink." is ambiguous with several sinks
            raise ConfigError(f"--set {key}: the job has {len(data['sinks'])} [[sinks]]; use sinks.N.{key[5:]}")
        parts[0:1] = ["sinks", "0"]
    node: Any = data
    path: list[str | int] = []
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        if isinstance(node, list):
            if not (isinstance(part, str) and part.isdigit() and int(part) <= len(node)):
                raise ConfigError(f"--set {key}: '{dotted_key(path)}' has {len(node)} entries; "
                                  f"'{part}' is not an index into it")
            part = int(part)
            if part == len(node):  # one past the end adds an entry: --set sinks.1.kind=milvus
                node.append({})
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{dotted_key(path)}' is not a table")
        path.append(part)
        if last:
            if isinstance(node, list):
                raise ConfigError(f"--set {key}: set the keys of an entry, not the entry itself")
            node[part] = _override_value(raw.strip(), _expects_string(path))
        else:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            node = node[part]
    ctx.origins[dotted_key(path)] = f"--set {key}"


def _override_value(raw: str, expects_string: bool) -> Any:
    """A TOML value when ``raw`` is one, else the raw text; a string field always gets text."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    return raw if expects_string and not isinstance(value, str) else value


def _expects_string(path: Sequence[str | int]) -> bool:
    name = path[-1]
    if path in (["mode"], ["name"]):
        return True
    if path[0] in ("sink", "sinks"):
        classes: list[type] = list(SINK_CLASSES.values())
    elif path[0] in SECTIONS and len(path) == 2:
        classes = [SECTIONS[str(path[0])]]
    else:
        return False
    return any(typing.get_type_hints(cls).get(str(name)) in (str, str | None) for cls in classes)


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str], ctx: Context) -> None:
    """Environment values beat the file but not an explicit ``--set``."""
    for dotted, names in _ENVIRONMENT_KEYS.items():
        var = next((name for name in names if environ.get(name)), None)
        section, key = dotted.split(".")
        if var is None or dotted in ctx.origins or not isinstance(data.setdefault(section, {}), dict):
            continue
        data[section][key] = environ[var]
        ctx.origins[dotted] = f"${var}"


def _is_secret_name(name: str) -> bool:
    parts = name.lower().replace("-", "_").split("_")
    if parts[-1] == "env":  # api_key_env, token_env: the NAME of a variable, which is what we want
        return False
    joined = "_".join(parts)
    return bool(_SECRET_WORDS.intersection(parts)) or "api_key" in joined or "access_key" in joined


def _refuse_secrets(node: Any, path: tuple[str | int, ...], ctx: Context) -> None:
    """Refuse secret-looking keys and credentials in URIs anywhere, without ever echoing the value."""
    if isinstance(node, dict):
        for key, value in node.items():
            dotted = dotted_key((*path, key))
            if _is_secret_name(str(key)) and value != "":
                raise ConfigError(f"'{dotted}' in {ctx.where(dotted)}: {SECRET_MESSAGE}")
            _refuse_secrets(value, (*path, key), ctx)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _refuse_secrets(value, (*path, index), ctx)
    elif isinstance(node, str) and _CREDENTIALS_IN_URI.match(node):
        dotted = dotted_key(path)
        raise ConfigError(f"'{dotted}' in {ctx.where(dotted)} holds a user:password@ URI; {SECRET_MESSAGE}")


# --- generic section building ------------------------------------------------------------------------------


# --- the job and its sections' cross-field rules -----------------------------------------------------------


