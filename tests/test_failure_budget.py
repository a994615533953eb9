"""The dead-letter budget without a cluster: its arithmetic and message, its configuration keys (validated, not in
the fingerprint), and the embedder telling it every outcome as it comes."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest

from embedder.config import parse_job
from embedder.errors import ConfigError
from embedder.jina.client import EmbedOptions, JinaClient, RetryPolicy
from embedder.jina.embedding import Embedder, RowFailure
from embedder.run.budget import FailureBudget

MINIMAL = {"source": {"path": "data/corpus"}, "sink": {"kind": "parquet", "path": "out"}}


def test_the_budget_waits_for_its_sample_then_stops_on_the_fraction() -> None:
    budget = FailureBudget(0.1, 200)
    budget.record(0, [("Input text rejected", "data/a.parquet", row) for row in range(150)])
    assert budget.verdict() is None, "150 rows handled: below the sample"
    budget.record(40, [("too long", "data/b.parquet", 7)])
    assert budget.verdict() is None and budget.handled == 191
    budget.record(9)
    message = budget.verdict()
    assert message is not None
    assert "151 of the 200 rows handled" in message and "limits.max_failed_fraction = 0.1" in message
    assert "Commonest reason (150 rows): 'Input text rejected'" in message
    assert "data/a.parquet:0, data/a.parquet:1, data/a.parquet:2." in message
    assert "--retry-failed" in message


def test_a_healthy_job_never_trips_it() -> None:
    budget = FailureBudget(0.1, 200)
    for _ in range(100):
        budget.record(95, [("empty", "f", row) for row in range(5)])
    assert budget.verdict() is None and budget.failed == 500
    never = FailureBudget(1.0, 0)
    never.record(0, [("x", "f", 1)] * 10)
    assert never.verdict() is None, "1 disables the budget"


def test_config_keys_are_validated_and_not_in_the_fingerprint() -> None:
    default = parse_job(MINIMAL, source_name="jobs/x.toml", environ={})
    assert default.limits.max_failed_fraction == 0.1 and default.limits.failed_fraction_min_rows == 200
    changed = parse_job({**MINIMAL, "limits": {"max_failed_fraction": 0.5, "failed_fraction_min_rows": 10}},
                        source_name="jobs/x.toml", environ={})
    assert changed.fingerprint() == default.fingerprint(), "a resumed job may change its budget"
    for key, value in (("max_failed_fraction", 1.5), ("max_failed_fraction", -0.1), ("failed_fraction_min_rows", -1),
                       ("failed_fraction_min_rows", "200")):
        with pytest.raises(ConfigError, match=f"'limits.{key}' in jobs/x.toml"):
            parse_job({**MINIMAL, "limits": {key: value}}, source_name="jobs/x.toml", environ={})


def _answer(request: httpx.Request) -> httpx.Response:
    inputs = json.loads(request.content)["input"]
    if any(text.startswith("http") for text in inputs):
        return httpx.Response(400, json={"detail": "Input text rejected: it is a URL"})
    data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(np.ones(4, "<f4").tobytes()).decode()}
            for i in range(len(inputs))]
    return httpx.Response(200, json={"data": data, "usage": {"total_tokens": len(inputs)}})


def test_the_embedder_tells_every_outcome_as_it_comes() -> None:
    texts = [f"http://x/{i}" if i % 10 == 3 else f"text {i}" for i in range(40)] + ["   "]
    heard: list[tuple[int, list[RowFailure]]] = []

    async def go():
        client = JinaClient("jina_" + "b" * 60, api_base="http://jina.test/v1", transport=httpx.MockTransport(_answer),
                            retry=RetryPolicy(max_attempts=1))
        async with client:
            embedder = Embedder(client, EmbedOptions(dimensions=4), max_inputs=8, concurrency=3)
            return await embedder.embed(texts, observe=lambda ok, failures: heard.append((ok, list(failures))))

    result = asyncio.run(go())
    assert sum(ok for ok, _ in heard) == int(result.ok.sum()) == 36
    failed = sorted(f.index for _, failures in heard for f in failures)
    assert failed == sorted(f.index for f in result.failures) == [3, 13, 23, 33, 40]
    assert heard[0] == (0, [RowFailure(40, "text is empty or whitespace only", "EmptyText")]), "refused first"
