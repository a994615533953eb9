"""Bad input, end to end: ``embedder run`` on broken corpora.

Each case: a clear message on stderr naming the file and the column or row, a non-zero exit where the job cannot
go on, no API request for what is refused up front, and nothing already finished lost. Duplicate ids are
reported, never written twice.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from jobtools import (
    Result,
    assert_exact_output,
    corpus_rows,
    done_ids,
    ledger,
    run_cli,
    write_csv,
    write_jsonl,
    write_parquet,
)

from embedder.testing import small_job


@pytest.fixture
def run(tmp_path: Path, env):
    """``run(source, **job options)``: the job over ``source`` into ``tmp_path/out``; returns the CLI result."""

    def go(source: Path | str, *args: str, **options) -> Result:
        job = small_job(tmp_path / "job.toml", source, tmp_path / "out", **options)
        return run_cli(job, *args, env=env)

    return go


def refused(result: Result, jina, *fragments: str) -> None:
    """Refused before any API call, with exit 2 and a message holding every fragment."""
    assert result.returncode == 2, result.describe()
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in the message:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, "a clear message, not a traceback"
    assert jina.stats()["requests"] == 0, "nothing was sent to the API"


def test_missing_path(tmp_path: Path, run, jina) -> None:
    missing = tmp_path / "no-such-dir"
    refused(run(missing), jina, "input path not found", str(missing))


def test_empty_input(tmp_path: Path, run, jina) -> None:
    (tmp_path / "empty").mkdir()
    refused(run(tmp_path / "empty"), jina, "no input files found", str(tmp_path / "empty"))
    rows = corpus_rows(0)
    write_parquet(tmp_path / "zero.parquet", rows)
    refused(run(tmp_path / "zero.parquet"), jina, "input is empty", str(tmp_path / "zero.parquet"))


def test_missing_column(tmp_path: Path, run, jina) -> None:
    rows = corpus_rows(50).rename_columns(["id", "title", "topic", "body"])
    path = write_jsonl(tmp_path / "docs.jsonl", rows)
    refused(run(path), jina, path, "column 'text' not found", "body", "source.text_column")


@pytest.mark.parametrize("column", ["text", "id"])
def test_column_of_the_wrong_type(tmp_path: Path, run, jina, column: str) -> None:
    rows = corpus_rows(50)
    wrong = pa.array([float(n) + 0.5 for n in range(50)], pa.float64())
    rows = rows.set_column(rows.column_names.index(column), column, wrong)
    path = write_parquet(tmp_path / "docs.parquet", rows)
    refused(run(path), jina, path, f"column '{column}'", "double")


def test_null_ids(tmp_path: Path, run, jina) -> None:
    good = corpus_rows(600)
    ids = good.column("id").to_pylist()
    ids[537] = None  # in the second shard: found by the up-front id check, not by the planning sample
    bad = good.set_column(0, "id", pa.array(ids, pa.string()))
    path = write_parquet(tmp_path / "docs.parquet", bad, row_group_rows=300)
    refused(run(path, shard_rows=300), jina, path, "row 537", "id is null")


def test_duplicate_ids_within_a_shard(tmp_path: Path, run, jina) -> None:
    rows = corpus_rows(600)
    ids = rows.column("id").to_pylist()
    ids[450] = ids[420]  # both in the second shard (rows 300..599)
    rows = rows.set_column(0, "id", pa.array(ids, pa.string()))
    path = write_parquet(tmp_path / "docs.parquet", rows, row_group_rows=300)
    refused(run(path, shard_rows=300), jina, repr(ids[420]), f"{path} row 420", f"{path} row 450", "duplicate")
    assert not (tmp_path / "out" / "_manifest.json").exists()


def test_duplicate_ids_across_files_and_shards(tmp_path: Path, run, jina) -> None:
    """An id in two files (and another in two shards of one file) is refused before any API call, with both
    places of each, so it can never be doubled in the output."""
    rows = corpus_rows(900)
    first, second = rows.slice(0, 600), rows.slice(600)
    ids = second.column("id").to_pylist()
    ids[100] = first.column("id")[5].as_py()  # doc-00000005: a.parquet row 5 and b.csv row 100
    second = second.set_column(0, "id", pa.array(ids, pa.string()))
    ids = first.column("id").to_pylist()
    ids[550] = ids[10]  # doc-00000010: a.parquet rows 10 and 550 (shards 0 and 1)
    first = first.set_column(0, "id", pa.array(ids, pa.string()))
    (tmp_path / "in").mkdir()
    a = write_parquet(tmp_path / "in" / "a.parquet", first, row_group_rows=300)
    b = write_csv(tmp_path / "in" / "b.csv", second)
    result = run(tmp_path / "in", shard_rows=300)
    refused(result, jina, "'doc-00000005'", f"{a} row 5", f"{b} row 100", "'doc-00000010'", f"{a} row 10",
            f"{a} row 550")
    assert not (tmp_path / "out" / "_manifest.json").exists()
    assert not list((tmp_path / "out").glob("part-*.parquet")), "nothing was written"


def test_corrupt_parquet_footer(tmp_path: Path, run, jina) -> None:
    (tmp_path / "in").mkdir()
    write_parquet(tmp_path / "in" / "a.parquet", corpus_rows(100))
    path = tmp_path / "in" / "b.parquet"
    write_parquet(path, corpus_rows(100, start=100))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated: no footer
    refused(run(tmp_path / "in"), jina, "not a valid Parquet file", str(path))


def corrupt_column_pages(path: Path, column: str) -> None:
    """Overwrite the middle of every data page run of ``column``, leaving the footer (and the plan) intact."""
    meta = pq.read_metadata(path)
    index = meta.schema.to_arrow_schema().get_field_index(column)
    data = bytearray(path.read_bytes())
    for group in range(meta.num_row_groups):
        chunk = meta.row_group(group).column(index)
        first = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
        start, end = first + 64, first + chunk.total_compressed_size - 16
        data[start:end] = bytes((7 * i + 13) % 256 for i in range(end - start))
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_corrupt_file_found_mid_run_keeps_finished_shards(tmp_path: Path, run, jina) -> None:
    """A file whose text pages are corrupt plans fine and fails when its shard is read: the job stops with a
    message naming it, the shards finished before keep their done markers and parts, and once the file is
    fixed, the rerun embeds only that file's rows."""
    rows = corpus_rows(1200)
    (tmp_path / "in").mkdir()
    write_parquet(tmp_path / "in" / "a.parquet", rows.slice(0, 900), row_group_rows=300)
    bad = tmp_path / "in" / "b.parquet"
    write_parquet(bad, rows.slice(900), row_group_rows=300)
    corrupt_column_pages(bad, "text")
    options = {"shard_rows": 300, "workers": 1, "workers_extra": {"max_shards_in_flight": 1}}

    failed = run(tmp_path / "in", **options)
    assert failed.returncode == 1, failed.describe()
    assert str(bad) in failed.stderr and "Parquet" in failed.stderr, failed.describe()
    checkpoint = str(tmp_path / "out" / "_checkpoint")
    markers = ledger(checkpoint).done_markers()
    assert {m.file for m in markers} == {str(tmp_path / "in" / "a.parquet")} and len(markers) == 3
    assert ledger(checkpoint).read_report().status == "failed"
    assert not (tmp_path / "out" / "_manifest.json").exists(), "an incomplete output is not committed"
    assert jina.stats()["inputs"] == 900

    write_parquet(bad, rows.slice(900), row_group_rows=300)  # fixed
    jina.reset()
    fixed = run(tmp_path / "in", **options)
    assert fixed.returncode == 0, fixed.describe()
    assert jina.stats()["inputs"] == 300, "only the fixed file's rows are embedded again"
    assert_exact_output(str(tmp_path / "out"), rows, dimensions=64)
    assert len(done_ids(checkpoint)) == 4


@pytest.mark.slow
def test_missing_column_in_a_later_file(tmp_path: Path, run, jina) -> None:
    """A later file without the text column: found when its shard is read; the message names file and column,
    the exit is non-zero, and the first file's finished shards are kept."""
    rows = corpus_rows(900)
    (tmp_path / "in").mkdir()
    write_parquet(tmp_path / "in" / "a.parquet", rows.slice(0, 600), row_group_rows=300)
    later = write_jsonl(tmp_path / "in" / "b.jsonl", rows.slice(600).drop_columns(["text"]))
    result = run(tmp_path / "in", shard_rows=300, workers=1, workers_extra={"max_shards_in_flight": 1})
    assert result.returncode != 0, result.describe()
    assert later in result.stderr and "column 'text' not found" in result.stderr, result.describe()
    assert len(done_ids(str(tmp_path / "out" / "_checkpoint"))) == 2
