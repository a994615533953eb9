"""The rules that tie a job's keys together: what one section's value means for another's.

Each ``build_*`` function turns one table of the job file into its section, checking the rules that single keys
cannot express (one of ``text_column`` / ``text_template``, a model's tasks and dimensions, one Milvus Lite sink
per file...). Messages name the key and where its value came from.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from embedder.config import schema
from embedder.config.chunking import ChunkingConfig, check_documents
from embedder.config.fields import Context, build_section, check_value, coerce, did_you_mean, show_value
from embedder.config.sinks import (
    SINK_CLASSES,
    SINK_KINDS,
    MilvusSinkConfig,
    SinkConfig,
    check_bm25,
    default_checkpoint_path,
)
from embedder.errors import ConfigError
from embedder.jina.models import MODELS
from embedder.secrets import SECRET_MESSAGE, mask_uri


def build_job(data: dict[str, Any], ctx: Context) -> schema.JobConfig:
    for key in data:
        if key not in schema.TOP_LEVEL_KEYS:
            what = "section" if isinstance(data[key], dict | list) else "key"
            raise ctx.unknown(key, schema.TOP_LEVEL_KEYS, what)
    if "sink" in data and "sinks" in data:
        raise ConfigError(f"{ctx.source_name} has both [sink] and [[sinks]]; use one of them")
    if "source" not in data:
        raise ctx.missing("source.path")
    mode = check_value(coerce(data.get("mode", "full"), str, "mode", ctx), {"choices": schema.MODES}, "mode", ctx)
    name = coerce(data.get("name", ""), str, "name", ctx)
    source = _build_source(data["source"], ctx)
    embedding = _build_embedding(data.get("embedding", {}), ctx)
    sinks = _build_sinks(data, source, ctx)
    checkpoint = build_section(schema.CheckpointConfig, data.get("checkpoint", {}), "checkpoint", ctx)
    if not checkpoint.path:
        checkpoint = schema.CheckpointConfig(path=default_checkpoint_path(sinks))
    chunking = build_section(ChunkingConfig, data["chunking"], "chunking", ctx) if "chunking" in data else None
    check_documents(chunking, source, embedding, ctx)
    return schema.JobConfig(
        mode=mode, name=name, source=source, embedding=embedding,
        limits=build_section(schema.LimitsConfig, data.get("limits", {}), "limits", ctx),
        workers=build_section(schema.WorkersConfig, data.get("workers", {}), "workers", ctx),
        sinks=sinks, checkpoint=checkpoint,
        progress=build_section(schema.ProgressConfig, data.get("progress", {}), "progress", ctx),
        chunking=chunking,
    )


def _build_source(table: Any, ctx: Context) -> schema.SourceConfig:
    source: schema.SourceConfig = build_section(schema.SourceConfig, table, "source", ctx)
    for name in ("path", "id_column"):
        if not getattr(source, name):
            raise ctx.invalid(f"source.{name}", "must not be empty")
    if source.text_template is not None:
        if table.get("text_column"):
            raise ConfigError(f"set exactly one of 'source.text_column' and 'source.text_template' "
                              f"in {ctx.source_name}")
        try:
            schema.parse_template(source.text_template)
        except ValueError as exc:
            raise ctx.invalid("source.text_template", str(exc)) from None
        source = dataclasses.replace(source, text_column=None)
    elif source.text_column is None:
        raise ctx.invalid("source.text_column", "must not be empty (or set source.text_template)")
    seen: set[str] = set()
    for column in source.passthrough:
        if column in seen or column == source.id_column or column in schema.RESERVED_COLUMNS:
            why = ("is the id column (always written)" if column == source.id_column else "is listed twice"
                   if column in seen else f"is a name the output reserves ({', '.join(schema.RESERVED_COLUMNS)})")
            raise ctx.invalid("source.passthrough", f"column '{column}' {why}")
        seen.add(column)
    return source


def _build_embedding(table: Any, ctx: Context) -> schema.EmbeddingConfig:
    emb: schema.EmbeddingConfig = build_section(schema.EmbeddingConfig, table, "embedding", ctx)
    if not emb.is_known_model and not emb.allow_unknown_model:
        raise ctx.invalid("embedding.model", f"unknown model {emb.model!r}"
                          f"{did_you_mean(emb.model, list(MODELS)) or '.'} Known models: {', '.join(MODELS)}. "
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
                          f"{did_you_mean(str(emb.task), spec.tasks)}")
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
    check_env_name(emb.api_key_env, "embedding.api_key_env", ctx)
    return emb


def check_env_name(name: str, key: str, ctx: Context) -> None:
    if name.startswith("jina_") and len(name) > 30:  # looks like the key itself; never echo it
        raise ctx.invalid(key, f"this names the environment variable, not the key; {SECRET_MESSAGE}")
    if not _ENV_NAME.fullmatch(name):
        raise ctx.invalid(key, f"expected an environment variable name, got {name!r}")


def _build_sinks(data: dict[str, Any], source: schema.SourceConfig, ctx: Context) -> tuple[SinkConfig, ...]:
    if "sink" in data:
        entries = [(data["sink"], "sink")]
    elif "sinks" in data:
        tables = data["sinks"]
        if not isinstance(tables, list) or not tables:
            raise ctx.invalid("sinks", f"expected one or more [[sinks]] tables, got {show_value(tables)}")
        entries = [(table, f"sinks[{index}]") for index, table in enumerate(tables)]
    else:
        raise ConfigError(f"no sink in {ctx.source_name}: add [sink] with kind = \"parquet\" and path = ..., "
                          "or several [[sinks]]")
    sinks: list[SinkConfig] = []
    for table, prefix in entries:
        kind = table.get("kind", "parquet") if isinstance(table, dict) else None
        if isinstance(table, dict) and (not isinstance(kind, str) or kind not in SINK_CLASSES):
            raise ctx.invalid(f"{prefix}.kind", f"must be one of {', '.join(SINK_KINDS)}, got {kind!r}"
                              f"{did_you_mean(str(kind), SINK_KINDS)}")
        if kind == "milvus" and "path" in table:  # a parquet sink switched to milvus keeps its old key
            raise ctx.invalid(f"{prefix}.path", "a milvus sink takes 'uri' (a .db path or a server URL), not 'path'")
        sink = build_section(SINK_CLASSES[kind or "parquet"], table, prefix, ctx)
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


def _check_milvus(sink: MilvusSinkConfig, source: schema.SourceConfig, prefix: str, ctx: Context) -> None:
    if sink.is_lite and not sink.uri.endswith(".db"):
        raise ctx.invalid(f"{prefix}.uri", f"a Milvus Lite path must end in .db, got {sink.uri!r} "
                          "(or give a server URL such as http://localhost:19530)")
    if not sink.is_lite and not sink.uri.startswith(("http://", "https://", "tcp://")):
        raise ctx.invalid(f"{prefix}.uri", f"expected a .db path or http(s):// URL, got {mask_uri(sink.uri)!r}")
    names = [("collection", sink.collection), ("id_field", sink.id_field), ("vector_field", sink.vector_field)]
    if sink.db_name:
        names.append(("db_name", sink.db_name))
    if sink.bm25:
        names.append(("sparse_field", sink.sparse_field))
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
    check_env_name(sink.token_env, f"{prefix}.token_env", ctx)
    check_bm25(sink, source.passthrough, prefix, ctx)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


_MILVUS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
