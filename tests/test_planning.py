"""Planning without API calls: estimates, and the global duplicate-id check."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedder.cli.sample_corpus import write_parquet_corpus
from embedder.config import default_job
from embedder.errors import InputError
from embedder.source.checks import check_input
from embedder.source.planning import build_plan, format_plan


def test_plan_counts_rows_and_estimates_tokens_cost_and_time(tmp_path):
    write_parquet_corpus(str(tmp_path / "corpus"), 12_000, files=3, row_group_rows=1000)
    config = default_job(overrides=[f"source.path={tmp_path / 'corpus'}", f"sink.path={tmp_path / 'out'}",
                                    "source.shard_rows=2000", "limits.tpm=1000000", "limits.rpm=500",
                                    "limits.price_per_million_tokens=0.05"])
    plan = build_plan(config)
    summary = plan.summary()
    assert summary["rows"] == 12_000 and summary["files"] == 3 and summary["shards"] == 6
    mean_tokens = summary["estimated_tokens"] / 12_000
    assert 100 < mean_tokens < 250  # ~120 words a document
    assert summary["estimated_cost_usd"] == pytest.approx(summary["estimated_tokens"] / 1e6 * 0.05, rel=1e-3)
    assert summary["estimated_minutes"] == pytest.approx(summary["estimated_tokens"] / 1_000_000, rel=1e-2)
    text = format_plan(plan, config)
    assert "12,000" in text and "tpm binds" in text


def test_duplicate_ids_across_files_are_refused_with_their_places(tmp_path):
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"]}), tmp_path / "one.parquet")
    pq.write_table(pa.table({"id": ["d", "b"], "text": ["x", "y"]}), tmp_path / "two.parquet")
    config = default_job(overrides=[f"source.path={tmp_path}", f"sink.path={tmp_path / 'out'}"])
    plan = build_plan(config)
    with pytest.raises(InputError) as info:
        check_input(plan.shards, config.source, None)
    message = str(info.value)
    assert "id 'b'" in message and "one.parquet row 1" in message and "two.parquet row 1" in message


def test_unique_ids_pass(tmp_path):
    write_parquet_corpus(str(tmp_path / "corpus"), 3000, files=2)
    config = default_job(overrides=[f"source.path={tmp_path / 'corpus'}", f"sink.path={tmp_path / 'out'}",
                                    "source.shard_rows=500"])
    plan = build_plan(config)
    check_input(plan.shards, config.source, None)
