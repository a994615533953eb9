"""Reading one shard's rows and columns, and every input error with what it must name."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from embedder.config import SourceConfig, parse_job
from embedder.errors import ConfigError, InputError
from embedder.source.files import discover_files
from embedder.source.reader import read_shard, repeated_ids
from embedder.source.shards import Shard, plan_shards


def plan(path: Path | str, shard_rows: int = 1000) -> list[Shard]:
    return plan_shards(discover_files(str(path)), shard_rows)


def source(**fields: object) -> SourceConfig:
    """A validated ``[source]`` section reading these columns (its path is not what the reader uses)."""
    table = {name: list(value) if isinstance(value, tuple) else value for name, value in fields.items()}
    return parse_job({"source": {"path": "unused", **table}, "sink": {"path": "out"}}).source


def read_all(path: Path | str, spec: SourceConfig, shard_rows: int) -> pa.Table:
    return pa.concat_tables([read_shard(s, spec) for s in plan(path, shard_rows)])


def corpus(n: int) -> pa.Table:
    return pa.table({
        "doc_id": pa.array(range(n), pa.int32()),
        "title": [f"title {i}" if i % 7 else None for i in range(n)],
        "body": [f"body of {i}" for i in range(n)],
        "year": [2000 + i % 20 for i in range(n)],
        "unused": [b"x" * 100] * n,
    })


def write_jsonl(path: Path, rows: list[dict] | list[str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


SPEC = source(id_column="doc_id", text_column="body", passthrough=("year",))


# --- happy paths -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shard_rows", [1, 9, 25, 40, 100])
def test_parquet_shards_read_exactly_their_rows(tmp_path: Path, shard_rows: int) -> None:
    pq.write_table(corpus(100), tmp_path / "c.parquet", row_group_size=25)
    got = read_all(tmp_path / "c.parquet", SPEC, shard_rows)
    assert got.column_names == ["id", "text", "year", "_row"]
    assert got.schema.field("id").type == pa.int64() and got.schema.field("_row").type == pa.int64()
    assert got["id"].to_pylist() == list(range(100)) == got["_row"].to_pylist()
    assert got["text"].to_pylist() == corpus(100)["body"].to_pylist()
    assert got["year"].to_pylist() == corpus(100)["year"].to_pylist()


def test_template_renders_columns_and_nulls_become_empty(tmp_path: Path) -> None:
    pq.write_table(corpus(10), tmp_path / "c.parquet")
    spec = source(id_column="doc_id", text_template="{title} ({year})\n\n{body}")
    got = read_all(tmp_path / "c.parquet", spec, 4)
    assert got["text"][1].as_py() == "title 1 (2001)\n\nbody of 1"
    assert got["text"][0].as_py() == " (2000)\n\nbody of 0"  # title is null in row 0
    assert list(spec.read_columns) == ["doc_id", "title", "year", "body"]


def test_text_nulls_stay_null_and_dictionary_text_is_decoded(tmp_path: Path) -> None:
    t = pa.table({"id": ["a", "b", "c"], "text": pa.array(["x", None, "x"]).dictionary_encode()})
    pq.write_table(t, tmp_path / "d.parquet")
    got = read_all(tmp_path / "d.parquet", source(), 10)
    assert got["text"].to_pylist() == ["x", None, "x"] and got.schema.field("text").type == pa.string()
    assert got.schema.field("id").type == pa.string()


def test_a_large_row_group_split_into_shards(tmp_path: Path) -> None:
    pq.write_table(corpus(5000), tmp_path / "big.parquet", row_group_size=5000)
    shards = plan(tmp_path / "big.parquet", 1200)
    assert len(shards) == 5 and {s.row_groups for s in shards} == {(0,)}
    got = pa.concat_tables([read_shard(s, SPEC) for s in shards])
    assert got["id"].to_pylist() == list(range(5000)) == got["_row"].to_pylist()


def test_ipc_shards(tmp_path: Path) -> None:
    t = corpus(50)
    with pa.ipc.new_file(tmp_path / "c.arrow", t.schema) as writer:
        for batch in t.to_batches(max_chunksize=12):
            writer.write_batch(batch)
    got = read_all(tmp_path / "c.arrow", SPEC, 10)
    assert got["id"].to_pylist() == list(range(50)) == got["_row"].to_pylist()
    assert got["text"].to_pylist() == t["body"].to_pylist()


def test_jsonl_byte_ranges_equal_a_full_read(tmp_path: Path) -> None:
    rows = [{"id": f"k{i}", "text": f"t {i}", "when": f"2024-01-0{1 + i % 9}", "extra": {"a": i}}
            for i in range(95)]
    path = write_jsonl(tmp_path / "a.jsonl", rows)
    path.write_text(path.read_text().replace("\n", "\n\n", 10) + "\n  \n")  # blank lines are not rows
    spec = source(passthrough=("when",))
    got = read_all(path, spec, 10)
    assert got["id"].to_pylist() == [f"k{i}" for i in range(95)] and got["_row"].to_pylist() == list(range(95))
    assert got["when"].to_pylist() == [r["when"] for r in rows]  # date-like strings stay strings
    assert got.schema.field("when").type == pa.string()


def test_compressed_text_files(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(b"".join(b'{"id": %d, "text": "x"}\n' % i
                                                                 for i in range(30))))
    got = read_all(tmp_path / "a.jsonl.gz", source(), 7)
    assert got["id"].to_pylist() == list(range(30)) and got.schema.field("id").type == pa.int64()
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(b'id,text\n1,"a\nb"\n2,c\n'))
    got = read_all(tmp_path / "b.csv.gz", source(), 1)
    assert got.to_pylist() == [{"id": "1", "text": "a\nb", "_row": 0}, {"id": "2", "text": "c", "_row": 1}]


def test_csv_quoted_fields_and_string_types(tmp_path: Path) -> None:
    lines = ['id,text,n']
    for i in range(40):
        lines.append(f'{i:03d},"row {i}, with a comma\nand a ""newline""",{i}')
    lines.append('040,,7')  # empty unquoted text: null, kept for the dead-letter record
    lines.append('041,"",8')  # quoted empty text: an empty string
    path = tmp_path / "a.csv"
    path.write_text("\r\n".join(lines))
    got = read_all(path, source(passthrough=("n",)), 6)
    assert got["id"].to_pylist()[:2] == ["000", "001"]  # CSV ids are strings: leading zeros survive
    assert got["text"][3].as_py() == 'row 3, with a comma\nand a "newline"'
    assert got["text"].to_pylist()[-2:] == [None, ""]
    assert got["n"].to_pylist()[:3] == ["0", "1", "2"] and got["_row"].to_pylist() == list(range(42))
    as_int = read_all(path, source(passthrough=("n",), id_type="int64"), 6)
    assert as_int["id"].to_pylist() == list(range(42)) and as_int.schema.field("id").type == pa.int64()


