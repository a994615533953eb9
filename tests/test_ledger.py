"""The checkpoint ledger on real files: fingerprint rules, atomic markers, dead letters, plan, report."""

from __future__ import annotations

import json
import os
import re

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from embedder import storage
from embedder.errors import LedgerError, StoragePermanent
from embedder.ledger import DEAD_LETTER_SCHEMA, DoneMarker, Heartbeat, Ledger, Progress, RunReport, ShardStats
from embedder.ledger import checkpoint as ledger_module

FIELDS = {"model": "jina-embeddings-v3", "task": "retrieval.passage", "dimensions": 1024,
          "sink": {"kind": "parquet", "path": "/out"}}


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger.open(str(tmp_path / "ckpt"), "fp-1", FIELDS)


def done(shard_id: str, *, file: str = "", row_start: int = 0, row_count: int = 0, **stats: int) -> DoneMarker:
    return DoneMarker(ShardStats(shard_id, **stats), file=file, row_start=row_start, row_count=row_count)


def report(status: str, **fields: object) -> RunReport:
    return RunReport(status=status, **{"progress": Progress(), **fields})  # type: ignore[arg-type]


def failed(ids: list, reason: str = "too long") -> pa.Table:
    return pa.table({"id": ids, "_row": list(range(len(ids))), "file": ["a.parquet"] * len(ids),
                     "reason": [reason] * len(ids), "error_class": ["InputRejected"] * len(ids)})


def test_open_creates_the_folder_with_its_fingerprint(tmp_path, ledger):
    data = json.loads((tmp_path / "ckpt" / "fingerprint.json").read_text())
    assert data["fingerprint"] == "fp-1"
    assert data["fields"] == FIELDS
    assert data["created_at"] and data["embedder_version"]
    assert (tmp_path / "ckpt" / "done").is_dir()
    assert ledger.location == str(tmp_path / "ckpt")
    assert ledger.done_ids() == set()


def test_relative_path_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Ledger.open("rel/ckpt", "fp", {}).location == str(tmp_path / "rel" / "ckpt")


def test_same_fingerprint_reuses_finished_shards(tmp_path, ledger):
    ledger.mark_done(done("s1", rows=10))
    again = Ledger.open(str(tmp_path / "ckpt"), "fp-1", FIELDS)
    assert again.done_ids() == {"s1"}


def test_other_fingerprint_is_refused_naming_the_fields_that_differ(tmp_path, ledger):
    ledger.mark_done(done("s1", rows=10))
    changed = {**FIELDS, "dimensions": 512, "sink": {"kind": "parquet", "path": "/elsewhere"}}
    with pytest.raises(LedgerError) as caught:
        Ledger.open(str(tmp_path / "ckpt"), "fp-2", changed)
    message = str(caught.value)
    assert "dimensions: 1024 → 512" in message
    assert 'sink.path: "/out" → "/elsewhere"' in message
    assert "model" not in message.split("(old → new):")[1]  # unchanged fields are not listed
    assert "use --restart to start over (finished shards will be embedded again)" in message
    assert str(tmp_path / "ckpt") in message
    assert ledger.done_ids() == {"s1"}  # refusing changes nothing


def test_restart_wipes_markers_dead_letters_and_report(tmp_path, ledger):
    ledger.mark_done(done("s1", rows=2), failed(["a", "b"]))
    ledger.write_report(report("completed"))
    ledger.write_heartbeat(Heartbeat(Progress(rows_done=2)))
    fresh = Ledger.open(str(tmp_path / "ckpt"), "fp-2", {"model": "other"}, restart=True)
    assert fresh.done_ids() == set()
    assert fresh.failed_rows().num_rows == 0
    assert fresh.read_report() is None and fresh.read_heartbeat() is None
    assert not list((tmp_path / "ckpt" / "_failed").iterdir())
    assert fresh.read_fingerprint()["fingerprint"] == "fp-2"


