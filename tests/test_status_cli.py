"""``embedder status``: progress from a ledger folder, as text and as JSON."""

from __future__ import annotations

import argparse
import json
import re
import time

import pyarrow as pa
import pytest

from embedder.cli import main as cli
from embedder.cli import status
from embedder.errors import LedgerError
from embedder.ledger import DoneMarker, Heartbeat, Ledger, Progress, RunReport, ShardStats

FIELDS = {"model": "jina-embeddings-v3", "task": "retrieval.passage", "dimensions": 1024}


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    ledger = Ledger.open(str(tmp_path / "ckpt"), "fp-1234567890abcdef", FIELDS)
    ledger.write_plan({"rows": 1000, "files": 2}, [f"s{i}" for i in range(10)])
    for i in range(3):
        ledger.mark_done(DoneMarker(ShardStats(f"s{i}", rows=100, embedded=98, tokens=5000)),
                         pa.table({"id": ["a", "b"], "reason": ["too long", "empty"]}))
    ledger.mark_done(DoneMarker(ShardStats("gone", rows=7)))  # a shard of an earlier plan: not counted
    return ledger


def run(ledger: Ledger, capsys, *, as_json: bool = False) -> str:
    code = status.run(argparse.Namespace(ledger=ledger.location, json=as_json, stale_after=30.0, s3_endpoint=""))
    assert code == 0
    return capsys.readouterr().out


def test_running_job_in_text(ledger, capsys):
    ledger.write_heartbeat(Heartbeat(Progress(rows_done=300, tokens=15000, elapsed_s=10, rows_per_s=30.0, eta_s=23.3,
                                              tokens_last_minute=90000, retries=4, rate_limited=1,
                                              shards_in_flight=2)))
    out = run(ledger, capsys)
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert lines["ledger"].endswith("ckpt")
    assert "model=jina-embeddings-v3" in lines["job"] and "fingerprint fp-123456789" in lines["job"]
    assert lines["state"].startswith("state     running (heartbeat 0s ago")
    assert "3 / 10 done  (30.0%)" in lines["shards"]
    assert "300 / 1,000  (30.0%)  in 2 files" in lines["rows"]
    assert "294" in lines["embedded"] and "failed 6  (2.00%)" in lines["embedded"]
    assert "15,000" in lines["tokens"]
    assert "30.0 rows/s" in lines["speed"] and "90.0k tokens/min" in lines["speed"] and "eta 23s" in lines["speed"]
    assert "retries 4" in lines["live"] and "429s 1" in lines["live"] and "in flight 2" in lines["live"]
    assert "1 done markers belong to shards outside" in lines["note"]
    values_start = {line.index(line.split()[1]) for line in out.splitlines()}
    assert len(values_start) == 1  # labels are aligned


def test_json_output_is_one_object(ledger, capsys):
    ledger.write_heartbeat(Heartbeat(Progress(rows_done=300, tokens=15000, elapsed_s=10, rows_per_s=30.0,
                                              tokens_last_minute=90000)))
    data = json.loads(run(ledger, capsys, as_json=True))
    assert data["state"] == "running"
    assert data["fingerprint"] == "fp-1234567890abcdef" and data["fields"] == FIELDS
    assert data["plan"]["shards"] == 10 and "shard_ids" not in data["plan"]
    assert data["done"] == {"shards": 3, "rows": 300, "embedded": 294, "failed": 6, "tokens": 15000,
                            "outside_plan": 1}
    assert data["progress"] == {"shards_pct": 30.0, "rows_pct": 30.0}
    assert data["speed"]["rows_per_s"] == 30.0 and data["speed"]["tokens_per_min"] == 90000
    assert data["heartbeat"]["age_s"] >= 0
    assert data["report"] is None


def test_finished_job_shows_its_report(ledger, capsys):
    ledger.write_heartbeat(Heartbeat(Progress(rows_done=300)))
    time.sleep(0.01)
    ledger.write_report(RunReport(status="completed", elapsed_s=65.0, cost_usd=0.5, error=None,
                                  progress=Progress(rows_done=300, rows_per_s=4.6),
                                  outputs=[{"location": "/out", "rows": 294, "parts": 3}]))
    out = run(ledger, capsys)
    assert "state     completed" in out
    assert "took 1m 05s" in out and "cost $0.5000" in out
    assert "/out  (294 rows, 3 parts)" in out
    assert "4.6 rows/s" in out and "eta" not in out


def test_a_silent_driver_counts_as_stopped(ledger, capsys):
    ledger.write_heartbeat(Heartbeat(Progress(rows_done=300)))
    args = argparse.Namespace(ledger=ledger.location, json=True, stale_after=0.0, s3_endpoint="")
    time.sleep(0.05)
    status.run(args)
    assert json.loads(capsys.readouterr().out)["state"] == "stopped"
    data = status.collect(ledger, stale_after=0.0, now=time.time() + 120)
    assert "stopped: no heartbeat for 2m" in status.format_status(data)


def test_a_new_ledger_without_plan(tmp_path, capsys):
    ledger = Ledger.open(str(tmp_path / "fresh"), "fp", {})
    out = run(ledger, capsys)
    assert "not started" in out and "0 done (no plan written yet)" in out


def test_missing_ledger_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(LedgerError, match=re.escape(f"no checkpoint ledger at {missing}")):
        status.run(argparse.Namespace(ledger=str(missing), json=False, stale_after=30.0, s3_endpoint=""))


def test_cli_exit_code_2_for_a_missing_ledger(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(cli.SUBCOMMANDS, "status", ("embedder.cli.status", "progress of a job from its ledger"))
    assert cli.main(["status", str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err


def test_cli_prints_json(ledger, capsys, monkeypatch):
    monkeypatch.setitem(cli.SUBCOMMANDS, "status", ("embedder.cli.status", "progress of a job from its ledger"))
    assert cli.main(["status", ledger.location, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["done"]["shards"] == 3
