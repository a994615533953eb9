"""The client against canned responses (httpx.MockTransport): error mapping, decoding, key hygiene."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import httpx
import numpy as np
import pytest

from embedder.errors import (
    FatalError,
    InputRejected,
    RateLimited,
    ResponseMismatch,
    TransientError,
    ValidationError,
)
from embedder.jina.client import EmbedOptions, JinaClient, RetryPolicy

KEY = "jina_" + "unitTESTsecret" * 4


def _ok_body(vectors: np.ndarray, *, b64: bool = True, order=None) -> dict:
    order = order if order is not None else range(len(vectors))
    data = []
    for i in order:
        emb = base64.b64encode(vectors[i].astype("<f4").tobytes()).decode() if b64 else vectors[i].tolist()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {"model": "jina-embeddings-v3", "object": "list", "usage": {"total_tokens": 7}, "data": data}


def _client(handler, **kwargs) -> JinaClient:
    return JinaClient(KEY, api_base="http://jina.test/v1", transport=httpx.MockTransport(handler),
                      retry=RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.002), **kwargs)


def _run(coro):
    return asyncio.run(coro)


async def _embed(client: JinaClient, inputs, options=None):
    async with client:
        return await client.embed(inputs, options or EmbedOptions(dimensions=4))


def test_decodes_base64_and_restores_order_from_index():
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    body = _ok_body(vectors, order=[2, 0, 1])
    response = _run(_embed(_client(lambda request: httpx.Response(200, json=body)), ["a", "b", "c"]))
    np.testing.assert_array_equal(response.vectors, vectors)
    assert response.vectors.dtype == np.float32
    assert response.total_tokens == 7


def test_v2_models_get_no_v3_fields():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        return httpx.Response(200, json=_ok_body(np.ones((1, 4), np.float32)))

    options = EmbedOptions(model="jina-embeddings-v2-base-en", task="retrieval.query", dimensions=4,
                           late_chunking=True)
    _run(_embed(_client(handler), ["a"], options))
    assert set(seen) == {"model", "input", "embedding_type", "normalized"}


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"detail": "Single text cannot exceed 8192 tokens. 9000 tokens given."}, InputRejected),
        (400, {"detail": "Model not found", "code": "INPUT_MODEL_NOT_FOUND"}, FatalError),
        (401, {"detail": "Invalid API key", "code": "AUTH_INVALID_API_KEY"}, FatalError),
        (402, {"detail": "Out of quota"}, FatalError),
        (403, {"detail": "Insufficient balance", "code": "AUTHZ_INSUFFICIENT_BALANCE"}, FatalError),
        (422, {"detail": "[RID: x] Validation errors in 1 fields",
               "errors": [{"field": "body -> task", "message": "Extra inputs are not permitted"}]}, ValidationError),
    ],
)
def test_permanent_errors_are_typed_and_not_retried(status, body, error):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(status, json=body)

    with pytest.raises(error) as info:
        _run(_embed(_client(handler), ["a"]))
    assert len(calls) == 1
    assert info.value.status == status
    assert body["detail"] in str(info.value)


def test_transient_errors_exhaust_retries_with_html_bodies():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(503, html="<html><body>Service Unavailable</body></html>")

    with pytest.raises(TransientError, match="HTML page"):
        _run(_embed(_client(handler), ["a"]))
    assert len(calls) == 3


def test_rate_limited_carries_kind_and_retry_after():
    responses = iter([
        httpx.Response(429, headers={"Retry-After": "0"},
                       json={"detail": "too many tokens", "code": "RATE_TOKEN_LIMIT_EXCEEDED"}),
        httpx.Response(200, json=_ok_body(np.ones((1, 4), np.float32))),
    ])
    response = _run(_embed(_client(lambda request: next(responses)), ["a"]))
    assert response.attempts == 2 and response.rate_limited == 1

    def always_429(request):
        return httpx.Response(429, headers={"Retry-After": "0"},
                              json={"detail": "x", "code": "RATE_TOKEN_LIMIT_EXCEEDED"})

    with pytest.raises(RateLimited) as info:
        _run(_embed(_client(always_429), ["a"]))
    assert info.value.kind == "token" and info.value.retry_after == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [',  # truncated JSON
        json.dumps(_ok_body(np.ones((1, 4), np.float32))).encode(),  # one embedding for two inputs
        json.dumps(_ok_body(np.ones((2, 3), np.float32))).encode(),  # wrong dimension
    ],
)
def test_inconsistent_responses_are_errors(body):
    with pytest.raises(ResponseMismatch):
        _run(_embed(_client(lambda request: httpx.Response(200, content=body)), ["a", "b"]))


def test_connection_errors_are_transient():
    def handler(request):
        raise httpx.ConnectError("connection refused")

    with pytest.raises(TransientError, match="connection error"):
        _run(_embed(_client(handler), ["a"]))


def test_key_never_appears_in_errors_reprs_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    seen_auth = []

    def handler(request):
        seen_auth.append(request.headers["authorization"])
        return httpx.Response(401, json={"detail": "Invalid API key", "code": "AUTH_INVALID_API_KEY"})

    client = _client(handler)
    with pytest.raises(FatalError) as info:
        _run(_embed(client, ["a"]))
    assert seen_auth == [f"Bearer {KEY}"]
    texts = [str(info.value), repr(info.value), repr(client), caplog.text, repr(info.value.__dict__)]
    assert all(KEY not in text for text in texts)


def test_missing_key_is_a_clear_fatal_error():
    with pytest.raises(FatalError, match="JINA_API_KEY"):
        JinaClient(None, environ={})
    assert JinaClient(None, environ={"JINAAI_API_KEY": KEY, "JINA_API_BASE": "http://x/v1"}).url == "http://x/v1/embeddings"