def test_unreadable_fingerprint_names_the_file_and_restart_repairs_it(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "fingerprint.json").write_text("{not json")
    with pytest.raises(LedgerError, match=r"ckpt/fingerprint.json is not valid JSON"):
        Ledger.open(str(folder), "fp", {})
    assert Ledger.open(str(folder), "fp", {}, restart=True).read_fingerprint()["fingerprint"] == "fp"


def test_markers_without_fingerprint_are_refused(tmp_path):
    (tmp_path / "ckpt" / "done").mkdir(parents=True)
    (tmp_path / "ckpt" / "done" / "s1.json").write_text("{}")
    with pytest.raises(LedgerError, match=r"no fingerprint\.json"):
        Ledger.open(str(tmp_path / "ckpt"), "fp", {})


def test_load_requires_an_existing_ledger(tmp_path):
    with pytest.raises(LedgerError, match=re.escape(str(tmp_path / "nothing"))):
        Ledger.load(str(tmp_path / "nothing"))


def test_mark_done_writes_one_marker_per_shard(ledger):
    ledger.mark_done(done("s1", rows=10, embedded=9, tokens=120, file="a.parquet", row_start=0, row_count=10),
                     failed(["x"]))
    ledger.mark_done(done("s2", rows=5, embedded=5, tokens=60))
    assert ledger.done_ids() == {"s1", "s2"}
    first, second = ledger.done_markers()
    assert first.shard_id == "s1" and first.stats.failed == 1 and first.stats.tokens == 120
    assert (first.file, first.row_start, first.row_count) == ("a.parquet", 0, 10) and first.finished_at
    assert second.stats.failed == 0


def test_temporary_files_are_not_markers(tmp_path, ledger):
    folder = tmp_path / "ckpt" / "done"
    (folder / f"{storage.TMP_PREFIX}0123456789ab-s9.json").write_text('{"shard_id": "s9"}')
    (folder / "s8.json.partial").write_text("")
    ledger.mark_done(done("s1"))
    assert ledger.done_ids() == {"s1"}


def test_an_interrupted_marker_write_leaves_no_marker_and_no_temp_file(tmp_path, ledger, monkeypatch):
    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StoragePermanent, match=r"ledger marker failed for .*done/s1\.json: disk gone"):
        ledger.mark_done(done("s1", rows=1))
    monkeypatch.undo()
    assert ledger.done_ids() == set()
    assert list((tmp_path / "ckpt" / "done").iterdir()) == []


def test_rewriting_a_marker_replaces_it_atomically(tmp_path, ledger):
    ledger.mark_done(done("s1", rows=1))
    ledger.mark_done(done("s1", rows=2))
    assert [p.name for p in (tmp_path / "ckpt" / "done").iterdir()] == ["s1.json"]
    assert ledger.done_markers()[0].stats.rows == 2


def test_failed_rows_roundtrip_with_ids_as_text(ledger):
    ledger.mark_done(done("s1"), failed([7, 8]))
    ledger.mark_done(done("s2"), pa.table({"id": ["z"], "reason": ["empty text"]}))  # other columns optional
    rows = ledger.failed_rows()
    assert rows.schema == DEAD_LETTER_SCHEMA
    assert rows.column("id").to_pylist() == ["7", "8", "z"]
    assert rows.column("shard_id").to_pylist() == ["s1", "s1", "s2"]
    assert rows.column("reason").to_pylist() == ["too long", "too long", "empty text"]
    assert rows.column("error_class").to_pylist() == ["InputRejected", "InputRejected", None]
    assert ledger.failed_shard_ids() == {"s1", "s2"}


def test_no_failed_rows_gives_an_empty_table_with_the_schema(ledger):
    assert ledger.failed_rows().schema == DEAD_LETTER_SCHEMA
    assert ledger.failed_rows().num_rows == 0


