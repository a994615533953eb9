"""Answers that are not the embeddings API (a base URL without /v1, a proxy, another service) are one typed, fatal
error naming the URL, the status and what to check — never split, retried or dead-lettered — and the first
request of a job is a canary: with the job's limiter as the request gate, nothing else goes out before it is
answered, and nothing at all after an answer that stops the job."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest

from embedder.errors import EndpointError, InputRejected, ResponseMismatch, TransientError, ValidationError
from embedder.jina.client import EmbedOptions, JinaClient, RetryPolicy, error_from_response, verdict_of
from embedder.jina.embedding import Embedder
from embedder.run.limiter import Limits, RateLimiter, RateWindow

KEY = "jina_" + "endpointTEST" * 5
OPTIONS = EmbedOptions(dimensions=4)


def _ok(count: int) -> httpx.Response:
    data = [{"object": "embedding", "index": i,
             "embedding": base64.b64encode(np.full(4, i, "<f4").tobytes()).decode()} for i in range(count)]
    return httpx.Response(200, json={"model": "jina-embeddings-v3", "object": "list",
                                     "usage": {"total_tokens": count}, "data": data})


def _client(handler, base: str = "http://jina.test", **kwargs) -> JinaClient:
    return JinaClient(KEY, api_base=base, transport=httpx.MockTransport(handler),
                      retry=RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.002), **kwargs)


def _embed(client: JinaClient, inputs: list[str]):
    async def go():
        async with client:
            return await client.embed(inputs, OPTIONS)
    return asyncio.run(go())


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404, json={"detail": "Not Found"}),
        httpx.Response(405, json={"detail": "Method Not Allowed"}),
        httpx.Response(404, html="<html><body><h1>404 Not Found</h1>nginx</body></html>"),
        httpx.Response(400, json={"detail": "The request body is not valid JSON", "code": "INPUT_INVALID_JSON"}),
        httpx.Response(400, json={"detail": "embedding_type 'binary' is not supported"}),
        httpx.Response(400, text="Bad Request"),
        httpx.Response(200, html="<html><body>Welcome to nginx!</body></html>"),
        httpx.Response(200, json={"status": "ok"}),
        httpx.Response(200, json=[1, 2, 3]),
        httpx.Response(204),
    ],
    ids=["404-json", "405", "404-html", "400-json-body", "400-field", "400-text", "200-html", "200-other-json",
         "200-list", "204"],
)
def test_not_the_api_is_one_fatal_request(response: httpx.Response) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return response

    with pytest.raises(EndpointError) as info:
        _embed(_client(handler), ["a", "b"])
    assert calls == ["http://jina.test/embeddings"], "never retried"
    message = str(info.value)
    assert "http://jina.test/embeddings" in message and str(response.status_code) in message
    assert "`api_base` end in `/v1`" in message
    assert KEY not in message and verdict_of(info.value) == "stop"


def test_the_hint_fits_a_url_that_has_v1() -> None:
    error = error_from_response(404, {}, b'{"detail": "Not Found"}', url="https://proxy.example/v1/embeddings")
    assert isinstance(error, EndpointError) and "proxy in front of it" in str(error)


def test_user_info_and_query_stay_out_of_the_message() -> None:
    error = error_from_response(404, {}, b'{"detail": "Not Found"}',
                                url="https://user:hunter22@proxy.example/x/embeddings?sig=abcdef")
    assert "hunter22" not in str(error) and "abcdef" not in str(error)
    assert "https://proxy.example/x/embeddings" in str(error)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, {"detail": "Single text cannot exceed 8192 tokens. 9000 tokens given."}, InputRejected),
        (400, {"detail": "input length is larger than the largest allowed size 2048"}, InputRejected),
        (413, {"detail": "Request Entity Too Large"}, InputRejected),
        (422, {"detail": "[RID: x] Validation errors in 1 fields", "errors": [{"field": "body -> task"}]},
         ValidationError),
        (503, {"detail": "Service unavailable"}, TransientError),
    ],
)
def test_answers_of_the_api_keep_their_class(status: int, body: dict, kind: type) -> None:
    error = error_from_response(status, {}, json.dumps(body).encode(), url="http://jina.test/v1/embeddings")
    assert type(error) is kind


def test_a_truncated_200_stays_transient() -> None:
    with pytest.raises(ResponseMismatch):
        _embed(_client(lambda request: httpx.Response(200, content=b'{"model": "jina-embeddings-v3", "da')), ["a"])


def test_the_embedder_never_splits_a_wrong_endpoint() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(len(json.loads(request.content)["input"]))
        return httpx.Response(404, json={"detail": "Not Found"})

    async def go():
        async with _client(handler, gate=RateLimiter(Limits(), canary=True)) as client:
            embedder = Embedder(client, OPTIONS, max_inputs=10, concurrency=8)
            return await embedder.embed([f"text {i}" for i in range(200)])

    with pytest.raises(EndpointError):
        asyncio.run(go())
    assert calls == [10], "one request (the canary): no split, no retry, no other batch"


def test_the_canary_lets_the_rest_go_once_the_api_answered() -> None:
    in_flight, seen = [0], []

    async def handler(request: httpx.Request) -> httpx.Response:
        in_flight[0] += 1
        seen.append(in_flight[0])
        await asyncio.sleep(0.01)
        in_flight[0] -= 1
        return _ok(len(json.loads(request.content)["input"]))

    async def go():
        client = JinaClient(KEY, api_base="http://jina.test/v1", transport=httpx.MockTransport(handler),
                            gate=RateLimiter(Limits(), canary=True))
        async with client:
            return await Embedder(client, OPTIONS, max_inputs=10, concurrency=8).embed([f"t{i}" for i in range(200)])

    result = asyncio.run(go())
    assert result.ok.all() and result.requests == 20
    assert seen[0] == 1 and max(seen) > 1, "alone first, then in parallel"


def test_canary_window() -> None:
    window = RateWindow(Limits(), canary=True)
    first, _ = window.try_acquire(1)
    assert first is not None and window.try_acquire(1)[0] is None, "one request until the API answered"
    window.release(first, None)  # a 5xx or a timeout says nothing about the endpoint
    second, _ = window.try_acquire(1)
    assert second is not None and window.try_acquire(1)[0] is None
    window.release(second, None, verdict="answered")  # an input refused: it is the API
    permits = [window.try_acquire(1)[0] for _ in range(3)]
    assert None not in permits
    window.release(permits[0], None, verdict="stop")
    assert window.try_acquire(1)[0] is None and window.snapshot()["stopped"], "nothing after a fatal answer"
    plain = RateWindow(Limits())
    assert None not in [plain.try_acquire(1)[0] for _ in range(3)], "only the job's limiter is a canary"