def test_file_uri_and_explicit_local_filesystem(tmp_path: Path) -> None:
    pq.write_table(corpus(30), tmp_path / "c.parquet", row_group_size=10)
    fs = pafs.LocalFileSystem()
    shards = plan_shards(discover_files(f"file://{tmp_path}"), 10, filesystem=fs)
    got = pa.concat_tables([read_shard(s, SPEC, filesystem=fs) for s in shards])
    assert got["id"].to_pylist() == list(range(30))


def test_a_5000_row_parquet_shard_reads_fast(tmp_path: Path) -> None:
    pq.write_table(corpus(20_000), tmp_path / "c.parquet", row_group_size=5000)
    shard = plan(tmp_path / "c.parquet", 5000)[2]
    spec = source(id_column="doc_id", text_template="{title}\n{body}", passthrough=("year",))
    read_shard(shard, spec)
    started = time.perf_counter()
    got = read_shard(shard, spec)
    assert time.perf_counter() - started < 0.5
    assert got.num_rows == 5000 and got["_row"][0].as_py() == 10_000


def test_repeated_ids() -> None:
    ids = pa.array(["a", "b", "a", "c", "b", "a"])
    assert repeated_ids(ids) == [("a", [0, 2, 5]), ("b", [1, 4])]
    assert repeated_ids(ids.slice(0, 2)) == []


# --- errors ------------------------------------------------------------------------------------------------

def one_shard(path: Path) -> Shard:
    [shard] = plan(path)
    return shard


def test_missing_columns_are_named_with_the_columns_there_are(tmp_path: Path) -> None:
    pq.write_table(corpus(5), tmp_path / "c.parquet")
    shard = one_shard(tmp_path / "c.parquet")
    with pytest.raises(InputError, match=f"{tmp_path}/c.parquet: column 'text' not found; columns are: "
                                         "doc_id, title, body, year, unused"):
        read_shard(shard, source(id_column="doc_id"))
    with pytest.raises(InputError, match=r"column 'id' not found.*source\.id_column"):
        read_shard(shard, source(text_column="body"))
    with pytest.raises(InputError, match=r"column 'nope' not found.*source\.passthrough"):
        read_shard(shard, source(id_column="doc_id", text_column="body", passthrough=("nope",)))
    with pytest.raises(InputError, match=r"column 'summary' not found.*source\.text_template"):
        read_shard(shard, source(id_column="doc_id", text_template="{summary}"))
    write_jsonl(tmp_path / "a.jsonl", [{"id": 1, "body": "x"}])
    with pytest.raises(InputError, match=r"a\.jsonl: column 'text' not found; columns are: id, body"):
        read_shard(one_shard(tmp_path / "a.jsonl"), source())
    (tmp_path / "a.csv").write_text("id,body\n1,x\n")
    with pytest.raises(InputError, match=r"a\.csv: column 'text' not found; columns are: id, body"):
        read_shard(one_shard(tmp_path / "a.csv"), source())