def test_dead_letters_are_replaced_on_retry(ledger):
    ledger.mark_done(done("s1"), failed(["a", "b", "c"]))
    ledger.forget(["s1"])
    assert ledger.failed_rows().num_rows == 0  # without a marker, dead letters do not count
    ledger.mark_done(done("s1"), failed(["b"], reason="still too long"))
    assert ledger.failed_rows().column("id").to_pylist() == ["b"]
    ledger.mark_done(done("s1"))  # a retry where everything succeeded
    assert ledger.failed_rows().num_rows == 0 and ledger.failed_shard_ids() == set()


def test_retire_failed_and_forget(tmp_path, ledger):
    ledger.mark_done(done("s1"), failed(["a"]))
    ledger.mark_done(done("s2"), failed(["b"]))
    assert ledger.retire_failed(["s1", "never-failed"]) == ["s1"]
    assert ledger.failed_shard_ids() == {"s2"}
    assert (tmp_path / "ckpt" / "_failed" / "history" / "s1.parquet").is_file()  # kept, not counted
    ledger.forget(["s2", "never-done"])
    assert ledger.done_ids() == {"s1"}


def test_invalid_shard_ids_are_refused(ledger):
    for bad in ("../escape", "a/b", ".hidden", "_private", ""):
        with pytest.raises(ValueError, match="invalid shard id"):
            ledger.mark_done(done(bad))


def test_plan_inline_and_in_a_side_file(ledger, monkeypatch):
    ledger.write_plan({"rows": 30, "files": 2}, ["s1", "s2", "s3"])
    plan = ledger.read_plan()
    assert plan["shards"] == 3 and plan["rows"] == 30 and plan["shard_ids"] == ["s1", "s2", "s3"]
    assert plan["started_at"]
    monkeypatch.setattr(ledger_module, "INLINE_SHARD_IDS", 2)
    ids = [f"s{i}" for i in range(50)]
    ledger.write_plan({"rows": 500}, ids)
    assert ledger.read_plan()["shard_ids"] == ids
    summary = ledger.read_plan(include_shard_ids=False)
    assert "shard_ids" not in summary and summary["shards"] == 50


def test_report_and_heartbeat_roundtrip(ledger):
    assert ledger.read_report() is None and ledger.read_plan() is None
    ledger.write_heartbeat(Heartbeat(Progress(rows_done=5, tokens=40)))
    beat = ledger.read_heartbeat()
    assert beat.progress.rows_done == 5 and beat.unix_time > 0 and beat.pid == os.getpid()
    ledger.write_report(report("completed", progress=Progress(rows_done=5)))
    assert ledger.read_report().status == "completed" and ledger.read_report().finished_at
    assert ledger.read_report().progress.rows_done == 5


def test_the_ledger_refuses_to_store_secrets(tmp_path, ledger, monkeypatch):
    with pytest.raises(ValueError, match="api_key"):
        Ledger.open(str(tmp_path / "other"), "fp", {"model": "m", "api_key": "jina_x"})
    with pytest.raises(ValueError, match="token"):
        ledger.write_report(report("completed", outputs=[{"uri": "http://milvus:19530", "token": "root:Milvus"}]))
    monkeypatch.setenv("JINA_API_KEY", "jina_secret_value_123")
    with pytest.raises(ValueError, match=r"\$JINA_API_KEY") as caught:
        ledger.mark_done(done("s1", file="oops jina_secret_value_123"))
    assert "jina_secret_value_123" not in str(caught.value)
    ledger.write_report(report("completed", plan={"api_key_env": "JINA_API_KEY"}))  # the variable's name is fine
    assert ledger.done_ids() == set()


def test_works_on_a_subtree_filesystem(tmp_path):
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    ledger = Ledger.open("job/_checkpoint", "fp", FIELDS, filesystem=fs)
    ledger.mark_done(done("s1", rows=3), failed(["q"]))
    assert (tmp_path / "job" / "_checkpoint" / "done" / "s1.json").is_file()
    again = Ledger.open("job/_checkpoint", "fp", FIELDS, filesystem=fs)
    assert again.done_ids() == {"s1"} and again.failed_rows().num_rows == 1
