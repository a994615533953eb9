"""Discovery of input files and shard planning, on real files in ``tmp_path``."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.fs as pafs
import pyarrow.json as pjson
import pyarrow.parquet as pq
import pytest

from embedder.errors import ConfigError, InputError
from embedder.source import shards as shards_module
from embedder.source.files import discover_files, infer_format
from embedder.source.shards import Shard, ipc_batch_rows, plan_shards, row_ends, shard_summary
from embedder.storage import resolve


def table(n: int, start: int = 0) -> pa.Table:
    return pa.table({"id": list(range(start, start + n)), "text": [f"doc {i}" for i in range(start, start + n)]})


def write_parquet(path: Path, n: int = 100, row_group_size: int = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table(n), path, row_group_size=row_group_size)
    return path


def write_ipc(path: Path, batch_rows: list[int], compression: str | None = None) -> Path:
    t = table(sum(batch_rows)).append_column("cat", pa.array(["a", "b"] * (sum(batch_rows) // 2)
                                                            + ["a"] * (sum(batch_rows) % 2)).dictionary_encode())
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_file(path, t.schema, options=options) as writer:
        whole, start = pa.RecordBatch.from_arrays([c.combine_chunks() for c in t.columns], schema=t.schema), 0
        for n in batch_rows:
            writer.write_batch(whole.slice(start, n))  # slices share one dictionary, as IPC files need
            start += n
    return path


def assert_covers(shards: list[Shard], total: int) -> None:
    """Shards of one file cover rows 0..total-1 exactly once, in order."""
    assert [s.row_start for s in shards] == [sum(s.row_count for s in shards[:k]) for k in range(len(shards))]
    assert sum(s.row_count for s in shards) == total
    assert all(s.row_count > 0 for s in shards)


# --- discovery ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "fmt"), [
    ("a.parquet", "parquet"), ("a.PQ", "parquet"), ("a.jsonl", "jsonl"), ("a.ndjson", "jsonl"),
    ("a.json", "jsonl"), ("a.csv", "csv"), ("a.arrow", "arrow"), ("a.feather", "arrow"), ("a.ipc", "arrow"),
    ("a.jsonl.gz", "jsonl"), ("a.csv.zst", "csv"), ("a.parquet.gz", None), ("a.tsv", None), ("part-0000", None),
])
def test_infer_format(name: str, fmt: str | None) -> None:
    assert infer_format(name) == fmt


def test_discovers_a_single_file(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "one.parquet")
    [f] = discover_files(str(path))
    assert (f.uri, f.format, f.size) == (str(path), "parquet", path.stat().st_size)
    assert f.version == str(path.stat().st_mtime_ns) and f.mtime_ns == path.stat().st_mtime_ns


def test_directory_is_recursive_sorted_and_skips_hidden_and_underscore_names(tmp_path: Path) -> None:
    write_parquet(tmp_path / "b.parquet")
    write_parquet(tmp_path / "year=2024" / "month=01" / "part-0.parquet")  # hive folders are just folders
    (tmp_path / "a.jsonl").write_text('{"id": 1, "text": "x"}\n')
    (tmp_path / "c.csv").write_text("id,text\n1,x\n")
    write_ipc(tmp_path / "d.arrow", [3])
    for ignored in ("_SUCCESS", ".hidden.parquet", "_checkpoint/x.parquet", ".git/y.jsonl", "sub/_tmp.csv"):
        (tmp_path / ignored).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / ignored).write_text("junk")
    found = discover_files(str(tmp_path))
    assert [Path(f.uri).relative_to(tmp_path).as_posix() for f in found] == [
        "a.jsonl", "b.parquet", "c.csv", "d.arrow", "year=2024/month=01/part-0.parquet"]
    assert [f.format for f in found] == ["jsonl", "parquet", "csv", "arrow", "parquet"]


def test_globs(tmp_path: Path) -> None:
    for name in ("x/a.jsonl", "x/b.jsonl", "x/deep/c.jsonl", "x/d.csv", "x/_e.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text('{"id": 1}\n')
    names = lambda pattern: [Path(f.uri).name for f in discover_files(str(tmp_path / pattern))]  # noqa: E731
    assert names("x/*.jsonl") == ["a.jsonl", "b.jsonl"]
    assert names("x/**/*.jsonl") == ["a.jsonl", "b.jsonl", "c.jsonl"]
    assert names("x/[ab].jsonl") == ["a.jsonl", "b.jsonl"]
    assert names("x/?.csv") == ["d.csv"]
    with pytest.raises(InputError, match=r"no input files found at .*\*\.parquet"):
        discover_files(str(tmp_path / "x" / "*.parquet"))


def test_explicit_format_takes_unknown_extensions_and_skips_other_formats(tmp_path: Path) -> None:
    write_parquet(tmp_path / "part-00000")
    write_parquet(tmp_path / "part-00001.parquet")
    (tmp_path / "notes.jsonl").write_text("{}\n")
    found = discover_files(str(tmp_path), "parquet")
    assert [Path(f.uri).name for f in found] == ["part-00000", "part-00001.parquet"]


def test_file_uri_uses_the_local_filesystem(tmp_path: Path) -> None:
    write_parquet(tmp_path / "d" / "a.parquet")
    fs, path = resolve(f"file://{tmp_path}/d")
    assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/d"
    [f] = discover_files(f"file://{tmp_path}/d")
    assert f.uri == str(tmp_path / "d" / "a.parquet")  # normalised to a plain absolute path
    assert sum(s.row_count for s in plan_shards([f], 40, filesystem=pafs.LocalFileSystem())) == 100


def test_relative_local_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_parquet(tmp_path / "rel.parquet")
    monkeypatch.chdir(tmp_path)
    assert discover_files("rel.parquet")[0].uri == str(tmp_path / "rel.parquet")


def test_s3_endpoint_override(monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"endpoint_override": "http://127.0.0.1:9", "region": "us-east-1", "allow_bucket_creation": True}
    fs, path = resolve("s3://bucket/some/prefix", options)
    kwargs = fs.__reduce__()[1][0]
    assert (fs.type_name, path) == ("s3", "bucket/some/prefix")
    assert (kwargs["endpoint_override"], kwargs["scheme"], kwargs["allow_bucket_creation"]) == (
        "127.0.0.1:9", "http", True)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localhost:8")
    fs, _ = resolve("s3://bucket/x")
    assert fs.__reduce__()[1][0]["endpoint_override"] == "localhost:8"
    fs, _ = resolve("s3://bucket/x", {"endpoint_override": "https://minio:7"})
    assert (fs.__reduce__()[1][0]["endpoint_override"], fs.__reduce__()[1][0]["scheme"]) == ("minio:7", "https")


def test_discovery_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"input path not found: {tmp_path}/nope"):
        discover_files(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_text("")
    with pytest.raises(InputError, match=f"no input files found at {tmp_path}/empty"):
        discover_files(str(tmp_path / "empty"))
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "data.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"source\.format.*data\.txt"):
        discover_files(str(tmp_path / "odd"))
    with pytest.raises(ConfigError, match=r"source\.format: unknown format 'xml'"):
        discover_files(str(tmp_path / "odd"), "xml")


# --- Parquet and Arrow IPC ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shard_rows", [1, 7, 30, 45, 60, 100, 1000])
def test_parquet_shards_follow_row_groups_and_cover_every_row(tmp_path: Path, shard_rows: int) -> None:
    f = discover_files(str(write_parquet(tmp_path / "a.parquet", n=100, row_group_size=30)))
    shards = plan_shards(f, shard_rows)
    assert_covers(shards, 100)
    group_starts = [0, 30, 60, 90]
    for s in shards:
        assert s.group_row_start == group_starts[s.row_groups[0]]
        assert s.row_count <= shard_rows or (len(s.row_groups) == 1 and s.row_count <= 30)
        # a shard either is a run of whole groups, or lies inside one group
        whole = s.row_start == s.group_row_start and s.row_end == min(100, group_starts[s.row_groups[-1]] + 30)
        assert whole or len(s.row_groups) == 1
    if shard_rows == 60:
        assert [s.row_groups for s in shards] == [(0, 1), (2, 3)]
    if shard_rows == 7:  # a 30-row group becomes five 6-row shards, not 7+7+7+7+2
        assert [s.row_count for s in shards[:5]] == [6] * 5


def test_a_row_group_a_little_larger_than_shard_rows_stays_whole(tmp_path: Path) -> None:
    f = discover_files(str(write_parquet(tmp_path / "a.parquet", n=100, row_group_size=50)))
    assert [s.row_count for s in plan_shards(f, 45)] == [50, 50]
    assert [s.row_count for s in plan_shards(f, 35)] == [25, 25, 25, 25]


def test_corrupt_parquet_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(InputError, match=f"not a valid Parquet file: {bad}: "):
        plan_shards(discover_files(str(bad)), 10)


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_ipc_batch_rows_come_from_headers_and_match_pyarrow(tmp_path: Path, compression: str | None) -> None:
    path = write_ipc(tmp_path / "a.arrow", [17, 0, 5, 40, 1], compression)
    with pafs.LocalFileSystem().open_input_file(str(path)) as handle:
        counts = ipc_batch_rows(handle, path.stat().st_size)
    reader = pa.ipc.open_file(str(path))
    assert [r for r, _ in counts] == [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
    assert all(size > 0 for _, size in counts)
    shards = plan_shards(discover_files(str(path)), 10)
    assert_covers(shards, 63)
    assert [(s.row_groups, s.row_count) for s in shards[:3]] == [((0,), 8), ((0,), 9), ((2,), 5)]


def test_corrupt_ipc_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.arrow"
    bad.write_bytes(b"ARROW1\0\0 truncated")
    with pytest.raises(InputError, match=f"not a valid Arrow IPC file: {bad}"):
        plan_shards(discover_files(str(bad)), 10)


# --- JSONL and CSV -----------------------------------------------------------------------------------------

def jsonl_bytes(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        lines.append(json.dumps({"id": i, "text": "é" * rng.randint(0, 40)}, ensure_ascii=False))
        if rng.random() < 0.2:
            lines.append(rng.choice(["", "   ", "\t", "\r"]))  # blank lines are not rows
    return ("\ufeff" + "\r\n".join(lines) + "\n\n \n").encode()


def csv_bytes(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    pieces = ["id,text,n\r\n"]
    for i in range(n):
        text = rng.choice(['plain', '"with, comma"', '"two\nlines"', '"quote "" inside\r\nand more"', '""', ''])
        pieces.append(f"{i},{text},{rng.randint(0, 9)}\n")
        if rng.random() < 0.1:
            pieces.append("\n")
    return "".join(pieces).rstrip("\n").encode()  # last record without its newline


def read_range(data: bytes, shard: Shard, csv: bool) -> pa.Table:
    assert shard.byte_start is not None and shard.byte_end is not None
    chunk = data[: shard.header_end] + data[shard.byte_start: shard.byte_end]
    if csv:
        return pcsv.read_csv(pa.BufferReader(chunk), parse_options=pcsv.ParseOptions(newlines_in_values=True),
                             convert_options=pcsv.ConvertOptions(column_types={"text": pa.string()}))
    return pjson.read_json(pa.BufferReader(chunk))


@pytest.mark.parametrize("block", [3, 64, 1 << 20])
@pytest.mark.parametrize(("kind", "make"), [("jsonl", jsonl_bytes), ("csv", csv_bytes)])
def test_text_shards_are_byte_ranges_of_whole_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   block: int, kind: str, make) -> None:
    monkeypatch.setattr(shards_module, "SCAN_BLOCK", block)  # tiny blocks: rows and quotes straddle reads
    data = make(300)
    path = tmp_path / f"a.{kind}"
    path.write_bytes(data)
    full = read_range(data, Shard("x", None, 0, 0, 0, 0, len(data)), kind == "csv")  # type: ignore[arg-type]
    assert full.num_rows == 300
    for shard_rows in (1, 13, 300, 1000):
        shards = plan_shards(discover_files(str(path)), shard_rows)
        assert_covers(shards, 300)
        assert all(s.row_count == shard_rows for s in shards[:-1])
        parts = [read_range(data, s, kind == "csv") for s in shards]
        assert [p.num_rows for p in parts] == [s.row_count for s in shards]
        assert pa.concat_tables(parts).to_pylist() == full.to_pylist()


def test_row_ends_counts_records_not_lines() -> None:
    assert list(row_ends(b'id,t\n1,"a\nb"\n\n2,"x""\n"\n', csv=True)) == [5, 13, 23]
    assert list(row_ends(b'{"a":1}\n \n\r\n{"a":2}', csv=False)) == [8, 19]


def test_empty_files_have_no_shards(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"")
    (tmp_path / "b.jsonl").write_bytes(b"\n\n  \n")
    (tmp_path / "c.csv").write_bytes(b"id,text\n")
    pq.write_table(table(0), tmp_path / "d.parquet")
    write_ipc(tmp_path / "e.arrow", [0])
    assert plan_shards(discover_files(str(tmp_path)), 10) == []


def test_compressed_text_is_one_shard_with_exact_rows(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(120)))
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(csv_bytes(80)))
    shards = plan_shards(discover_files(str(tmp_path)), 50)
    assert [(s.row_count, s.byte_start, s.file.compression) for s in shards] == [
        (120, None, "gzip"), (80, None, "gzip")]


def test_large_csv_scan_is_fast(tmp_path: Path) -> None:
    row = b'123,"some text, with a comma and a ""quote""\nand a newline",4\n'
    path = tmp_path / "big.csv"
    path.write_bytes(b"id,text,n\n" + row * 400_000)  # ~25 MB
    import time
    started = time.perf_counter()
    shards = plan_shards(discover_files(str(path)), 100_000)
    assert time.perf_counter() - started < 5
    assert [s.row_count for s in shards] == [100_000] * 4
    assert shards[1].byte_start == 10 + 100_000 * len(row)


# --- identity, summary, transport --------------------------------------------------------------------------

def test_shard_ids_are_stable_and_change_only_with_their_file(tmp_path: Path) -> None:
    a = write_parquet(tmp_path / "a.parquet")
    b = tmp_path / "b.jsonl"
    b.write_bytes(jsonl_bytes(50))
    first = plan_shards(discover_files(str(tmp_path)), 20)
    again = plan_shards(discover_files(str(tmp_path)), 20)
    assert [s.shard_id for s in first] == [s.shard_id for s in again]
    assert len({s.shard_id for s in first}) == len(first) and all(len(s.shard_id) == 24 for s in first)
    stat = a.stat()
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched: same bytes, new mtime
    touched = plan_shards(discover_files(str(tmp_path)), 20)
    ids = lambda plan, name: [s.shard_id for s in plan if s.file.uri.endswith(name)]  # noqa: E731
    assert not set(ids(touched, "a.parquet")) & set(ids(first, "a.parquet"))
    assert ids(touched, "b.jsonl") == ids(first, "b.jsonl")


def test_summary_pickling_and_bad_shard_rows(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", n=100, row_group_size=10)
    (tmp_path / "b.jsonl").write_bytes(jsonl_bytes(40))
    shards = plan_shards(discover_files(str(tmp_path)), 25)
    summary = shard_summary(shards)
    assert summary["files"] == 2 and summary["rows"] == 140 and summary["shards"] == len(shards)
    assert summary["bytes"] > 0
    assert pickle.loads(pickle.dumps(shards[0])) == shards[0]
    assert len(pickle.dumps(shards[0])) < 600
    with pytest.raises(ConfigError, match="shard_rows"):
        plan_shards(discover_files(str(tmp_path)), 0)
