"""Reading a job file: TOML → ``--set`` overrides → environment → validated :class:`JobConfig`.

Order of precedence, highest first: ``--set section.key=value``, the environment (``JINA_API_BASE`` for
``embedding.api_base``; ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` for ``source.s3_endpoint``), the job
file, the defaults of :mod:`embedder.config.schema`. Every error is a :class:`ConfigError` naming the key and
where its value came from; no error repeats the value of a key that looks like a secret.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import string
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from embedder.config.schema import (
    EMBEDDING_TYPES,
    MILVUS_INDEX_TYPES,
    MILVUS_METRICS,
    MODES,
    SECTIONS,
    SINK_CLASSES,
    SINK_KINDS,
    SOURCE_FORMATS,
    TOP_LEVEL_KEYS,
    CheckpointConfig,
    EmbeddingConfig,
    JobConfig,
    LimitsConfig,
    MilvusSinkConfig,
    ParquetSinkConfig,
    ProgressConfig,
    SinkConfig,
    SourceConfig,
    WorkersConfig,
    default_checkpoint_path,
    mask_uri,
)
from embedder.errors import ConfigError
from embedder.jina.models import MODELS

__all__ = [
    "EMBEDDING_TYPES", "MILVUS_INDEX_TYPES", "MILVUS_METRICS", "MODES", "SECTIONS", "SINK_CLASSES", "SINK_KINDS",
    "SOURCE_FORMATS", "CheckpointConfig", "EmbeddingConfig", "JobConfig", "LimitsConfig", "MilvusSinkConfig",
    "ParquetSinkConfig", "ProgressConfig", "SinkConfig", "SourceConfig", "WorkersConfig", "default_checkpoint_path",
    "default_job", "load_job", "mask_uri", "parse_job",
]

# The job the demo runs when given no file: the local sample into local Parquet (= jobs/configs/laptop.toml).
DEFAULT_JOB_DATA: dict[str, Any] = {
    "source": {"path": "data/sample", "format": "parquet"},
    "workers": {"count": 2},
    "sink": {"kind": "parquet", "path": "out/embeddings"},
}

SECRET_MESSAGE = "put secrets in the environment (JINA_API_KEY / MILVUS_TOKEN), not in the job file"
_SECRET_WORDS = frozenset({"token", "password", "passwd", "pwd", "secret", "apikey", "credential", "credentials"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MILVUS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_CREDENTIALS_IN_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*:[^/@\s]*@")
# key -> environment variables that override it, first set one wins
_ENVIRONMENT_KEYS = {
    "embedding.api_base": ("JINA_API_BASE",),
    "source.s3_endpoint": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
}
_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


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
    ctx = _Context(source_name)
    data = copy.deepcopy(data)
    for number, item in enumerate(overrides, start=1):
        _apply_override(data, item, number, ctx)
    _apply_environment(data, env, ctx)
    _refuse_secrets(data, (), ctx)
    return _build_job(data, ctx)


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


@dataclass
class _Context:
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


def _did_you_mean(value: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _show(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{text if len(text) <= 60 else text[:57] + '...'} ({kind})"


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# --- overrides, environment, secrets ---------------------------------------------------------------------


def _apply_override(data: dict[str, Any], item: str, number: int, ctx: _Context) -> None:
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
                raise ConfigError(f"--set {key}: '{_dotted(path)}' has {len(node)} entries; "
                                  f"'{part}' is not an index into it")
            part = int(part)
            if part == len(node):  # one past the end adds an entry: --set sinks.1.kind=milvus
                node.append({})
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{_dotted(path)}' is not a table")
        path.append(part)
        if last:
            if isinstance(node, list):
                raise ConfigError(f"--set {key}: set the keys of an entry, not the entry itself")
            node[part] = _override_value(raw.strip(), _expects_string(path))
        else:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            node = node[part]
    ctx.origins[_dotted(path)] = f"--set {key}"


def _override_value(raw: str, expects_string: bool) -> Any:
    """A TOML value when ``raw`` is one, else the raw text; a string field always gets text."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    return raw if expects_string and not isinstance(value, str) else value


def _expects_string(path: Sequence[str | int]) -> bool:
    name = path[-1]
    if path == ["mode"]:
        return True
    if path[0] in ("sink", "sinks"):
        classes: list[type] = list(SINK_CLASSES.values())
    elif path[0] in SECTIONS and len(path) == 2:
        classes = [SECTIONS[str(path[0])]]
    else:
        return False
    return any(typing.get_type_hints(cls).get(name) in (str, str | None) for cls in classes)


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str], ctx: _Context) -> None:
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


