"""The job configuration: loading, overrides, validation messages, fingerprint, display."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from embedder.config import (
    SECTIONS,
    SINK_CLASSES,
    EmbeddingConfig,
    JobConfig,
    MilvusSinkConfig,
    ParquetSinkConfig,
    SourceConfig,
    default_job,
    load_job,
    parse_job,
)
from embedder.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
FAKE_KEY = "jina_" + "s3cr3tv4lue" * 6
FAKE_TOKEN = "root:Milvus-t0ken-v4lue"

FULL_EXAMPLE = """
mode = "full"
[source]
path = "data/corpus"
format = "parquet"
id_column = "id"
text_column = "text"
passthrough = ["title"]
shard_rows = 5000
s3_endpoint = ""
[embedding]
model = "jina-embeddings-v3"
task = "retrieval.passage"
dimensions = 1024
late_chunking = false
normalized = true
truncate = false
embedding_type = "base64"
api_base = "https://api.jina.ai/v1"
api_key_env = "JINA_API_KEY"
batch_size = 0
max_tokens_per_request = 0
timeout_s = 120
max_retries = 10
[limits]
rpm = 500
tpm = 1_000_000
max_concurrency = 5
price_per_million_tokens = 0.05
[workers]
count = 4
cpus_per_worker = 0.25
max_shards_in_flight = 0
[sink]
kind = "parquet"
path = "out/embeddings"
[checkpoint]
path = ""
[progress]
interval_s = 5.0
"""

MINIMAL: dict[str, Any] = {"source": {"path": "data/corpus"}, "sink": {"path": "out/x"}}


def write_job(tmp_path: Path, text: str, name: str = "job.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def parse(extra: dict[str, Any] | None = None, *, overrides: tuple[str, ...] = (),
          environ: dict[str, str] | None = None) -> JobConfig:
    """MINIMAL with ``extra`` sections merged over it (a ``sink`` with a ``kind`` replaces MINIMAL's)."""
    data: dict[str, Any] = json.loads(json.dumps(MINIMAL))
    for section, table in (extra or {}).items():
        replaces = section == "sink" and "kind" in table
        if isinstance(table, dict) and isinstance(data.get(section), dict) and not replaces:
            data[section].update(table)
        else:
            data[section] = table
    return parse_job(data, source_name="jobs/x.toml", overrides=overrides, environ=environ or {})


def error_of(function: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The message of the ConfigError ``function(*args, **kwargs)`` raises."""
    with pytest.raises(ConfigError) as info:
        function(*args, **kwargs)
    return str(info.value)


def parse_error(extra: dict[str, Any] | None = None, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse(extra, **kwargs)
    return str(info.value)


# --- loading ----------------------------------------------------------------------------------------------


def test_full_example_loads_with_right_types(tmp_path: Path) -> None:
    path = write_job(tmp_path, FULL_EXAMPLE)
    job = load_job(path, environ={})
    assert job.config_path == str(path)
    assert job.mode == "full"
    assert job.source == SourceConfig(path="data/corpus", format="parquet", passthrough=("title",))
    emb = job.embedding
    assert (emb.model, emb.task, emb.dimensions, emb.effective_dimensions) == (
        "jina-embeddings-v3", "retrieval.passage", 1024, 1024)
    assert isinstance(emb.timeout_s, float) and emb.timeout_s == 120.0  # an int is accepted for a float
    assert emb.effective_batch_size == 2048
    assert (job.limits.rpm, job.limits.tpm, job.limits.max_concurrency) == (500, 1_000_000, 5)
    assert job.workers.effective_max_shards_in_flight == 8
    assert job.sinks == (ParquetSinkConfig(path="out/embeddings"),)
    assert job.checkpoint.path == "out/embeddings/_checkpoint"
    assert job.progress.interval_s == 5.0
    pickle.loads(pickle.dumps(job))  # travels to Ray actors


def test_defaults_of_a_minimal_job() -> None:
    job = parse()
    assert job.mode == "full"
    assert job.source.text_column == "text" and job.source.text_template is None
    assert job.source.format is None and job.source.shard_rows == 5000
    assert job.embedding == EmbeddingConfig(task="retrieval.passage")
    assert job.embedding.dimensions is None and job.embedding.effective_dimensions == 1024
    assert job.embedding.embedding_type == "base64" and job.embedding.normalized is True
    assert (job.limits.rpm, job.limits.tpm, job.limits.max_concurrency) == (500, 1_000_000, 5)
    assert (job.workers.count, job.workers.cpus_per_worker, job.workers.max_shards_in_flight) == (4, 0.25, 0)
    assert job.checkpoint.path == "out/x/_checkpoint"
    assert job.config_path is None


@pytest.mark.parametrize("name", ["laptop.toml", "cluster.toml"])
def test_example_job_files_load(name: str) -> None:
    job = load_job(ROOT / "jobs" / "configs" / name, environ={})
    assert job.sinks and job.source.path


def test_example_job_files_say_what_the_brief_says() -> None:
    laptop = load_job(ROOT / "jobs/configs/laptop.toml", environ={})
    assert (laptop.source.path, laptop.sinks[0].path, laptop.workers.count) == ("data/sample", "out/embeddings", 2)
    assert (laptop.limits.rpm, laptop.limits.tpm, laptop.limits.max_concurrency) == (500, 1_000_000, 5)
    assert laptop.fingerprint() == default_job(environ={}).fingerprint()  # the demo and the file agree
    cluster = load_job(ROOT / "jobs/configs/cluster.toml", environ={})
    assert cluster.source.path.startswith("s3://") and cluster.sinks[0].path.startswith("s3://")
    assert cluster.checkpoint.path.startswith("s3://") and cluster.workers.count == 16


def test_default_job_takes_sections() -> None:
    job = default_job(environ={}, limits={"rpm": 60}, sinks=[{"kind": "milvus", "uri": "out/m.db"}])
    assert job.limits.rpm == 60 and job.limits.tpm == 1_000_000
    assert job.sinks == (MilvusSinkConfig(uri="out/m.db"),)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"job file not found: .*nope\.toml"):
        load_job(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"cannot parse .*bad\.toml: .*line 2"):
        load_job(write_job(tmp_path, "[source]\npath = \n", "bad.toml"))


# --- errors ------------------------------------------------------------------------------------------------


def test_unknown_key_names_file_and_suggests(tmp_path: Path) -> None:
    path = write_job(tmp_path, FULL_EXAMPLE.replace("rpm = 500", "rmp = 500"), "x.toml")
    with pytest.raises(ConfigError) as info:
        load_job(path, environ={})
    assert str(info.value) == f"unknown key 'limits.rmp' in {path}; did you mean 'limits.rpm'?"


def test_unknown_section_and_top_level_key() -> None:
    assert "unknown section 'limit' in jobs/x.toml; did you mean 'limits'?" in parse_error({"limit": {"rpm": 1}})
    assert "unknown key 'mdoe'" in parse_error({"mdoe": "full"})


@pytest.mark.parametrize(("extra", "expected"), [
    ({"limits": {"rpm": "500"}}, "invalid 'limits.rpm' in jobs/x.toml: expected an integer, got '500' (string)"),
    ({"workers": {"count": True}}, "'workers.count' in jobs/x.toml: expected an integer, got True (boolean)"),
    ({"embedding": {"normalized": 1}}, "'embedding.normalized' in jobs/x.toml: expected a boolean, got 1"),
    ({"embedding": {"timeout_s": "fast"}}, "'embedding.timeout_s' in jobs/x.toml: expected a number, got 'fast'"),
    ({"source": {"passthrough": "title"}}, "'source.passthrough' in jobs/x.toml: expected an array of strings"),
    ({"source": {"path": 3}}, "'source.path' in jobs/x.toml: expected a string, got 3 (integer)"),
    ({"limits": 5}, "'limits' in jobs/x.toml: expected a table, got 5"),
    ({"embedding": {"dimensions": 512.0}}, "'embedding.dimensions' in jobs/x.toml: expected an integer, got 512.0"),
])
def test_wrong_types_name_key_expected_and_given(extra: dict[str, Any], expected: str) -> None:
    assert expected in parse_error(extra)


@pytest.mark.parametrize(("extra", "expected"), [
    ({"source": {"shard_rows": 0}}, "'source.shard_rows' in jobs/x.toml: must be ≥ 1, got 0"),
    ({"limits": {"rpm": 0}}, "'limits.rpm'"),
    ({"limits": {"tpm": -5}}, "'limits.tpm'"),
    ({"limits": {"max_concurrency": 0}}, "'limits.max_concurrency'"),
    ({"workers": {"count": 0}}, "'workers.count'"),
    ({"embedding": {"timeout_s": 0}}, "'embedding.timeout_s' in jobs/x.toml: must be > 0"),
    ({"embedding": {"timeout_s": float("nan")}}, "expected a finite number"),
    ({"progress": {"interval_s": -1}}, "'progress.interval_s'"),
    ({"embedding": {"dimensions": 0}}, "'embedding.dimensions' in jobs/x.toml: must be within 1..1024"),
    ({"embedding": {"dimensions": 2048}}, "must be within 1..1024 for jina-embeddings-v3, got 2048"),
    ({"embedding": {"embedding_type": "binary"}}, "'embedding.embedding_type' in jobs/x.toml: must be one of "
                                                  "base64, float, got 'binary'"),
    ({"embedding": {"batch_size": 4096}}, "jina-embeddings-v3 takes at most 2048 inputs per request, got 4096"),
    ({"embedding": {"model": "jina-embeddings-v4", "batch_size": 1000}}, "at most 512 inputs"),
    ({"embedding": {"task": "retrieval.pasage"}}, "did you mean 'retrieval.passage'?"),
    ({"embedding": {"model": "jina-code-embeddings-0.5b", "late_chunking": True}}, "does not support late chunk"),
    ({"embedding": {"late_chunking": True, "max_tokens_per_request": 20000}}, "cuts a request at 8192 tokens"),
    ({"embedding": {"api_base": "api.jina.ai"}}, "'embedding.api_base' in jobs/x.toml: expected an http(s)://"),
    ({"embedding": {"api_key_env": "MY KEY"}}, "expected an environment variable name"),
    ({"mode": "partial"}, "invalid 'mode' in jobs/x.toml: must be one of full, incremental, got 'partial'"),
    ({"source": {"format": "json"}}, "must be one of parquet, jsonl, csv, arrow, got 'json'; did you mean 'jsonl'?"),
    ({"source": {"path": ""}}, "'source.path' in jobs/x.toml: must not be empty"),
    ({"source": {"passthrough": ["id"]}}, "column 'id' is the id column"),
    ({"source": {"passthrough": ["a", "a"]}}, "column 'a' is listed twice"),
])
def test_ranges_and_choices(extra: dict[str, Any], expected: str) -> None:
    assert expected in parse_error(extra)


@pytest.mark.parametrize("field", ["task", "dimensions", "late_chunking"])
def test_v2_models_refuse_v3_fields(field: str) -> None:
    value = {"task": "retrieval.passage", "dimensions": 512, "late_chunking": True}[field]
    message = parse_error({"embedding": {"model": "jina-embeddings-v2-base-en", field: value}})
    assert f"invalid 'embedding.{field}' in jobs/x.toml: jina-embeddings-v2-base-en accepts no '{field}'" in message


def test_v2_model_defaults() -> None:
    emb = parse({"embedding": {"model": "jina-embeddings-v2-base-en"}}).embedding
    assert emb.task is None and emb.dimensions is None and emb.effective_dimensions == 768


def test_unknown_model_lists_known_ones_unless_allowed() -> None:
    message = parse_error({"embedding": {"model": "jina-embedding-v3"}})
    assert "unknown model 'jina-embedding-v3'; did you mean 'jina-embeddings-v3'?" in message
    assert "jina-embeddings-v4" in message and "allow_unknown_model" in message and "jobs/x.toml" in message
    emb = parse({"embedding": {"model": "jina-embeddings-v9", "allow_unknown_model": True,
                               "dimensions": 4096, "batch_size": 5000}}).embedding
    assert emb.effective_dimensions == 4096 and emb.effective_batch_size == 5000 and emb.task is None


def test_task_default_and_other_models() -> None:
    assert parse({"embedding": {"model": "jina-embeddings-v4"}}).embedding.task == "retrieval.passage"
    emb = parse({"embedding": {"model": "jina-embeddings-v4", "dimensions": 2048, "task": "code.passage"}}).embedding
    assert (emb.task, emb.effective_dimensions) == ("code.passage", 2048)
    assert parse({"embedding": {"model": "jina-code-embeddings-1.5b"}}).embedding.task is None


def test_missing_source_path() -> None:
    for data in ({"source": {"format": "csv"}, "sink": {"path": "out"}}, {"sink": {"path": "out"}}):
        message = error_of(parse_job, data, source_name="jobs/y.toml", environ={})
        assert message == "missing required key 'source.path' in jobs/y.toml"


def test_text_column_or_template() -> None:
    source = parse({"source": {"text_template": "{title}\n\n{body}"}}).source
    assert source.text_column is None and source.text_columns == ("title", "body")
    assert source.read_columns == ("id", "title", "body")
    assert "exactly one of 'source.text_column' and 'source.text_template' in jobs/x.toml" in parse_error(
        {"source": {"text_column": "text", "text_template": "{body}"}})
    assert "names no column" in parse_error({"source": {"text_template": "just text"}})
    assert "'{0}' is not a column name" in parse_error({"source": {"text_template": "{0}"}})
    assert "not a format string" in parse_error({"source": {"text_template": "{oops"}})
    assert "'source.text_column'" in parse_error({"source": {"text_column": ""}})


# --- secrets -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "key"), [
    ({"embedding": {"api_key": FAKE_KEY}}, "embedding.api_key"),
    ({"sink": {"kind": "milvus", "uri": "http://m:19530", "token": FAKE_TOKEN}}, "sink.token"),
    ({"source": {"aws_secret_access_key": FAKE_KEY}}, "source.aws_secret_access_key"),
    ({"sink": {"kind": "milvus", "uri": "http://m:19530", "password": FAKE_TOKEN}}, "sink.password"),
])
def test_secrets_in_the_file_are_refused_without_echo(extra: dict[str, Any], key: str) -> None:
    message = parse_error(extra)
    assert f"'{key}' in jobs/x.toml" in message
    assert "put secrets in the environment (JINA_API_KEY / MILVUS_TOKEN), not in the job file" in message
    assert FAKE_KEY not in message and FAKE_TOKEN not in message


def test_secret_via_set_or_uri_or_key_env_is_refused_without_echo() -> None:
    for message in (parse_error(overrides=(f"embedding.api_key={FAKE_KEY}",)),
                    parse_error({"sink": {"kind": "milvus", "uri": f"http://{FAKE_TOKEN}@milvus:19530"}}),
                    parse_error({"source": {"path": f"s3://AKIA:{FAKE_KEY}@bucket/x"}}),
                    parse_error({"embedding": {"api_key_env": FAKE_KEY}}),
                    parse_error(overrides=(FAKE_KEY,))):
        assert FAKE_KEY not in message and "Milvus-t0ken" not in message
    assert "--set embedding.api_key" in parse_error(overrides=(f"embedding.api_key={FAKE_KEY}",))


def test_env_name_keys_and_token_counts_are_not_secrets() -> None:
    job = parse({"embedding": {"api_key_env": "TEAM_KEY", "max_tokens_per_request": 9000},
                 "sink": {"kind": "milvus", "uri": "http://m:19530", "token_env": "TEAM_MILVUS"}})
    assert job.embedding.api_key_env == "TEAM_KEY"


def test_api_key_lookup_order() -> None:
    job = parse({"embedding": {"api_key_env": "TEAM_KEY"}})
    assert job.api_key({"TEAM_KEY": "a", "JINA_API_KEY": "b"}) == "a"
    assert job.api_key({"JINA_API_KEY": "b", "JINAAI_API_KEY": "c"}) == "b"
    assert job.api_key({"TEAM_KEY": "", "JINAAI_API_KEY": "c"}) == "c"
    assert job.api_key({}) is None


def test_display_never_contains_secret_values() -> None:
    environ = {"JINA_API_KEY": FAKE_KEY, "MILVUS_TOKEN": FAKE_TOKEN}
    data = {"source": {"path": "in"}, "sinks": [{"kind": "parquet", "path": "out/p"},
                                                {"kind": "milvus", "uri": "http://milvus:19530", "collection": "c"}]}
    job = parse_job(data, source_name="jobs/x.toml", environ=environ)
    shown = job.to_display_dict(environ=environ)
    text = json.dumps(shown) + repr(job) + json.dumps(job.fingerprint_fields())
    assert FAKE_KEY not in text and FAKE_TOKEN not in text
    assert shown["embedding"]["api_key"] == "<from $JINA_API_KEY: set>"
    assert shown["sinks"][1]["token"] == "<from $MILVUS_TOKEN: set>"
    unset = job.to_display_dict(environ={})
    assert unset["embedding"]["api_key"] == "<unset: $JINA_API_KEY, $JINAAI_API_KEY>"
    assert unset["sinks"][1]["token"] == "<unset: $MILVUS_TOKEN>"


def test_display_shows_effective_values() -> None:
    shown = parse({"embedding": {"model": "jina-embeddings-v4"}, "workers": {"count": 3}}).to_display_dict({})
    assert shown["embedding"]["dimensions"] == 2048 and shown["embedding"]["batch_size"] == 512
    assert shown["workers"]["max_shards_in_flight"] == 6
    assert shown["checkpoint"]["path"] == "out/x/_checkpoint"
    assert shown["fingerprint"] == parse({"embedding": {"model": "jina-embeddings-v4"}}).fingerprint()
    json.dumps(shown)


# --- overrides and environment -----------------------------------------------------------------------------


def test_set_overrides_are_typed_and_validated(tmp_path: Path) -> None:
    path = write_job(tmp_path, FULL_EXAMPLE)
    job = load_job(path, ["embedding.dimensions=256", "sink.path=out/x", "limits.rpm=100",
                          'source.passthrough=["title", "url"]', "mode=incremental", "embedding.normalized=false",
                          "progress.interval_s=2", "embedding.model=jina-embeddings-v4"], environ={})
    assert job.embedding.effective_dimensions == 256 and job.embedding.model == "jina-embeddings-v4"
    assert job.sinks[0].path == "out/x" and job.checkpoint.path == "out/x/_checkpoint"
    assert job.limits.rpm == 100 and job.mode == "incremental" and job.embedding.normalized is False
    assert job.source.passthrough == ("title", "url") and job.progress.interval_s == 2.0
    message = error_of(load_job, path, ["embedding.dimensions=4096"], environ={})
    assert f"invalid 'embedding.dimensions' in --set embedding.dimensions (job {path})" in message
    message = error_of(load_job, path, ["limits.rmp=5"], environ={})
    assert message == f"unknown key 'limits.rmp' in --set limits.rmp (job {path}); did you mean 'limits.rpm'?"


def test_set_string_fields_keep_the_text() -> None:
    job = parse(overrides=("sink.path=2024", "source.id_column=true", "source.text_column='quoted'"))
    assert job.sinks[0].path == "2024" and job.source.id_column == "true" and job.source.text_column == "quoted"


def test_set_creates_sections_and_reaches_sinks_entries() -> None:
    data = {"source": {"path": "in"}, "sinks": [{"path": "out/a"}, {"path": "out/b"}]}
    job = parse_job(data, overrides=["sinks.1.path=out/c", "workers.count=9", "sinks.2.kind=milvus"], environ={})
    assert [getattr(s, "path", None) for s in job.sinks] == ["out/a", "out/c", None]
    assert job.workers.count == 9 and job.sinks[2] == MilvusSinkConfig()
    assert data["sinks"][1]["path"] == "out/b"  # the caller's dict is untouched
    with pytest.raises(ConfigError, match=r"has 2 \[\[sinks\]\]; use sinks.N.path"):
        parse_job(data, overrides=["sink.path=x"], environ={})
    one = parse_job({"source": {"path": "in"}, "sinks": [{"path": "out/a"}]}, overrides=["sink.path=out/z"],
                    environ={})
    assert one.sinks[0].path == "out/z"
    for bad in ("sinks.7.path=x", "source.path.deeper=x", "noequals", "=x"):
        with pytest.raises(ConfigError):
            parse_job(data, overrides=[bad], environ={})


def test_environment_overrides_file_but_not_set() -> None:
    env = {"JINA_API_BASE": "http://127.0.0.1:8080/v1", "AWS_ENDPOINT_URL": "http://minio:9000"}
    job = parse({"embedding": {"api_base": "https://other/v1"}}, environ=env)
    assert job.embedding.api_base == "http://127.0.0.1:8080/v1" and job.source.s3_endpoint == "http://minio:9000"
    job = parse(overrides=("embedding.api_base=http://set:1/v1",), environ=env)
    assert job.embedding.api_base == "http://set:1/v1"
    assert parse(environ={}).embedding.api_base == "https://api.jina.ai/v1"
    assert "in $JINA_API_BASE (job jobs/x.toml)" in parse_error(environ={"JINA_API_BASE": "nope"})


# --- sinks -------------------------------------------------------------------------------------------------


def test_sink_and_sinks_are_exclusive(tmp_path: Path) -> None:
    text = FULL_EXAMPLE + '\n[[sinks]]\nkind = "parquet"\npath = "out/b"\n'
    with pytest.raises(ConfigError, match=r"job\.toml has both \[sink\] and \[\[sinks\]\]"):
        load_job(write_job(tmp_path, text), environ={})
    assert "no sink in jobs/y.toml" in error_of(parse_job, {"source": {"path": "in"}}, source_name="jobs/y.toml",
                                                environ={})


def test_several_sinks(tmp_path: Path) -> None:
    text = FULL_EXAMPLE.split("[sink]")[0] + """
[[sinks]]
kind = "milvus"
uri = "out/vectors.db"
collection = "docs"
index_type = "hnsw"
index_params = { M = 16, efConstruction = 200 }
metric = "ip"
[[sinks]]
path = "s3://bucket/emb/"
"""
    job = load_job(write_job(tmp_path, text), environ={})
    milvus, parquet = job.sinks
    assert isinstance(milvus, MilvusSinkConfig) and isinstance(parquet, ParquetSinkConfig)
    assert (milvus.index_type, milvus.metric, milvus.index_params) == ("HNSW", "IP", {"M": 16, "efConstruction": 200})
    assert milvus.is_lite and milvus.batch_bytes == 16 * 1024 * 1024 and milvus.token_env == "MILVUS_TOKEN"
    assert job.checkpoint.path == "s3://bucket/emb/_checkpoint"  # the first *parquet* sink


@pytest.mark.parametrize(("sink", "expected"), [
    ({"kind": "parquett", "path": "x"}, "'sink.kind' in jobs/x.toml: must be one of parquet, milvus, got "
                                        "'parquett'; did you mean 'parquet'?"),
    ({"kind": "parquet"}, "missing required key 'sink.path' in jobs/x.toml"),
    ({"kind": "milvus", "path": "x"}, "'sink.path' in jobs/x.toml: a milvus sink takes 'uri'"),
    ({"kind": "milvus", "colection": "x"}, "'sink.colection' in jobs/x.toml; did you mean 'sink.collection'"),
    ({"kind": "milvus", "index_type": "DISKANN"}, "'sink.index_type' in jobs/x.toml: must be one of AUTOINDEX, HNSW"),
    ({"kind": "milvus", "metric": "HAMMING"}, "'sink.metric' in jobs/x.toml: must be one of COSINE, IP, L2"),
    ({"kind": "milvus", "uri": "out/db"}, "a Milvus Lite path must end in .db"),
    ({"kind": "milvus", "uri": "ftp://x"}, "expected a .db path or http(s):// URL"),
    ({"kind": "milvus", "collection": "my-docs"}, "'sink.collection' in jobs/x.toml: Milvus names"),
    ({"kind": "milvus", "batch_bytes": 100 * 1024 * 1024}, "'sink.batch_bytes' in jobs/x.toml: must be ≤"),
    ({"kind": "milvus", "vector_field": "id"}, "must differ from id_field"),
    ({"kind": "milvus", "index_params": {"M": [1]}}, "'sink.index_params.M' in jobs/x.toml"),
    ({"kind": "milvus", "bm25": True}, "'sink.bm25' in jobs/x.toml: BM25 is computed from the stored text: set "
                                       "store_text = true as well"),
    ({"kind": "milvus", "store_text": True, "bm25": True, "sparse_field": "text"},
     "'sink.sparse_field' in jobs/x.toml: 'text' is already a field of collection 'embeddings'"),
    ({"kind": "milvus", "store_text": True, "bm25": True, "sparse_field": "doc_id"}, "'sink.sparse_field'"),
    ({"kind": "milvus", "store_text": True, "bm25": True, "sparse_field": "bm-25"},
     "'sink.sparse_field' in jobs/x.toml: Milvus names"),
])
def test_sink_errors(sink: dict[str, Any], expected: str) -> None:
    assert expected in error_of(parse_job, {"source": {"path": "in"}, "sink": sink}, source_name="jobs/x.toml",
                                environ={})


def test_sinks_must_not_collide() -> None:
    base = {"source": {"path": "in"}}
    with pytest.raises(ConfigError, match=r"'sinks\[1\]' in jobs/x.toml: writes to the same place"):
        parse_job(base | {"sinks": [{"path": "out/a/"}, {"path": "./out/a"}]}, source_name="jobs/x.toml",
                  environ={})
    with pytest.raises(ConfigError, match="one Milvus Lite sink per file"):
        parse_job(base | {"sinks": [{"kind": "milvus", "collection": "a"}, {"kind": "milvus", "collection": "b"}]},
                  environ={})
    with pytest.raises(ConfigError, match="column 'my-col' cannot be a field of Milvus collection"):
        parse_job({"source": {"path": "in", "passthrough": ["my-col"]}, "sink": {"kind": "milvus"}}, environ={})


def test_milvus_only_checkpoint_defaults() -> None:
    lite = parse_job({"source": {"path": "in"}, "sink": {"kind": "milvus", "uri": "out/v.db", "collection": "c"}},
                     environ={})
    assert lite.checkpoint.path == "out/c/_checkpoint"
    server = parse_job({"source": {"path": "in"}, "sink": {"kind": "milvus", "uri": "http://m:19530"}}, environ={})
    assert server.checkpoint.path == "embedder-state/embeddings/_checkpoint"
    explicit = parse({"checkpoint": {"path": "s3://b/ledger"}})
    assert explicit.checkpoint.path == "s3://b/ledger"


# --- fingerprint -------------------------------------------------------------------------------------------


def test_fingerprint_ignores_what_does_not_change_the_vectors() -> None:
    base = parse().fingerprint()
    assert len(base) == 64 and re.fullmatch(r"[0-9a-f]{64}", base)
    for extra in ({"limits": {"rpm": 5, "tpm": 10, "max_concurrency": 1, "price_per_million_tokens": 1}},
                  {"workers": {"count": 32, "cpus_per_worker": 1, "max_shards_in_flight": 3}},
                  {"embedding": {"api_base": "http://localhost:1/v1", "batch_size": 10, "timeout_s": 5,
                                 "max_retries": 0, "embedding_type": "float", "max_tokens_per_request": 100}},
                  {"embedding": {"dimensions": 1024, "task": "retrieval.passage"}},  # the defaults spelled out
                  {"progress": {"interval_s": 60}}, {"checkpoint": {"path": "elsewhere"}},
                  {"source": {"path": "other/corpus", "format": "parquet"}},
                  {"sink": {"path": "./out/x/"}}):
        assert parse(extra).fingerprint() == base, extra


def test_fingerprint_changes_with_what_changes_the_vectors_or_destination() -> None:
    base = parse()
    changes = ({"embedding": {"dimensions": 512}}, {"embedding": {"model": "jina-embeddings-v4"}},
               {"embedding": {"task": "text-matching"}}, {"embedding": {"normalized": False}},
               {"embedding": {"truncate": True}}, {"embedding": {"late_chunking": True}},
               {"sink": {"path": "out/y"}}, {"source": {"text_column": "body"}}, {"source": {"id_column": "key"}},
               {"source": {"passthrough": ["title"]}}, {"source": {"shard_rows": 100}},
               {"sink": {"kind": "milvus"}})
    prints = {parse(extra).fingerprint() for extra in changes}
    assert base.fingerprint() not in prints and len(prints) == len(changes)
    differing = {key for key, value in parse({"embedding": {"dimensions": 512}}).fingerprint_fields().items()
                 if base.fingerprint_fields()[key] != value}
    assert differing == {"dimensions"}


def test_fingerprint_of_milvus_target_and_sink_order() -> None:
    def job(*sinks: dict[str, Any]) -> JobConfig:
        return parse_job({"source": {"path": "in"}, "sinks": list(sinks)}, environ={})
    server = {"kind": "milvus", "uri": "http://m:19530", "collection": "c"}
    assert job(server).fingerprint() == job(server | {"db_name": "default", "index_type": "HNSW"}).fingerprint()
    assert job(server).fingerprint() != job(server | {"collection": "d"}).fingerprint()
    assert job(server).fingerprint() != job(server | {"db_name": "prod"}).fingerprint()
    parquet = {"path": "out/p"}
    assert job(server, parquet).fingerprint() == job(parquet, server).fingerprint()
    # keys added later count only when set: a job without them resumes with the fingerprint it always had
    assert job(server).fingerprint() == job(server | {"bm25": False, "sparse_field": "s"}).fingerprint()
    text = server | {"store_text": True}
    hybrid = [text | {"bm25": True}, text | {"bm25": True, "sparse_field": "terms"}]
    prints = {job(server).fingerprint(), job(text).fingerprint(), *(job(sink).fingerprint() for sink in hybrid)}
    assert len(prints) == 4


# --- docs stay in step with the schema ---------------------------------------------------------------------


def test_every_key_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    parts = re.split(r"^## ", doc, flags=re.M)
    for section, cls in {**SECTIONS, "sink": ParquetSinkConfig, "sinks": MilvusSinkConfig}.items():
        name = "sink" if section == "sinks" else section
        text = next(part for part in parts if part.startswith(f"[{name}]"))
        for spec in dataclasses.fields(cls):
            assert f"| `{spec.name}` |" in text, f"{section}.{spec.name} missing from docs/configuration.md"
    assert "| `mode` |" in doc and set(SINK_CLASSES) == {"parquet", "milvus"}