def test_text_must_be_strings_and_ids_integers_or_strings(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1.5, 2.5], "text": ["a", "b"], "n": [1, 2]}), tmp_path / "c.parquet")
    shard = one_shard(tmp_path / "c.parquet")
    with pytest.raises(InputError, match=r"c\.parquet: text column 'n' has type int64, not string"):
        read_shard(shard, source(id_column="n", text_column="n"))
    with pytest.raises(InputError, match=r"c\.parquet: id column 'id' has type double; ids must be integers"):
        read_shard(shard, source())
    (tmp_path / "a.csv").write_text("id,text\n1,a\nx7,b\n")
    with pytest.raises(InputError, match=r"a\.csv row 1: id 'x7' in column 'id' is not an integer"):
        read_shard(one_shard(tmp_path / "a.csv"), source(id_type="int64"))


def test_null_and_duplicate_ids_name_their_rows(tmp_path: Path) -> None:
    rows = [{"id": f"k{i}", "text": "t"} for i in range(20)]
    rows[17]["id"] = None
    with pytest.raises(InputError, match=r"a\.jsonl row 17: id is null"):
        read_shard(one_shard(write_jsonl(tmp_path / "a.jsonl", rows)), source())
    rows[17]["id"], rows[3]["id"], rows[9]["id"] = "k17", "x", "x"
    with pytest.raises(InputError, match=r"b\.jsonl: duplicate id 'x' at rows 3 and 9$"):
        read_shard(one_shard(write_jsonl(tmp_path / "b.jsonl", rows)), source())
    pq.write_table(pa.table({"id": [5, 6, 5, 6, 5], "text": ["t"] * 5}), tmp_path / "d.parquet")
    with pytest.raises(InputError, match=r"duplicate id 5 at rows 0, 2 and 4 \(2 ids repeat in .*d\.parquet"):
        read_shard(one_shard(tmp_path / "d.parquet"), source())


def test_bad_utf8_names_file_and_row(tmp_path: Path) -> None:
    good = b'{"id": 1, "text": "a"}\n\n{"id": 2, "text": "b"}\n'
    (tmp_path / "a.jsonl").write_bytes(good + b'{"id": 3, "text": "\xff"}\n')
    with pytest.raises(InputError, match=r"a\.jsonl row 2: invalid UTF-8"):
        read_shard(one_shard(tmp_path / "a.jsonl"), source())
    (tmp_path / "a.csv").write_bytes(b'id,text,other\n1,a,\xff\n2,"b\nc",x\n3,\xfe,y\n')
    with pytest.raises(InputError, match=r"a\.csv row 2, column 'text': invalid UTF-8"):
        read_shard(one_shard(tmp_path / "a.csv"), source())  # the bad byte in 'other' is not read


def test_malformed_json_line_names_its_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "text": "t"} for i in range(30)])
    path.write_text(path.read_text().replace('{"id": 23,', '{"id": 23', 1))
    shards = plan(path, 10)
    read_shard(shards[0], source())
    with pytest.raises(InputError, match=r"a\.jsonl row 23: malformed JSON line"):
        read_shard(shards[2], source())


def test_csv_record_with_wrong_field_count(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,text\n1,a\n2,b,c\n")
    with pytest.raises(InputError, match=r"a\.csv rows 0–1: CSV parse error: .*Expected 2 columns, got 3: 2,b,c"):
        read_shard(one_shard(tmp_path / "a.csv"), source())


def test_file_changed_after_planning(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "text": "t"} for i in range(5)])
    shard = one_shard(path)
    write_jsonl(path, [{"id": i, "text": "t"} for i in range(3)])  # rewritten shorter: the range reads 3 rows
    with pytest.raises(InputError, match=r"a\.jsonl rows 0–4: expected 5 rows, read 3; did the file change"):
        read_shard(shard, source())


def test_source_section_validation() -> None:
    assert source(text_template="{a}").text_column is None  # the template replaces the default column
    with pytest.raises(ConfigError, match=r"exactly one of 'source\.text_column' and 'source\.text_template'"):
        source(text_column="body", text_template="{a}")
    with pytest.raises(ConfigError, match="must not be empty"):
        source(text_column="")
    with pytest.raises(ConfigError, match=r"'source\.text_template'.*use plain \{column\} fields"):
        source(text_template="{a:>10}")
    with pytest.raises(ConfigError, match="names no column"):
        source(text_template="just text")
    with pytest.raises(ConfigError, match=r"source\.passthrough"):
        source(passthrough=("_row",))
    with pytest.raises(ConfigError, match=r"source\.id_type"):
        source(id_type="float")