def _refuse_secrets(node: Any, path: tuple[str | int, ...], ctx: _Context) -> None:
    """Refuse secret-looking keys and credentials in URIs anywhere, without ever echoing the value."""
    if isinstance(node, dict):
        for key, value in node.items():
            dotted = _dotted((*path, key))
            if _is_secret_name(str(key)) and value != "":
                raise ConfigError(f"'{dotted}' in {ctx.where(dotted)}: {SECRET_MESSAGE}")
            _refuse_secrets(value, (*path, key), ctx)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _refuse_secrets(value, (*path, index), ctx)
    elif isinstance(node, str) and _CREDENTIALS_IN_URI.match(node):
        dotted = _dotted(path)
        raise ConfigError(f"'{dotted}' in {ctx.where(dotted)} holds a user:password@ URI; {SECRET_MESSAGE}")


# --- generic section building ------------------------------------------------------------------------------


def _build_section(cls: type, table: Any, prefix: str, ctx: _Context) -> Any:
    """``cls(**table)`` after checking every key's name, type and range."""
    if not isinstance(table, dict):
        raise ctx.invalid(prefix, f"expected a table, got {_show(table)}")
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
        kwargs[name] = _check_value(_coerce(table[name], hints[name], key, ctx), spec.metadata, key, ctx)
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str, ctx: _Context) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):  # "X | None": TOML has no null; "" means unset for strings
        inner = next(arg for arg in args if arg is not type(None))
        return None if value == "" and inner is str else _coerce(value, inner, key, ctx)
    if origin is Literal:
        if value not in args:
            raise ctx.invalid(key, f"must be {' or '.join(map(repr, args))}, got {_show(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ctx.invalid(key, f"expected an array of strings, got {_show(value)}")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ctx.invalid(key, f"expected a table, got {_show(value)}")
        for sub, item in value.items():
            if not isinstance(item, str | int | float | bool):
                raise ctx.invalid(f"{key}.{sub}", f"expected a string, number or boolean, got {_show(item)}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # TOML writes 120 for 120.0
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ctx.invalid(key, f"expected {_TYPE_NAMES[tp]}, got {_show(value)}")
    if tp is float and not math.isfinite(value):
        raise ctx.invalid(key, f"expected a finite number, got {value!r}")
    return value


def _check_value(value: Any, checks: Mapping[str, Any], key: str, ctx: _Context) -> Any:
    if value is None:
        return value
    if checks.get("upper"):
        value = value.upper()
    if "choices" in checks and value not in checks["choices"]:
        raise ctx.invalid(key, f"must be one of {', '.join(checks['choices'])}, got {value!r}"
                               f"{_did_you_mean(value, checks['choices'])}")
    if "ge" in checks and value < checks["ge"]:
        raise ctx.invalid(key, f"must be ≥ {checks['ge']}, got {value!r}")
    if "gt" in checks and value <= checks["gt"]:
        raise ctx.invalid(key, f"must be > {checks['gt']}, got {value!r}")
    if "le" in checks and value > checks["le"]:
        raise ctx.invalid(key, f"must be ≤ {checks['le']}, got {value!r}")
    return value


# --- the job and its sections' cross-field rules -----------------------------------------------------------


def _build_job(data: dict[str, Any], ctx: _Context) -> JobConfig:
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            what = "section" if isinstance(data[key], dict | list) else "key"
            raise ctx.unknown(key, TOP_LEVEL_KEYS, what)
    if "sink" in data and "sinks" in data:
        raise ConfigError(f"{ctx.source_name} has both [sink] and [[sinks]]; use one of them")
    if "source" not in data:
        raise ctx.missing("source.path")
    mode = _check_value(_coerce(data.get("mode", "full"), str, "mode", ctx), {"choices": MODES}, "mode", ctx)
    source = _build_source(data["source"], ctx)
    embedding = _build_embedding(data.get("embedding", {}), ctx)
    sinks = _build_sinks(data, source, ctx)
    checkpoint = _build_section(CheckpointConfig, data.get("checkpoint", {}), "checkpoint", ctx)
    if not checkpoint.path:
        checkpoint = CheckpointConfig(path=default_checkpoint_path(sinks))
    return JobConfig(
        mode=mode, source=source, embedding=embedding,
        limits=_build_section(LimitsConfig, data.get("limits", {}), "limits", ctx),
        workers=_build_section(WorkersConfig, data.get("workers", {}), "workers", ctx),
        sinks=sinks, checkpoint=checkpoint,
        progress=_build_section(ProgressConfig, data.get("progress", {}), "progress", ctx),
    )


def _build_source(table: Any, ctx: _Context) -> SourceConfig:
    source: SourceConfig = _build_section(SourceConfig, table, "source", ctx)
    for name in ("path", "id_column"):
        if not getattr(source, name):
            raise ctx.invalid(f"source.{name}", "must not be empty")
    if source.text_template is not None:
        if table.get("text_column"):
            raise ConfigError(f"set exactly one of 'source.text_column' and 'source.text_template' "
                              f"in {ctx.source_name}")
        _check_template(source.text_template, ctx)
        source = dataclasses.replace(source, text_column=None)
    elif source.text_column is None:
        raise ctx.invalid("source.text_column", "must not be empty (or set source.text_template)")
    seen: set[str] = set()
    for column in source.passthrough:
        if column in seen or column == source.id_column:
            why = "is the id column (always written)" if column == source.id_column else "is listed twice"
            raise ctx.invalid("source.passthrough", f"column '{column}' {why}")
        seen.add(column)
    return source


def _check_template(template: str, ctx: _Context) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ctx.invalid("source.text_template", f"not a format string: {exc}") from None
    names = [name for _, name, _, _ in parsed if name is not None]
    if not names:
        raise ctx.invalid("source.text_template", "names no column; write columns as {column}")
    for name in names:
        if not name or name.isdigit() or any(ch in name for ch in ".[]"):
            raise ctx.invalid("source.text_template", f"'{{{name}}}' is not a column name; use {{column}}")


def _build_embedding(table: Any, ctx: _Context) -> EmbeddingConfig:
    emb: EmbeddingConfig = _build_section(EmbeddingConfig, table, "embedding", ctx)
    if not emb.is_known_model and not emb.allow_unknown_model:
        raise ctx.invalid("embedding.model", f"unknown model {emb.model!r}"
                          f"{_did_you_mean(emb.model, list(MODELS)) or '.'} Known models: {', '.join(MODELS)}. "
                          "Set embedding.allow_unknown_model = true to use another.")
    spec = emb.spec
    if not spec.accepts_v3_fields:  # v2: any of these fields gets a 422 from the API
        given = {"task": emb.task is not None, "dimensions": emb.dimensions is not None,
                 "late_chunking": emb.late_chunking}
        for name, is_set in given.items():
            if is_set:
                raise ctx.invalid(f"embedding.{name}", f"{emb.model} accepts no '{name}' (v2 models take only "
                                  "model, input, embedding_type, normalized and truncate)")
    if emb.task is None and spec.tasks and "retrieval.passage" in spec.tasks:
        emb = dataclasses.replace(emb, task="retrieval.passage")  # a corpus is passages
    elif emb.task is None:
        emb = dataclasses.replace(emb, task=spec.default_task)
    if spec.tasks and emb.task is not None and emb.task not in spec.tasks:
        raise ctx.invalid("embedding.task", f"{emb.model} has tasks {', '.join(spec.tasks)}; got {emb.task!r}"
                          f"{_did_you_mean(str(emb.task), spec.tasks)}")
    if emb.dimensions is not None:
        # an unknown model's maximum is unknown: let the API decide above 1
        top = spec.max_dimensions if emb.is_known_model else None
        if emb.dimensions < 1 or (top is not None and emb.dimensions > top):
            raise ctx.invalid("embedding.dimensions", f"must be within 1..{top or '∞'} for {emb.model}, "
                              f"got {emb.dimensions}")
    if emb.late_chunking and not spec.supports_late_chunking:
        raise ctx.invalid("embedding.late_chunking", f"{emb.model} does not support late chunking")
    if emb.late_chunking and emb.max_tokens_per_request > spec.late_chunking_max_tokens:
        raise ctx.invalid("embedding.max_tokens_per_request", "with late chunking the API cuts a request at "
                          f"{spec.late_chunking_max_tokens} tokens, got {emb.max_tokens_per_request}")
    if emb.is_known_model and emb.batch_size > spec.max_inputs:
        raise ctx.invalid("embedding.batch_size", f"{emb.model} takes at most {spec.max_inputs} inputs per "
                          f"request, got {emb.batch_size}")
    if not emb.api_base.startswith(("http://", "https://")):
        raise ctx.invalid("embedding.api_base", f"expected an http(s):// URL, got {mask_uri(emb.api_base)!r}")
    _check_env_name(emb.api_key_env, "embedding.api_key_env", ctx)
    return emb


def _check_env_name(name: str, key: str, ctx: _Context) -> None:
    if name.startswith("jina_") and len(name) > 30:  # looks like the key itself; never echo it
        raise ctx.invalid(key, f"this names the environment variable, not the key; {SECRET_MESSAGE}")
    if not _ENV_NAME.fullmatch(name):
        raise ctx.invalid(key, f"expected an environment variable name, got {name!r}")


def _build_sinks(data: dict[str, Any], source: SourceConfig, ctx: _Context) -> tuple[SinkConfig, ...]:
    if "sink" in data:
        entries = [(data["sink"], "sink")]
    elif "sinks" in data:
        tables = data["sinks"]
        if not isinstance(tables, list) or not tables:
            raise ctx.invalid("sinks", f"expected one or more [[sinks]] tables, got {_show(tables)}")
        entries = [(table, f"sinks[{index}]") for index, table in enumerate(tables)]
    else:
        raise ConfigError(f"no sink in {ctx.source_name}: add [sink] with kind = \"parquet\" and path = ..., "
                          "or several [[sinks]]")
    sinks: list[SinkConfig] = []
    for table, prefix in entries:
        kind = table.get("kind", "parquet") if isinstance(table, dict) else None
        if isinstance(table, dict) and (not isinstance(kind, str) or kind not in SINK_CLASSES):
            raise ctx.invalid(f"{prefix}.kind", f"must be one of {', '.join(SINK_KINDS)}, got {kind!r}"
                              f"{_did_you_mean(str(kind), SINK_KINDS)}")
        if kind == "milvus" and "path" in table:  # a parquet sink switched to milvus keeps its old key
            raise ctx.invalid(f"{prefix}.path", "a milvus sink takes 'uri' (a .db path or a server URL), not 'path'")
        sink = _build_section(SINK_CLASSES[kind or "parquet"], table, prefix, ctx)
        if isinstance(sink, MilvusSinkConfig):
            _check_milvus(sink, source, prefix, ctx)
        elif not sink.path:
            raise ctx.invalid(f"{prefix}.path", "must not be empty")
        if any(sink.target == other.target for other in sinks):
            raise ctx.invalid(prefix, "writes to the same place as an earlier sink")
        if isinstance(sink, MilvusSinkConfig) and sink.is_lite and any(
                isinstance(other, MilvusSinkConfig) and other.uri == sink.uri for other in sinks):
            raise ctx.invalid(f"{prefix}.uri", "Milvus Lite lets one process open a database file; "
                              "use one Milvus Lite sink per file")
        sinks.append(sink)
    return tuple(sinks)


def _check_milvus(sink: MilvusSinkConfig, source: SourceConfig, prefix: str, ctx: _Context) -> None:
    if sink.is_lite and not sink.uri.endswith(".db"):
        raise ctx.invalid(f"{prefix}.uri", f"a Milvus Lite path must end in .db, got {sink.uri!r} "
                          "(or give a server URL such as http://localhost:19530)")
    if not sink.is_lite and not sink.uri.startswith(("http://", "https://", "tcp://")):
        raise ctx.invalid(f"{prefix}.uri", f"expected a .db path or http(s):// URL, got {mask_uri(sink.uri)!r}")
    names = [("collection", sink.collection), ("id_field", sink.id_field), ("vector_field", sink.vector_field)]
    if sink.db_name:
        names.append(("db_name", sink.db_name))
    for name, value in names:
        if not _MILVUS_NAME.fullmatch(value):
            raise ctx.invalid(f"{prefix}.{name}", f"Milvus names are a letter or _ then letters, digits or _; "
                              f"got {value!r}")
    if sink.id_field == sink.vector_field:
        raise ctx.invalid(f"{prefix}.vector_field", "must differ from id_field")
    for column in source.passthrough:  # passthrough columns become scalar fields of the collection
        if not _MILVUS_NAME.fullmatch(column) or column in (sink.id_field, sink.vector_field):
            raise ctx.invalid("source.passthrough", f"column '{column}' cannot be a field of Milvus collection "
                              f"'{sink.collection}' (invalid name or same as id/vector field)")
    _check_env_name(sink.token_env, f"{prefix}.token_env", ctx)
