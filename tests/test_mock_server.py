"""The local Jina-compatible server, over real loopback HTTP: validation, vectors, limits, faults, stats."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from embedder.mock_jina.limits import WindowLimiter
from embedder.mock_jina.testing import MockJinaServer
from embedder.mock_jina.tokens import count_tokens, truncate_text
from embedder.mock_jina.vectors import decode_base64, embed_texts

V3 = "jina-embeddings-v3"
V2 = "jina-embeddings-v2-base-en"
V4 = "jina-embeddings-v4"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        yield client


def post(http: httpx.Client, server: MockJinaServer, body: Any, key: str | None = "jina_" + "a" * 60,
         **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post(f"{server.url}/embeddings", content=content,
                     headers={**headers, "Content-Type": "application/json"}, **kwargs)


def vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    data = sorted(response.json()["data"], key=lambda d: d["index"])
    rows = [decode_base64(d["embedding"]) if isinstance(d["embedding"], str) else d["embedding"] for d in data]
    return np.asarray(rows, dtype=np.float32)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert {"detail", "code", "request_id"} <= set(body)
    if code is not None:
        assert body["code"] == code
    return body


def assert_422(response: httpx.Response, fields: dict[str, str]) -> dict[str, Any]:
    body = assert_error(response, 422)
    assert re.fullmatch(r"\[RID: \w+\] Validation errors in \d+ fields", body["detail"])
    assert body["detail"].endswith(f"in {len(body['errors'])} fields")
    found = {e["field"]: e["type"] for e in body["errors"]}
    assert found == fields
    assert all({"field", "message", "type", "input"} <= set(e) for e in body["errors"])
    return body


# --- authentication -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "code"), [
    (None, "AUTH_MISSING_API_KEY"),
    ("Bearer sk-abc", "AUTH_INVALID_FORMAT"),
    ("jina_abc", "AUTH_INVALID_FORMAT"),
    ("Bearer jina_abc-def", "AUTH_INVALID_FORMAT"),
])
def test_auth_errors(jina: MockJinaServer, http: httpx.Client, header: str | None, code: str) -> None:
    headers = {"Authorization": header} if header else {}
    response = http.post(f"{jina.url}/embeddings", json={"model": V3, "input": "x"}, headers=headers)
    assert_error(response, 401, code)


def test_revocation_at_runtime(jina: MockJinaServer, http: httpx.Client) -> None:
    assert post(http, jina, {"model": V3, "input": "x"}).status_code == 200
    jina.configure(revoked=True)
    assert_error(post(http, jina, {"model": V3, "input": "x"}), 401, "AUTH_INVALID_API_KEY")
    jina.configure(revoked=False)
    assert post(http, jina, {"model": V3, "input": "x"}).status_code == 200


def test_required_key_and_key_never_leaks(http: httpx.Client, api_key: str) -> None:
    other = "jina_" + "wrongkey" * 7
    with MockJinaServer(api_key=api_key, debug=True) as server:
        seen = [post(http, server, {"model": V3, "input": "x"}, key=api_key)]
        assert seen[0].status_code == 200
        seen.append(post(http, server, {"model": V3, "input": "x"}, key=other))
        assert_error(seen[-1], 401, "AUTH_INVALID_API_KEY")
        seen.append(post(http, server, {"model": V2, "input": "x", "task": "y"}, key=api_key))
        server.inject("500", "reset")
        seen.append(post(http, server, {"model": V3, "input": "x"}, key=api_key))
        with pytest.raises(httpx.TransportError):
            post(http, server, {"model": V3, "input": "x"}, key=api_key)
        exposed = [json.dumps(server.stats()), json.dumps(server.settings()), *(r.text for r in seen),
                   *(str(r.headers) for r in seen)]
        assert server.settings()["api_key_required"] is True
        code = server.stop()
        logs = server.logs()
    assert code == 0
    assert "status=200" in logs  # DEBUG request lines were written...
    for text in [*exposed, logs]:  # ...and neither key appears anywhere
        assert api_key not in text and other not in text
        assert api_key[5:20] not in text


# --- body validation ----------------------------------------------------------------------------------------

def test_invalid_json(jina: MockJinaServer, http: httpx.Client) -> None:
    assert_error(post(http, jina, b'{"model": '), 400)


def test_unknown_model(jina: MockJinaServer, http: httpx.Client) -> None:
    assert_error(post(http, jina, {"model": "jina-embeddings-v9", "input": "x"}), 400, "INPUT_MODEL_NOT_FOUND")


@pytest.mark.parametrize(("model", "limit"), [(V3, 2048), (V4, 512)])
def test_too_many_inputs(jina: MockJinaServer, http: httpx.Client, model: str, limit: int) -> None:
    body = assert_error(post(http, jina, {"model": model, "input": ["x"] * (limit + 1)}), 400)
    assert body["detail"] == f"input length is larger than the largest allowed size {limit}"
    assert post(http, jina, {"model": model, "input": ["x"] * limit}).status_code == 200


def test_too_long_input_and_truncate(jina: MockJinaServer, http: httpx.Client) -> None:
    text = "word " * 8999
    assert count_tokens(text) == 9001
    body = assert_error(post(http, jina, {"model": V3, "input": ["short", text]}), 400)
    assert body["detail"] == "Single text cannot exceed 8192 tokens. 9001 tokens given."
    response = post(http, jina, {"model": V3, "input": ["short", text], "truncate": True})
    assert response.json()["usage"]["total_tokens"] == count_tokens("short") + 8192
    expected = embed_texts(V3, ["short", truncate_text(text, 8192)])
    np.testing.assert_allclose(vectors(response), expected, atol=1e-6)


def test_input_forms(jina: MockJinaServer, http: httpx.Client) -> None:
    single = vectors(post(http, jina, {"model": V3, "input": "a cat"}))
    wrapped = vectors(post(http, jina, {"model": V3, "input": {"text": "a cat"}}))
    listed = vectors(post(http, jina, {"model": V3, "input": ["a cat", {"text": "a cat"}]}))
    np.testing.assert_array_equal(single[0], wrapped[0])
    np.testing.assert_array_equal(listed[0], listed[1])
    assert_422(post(http, jina, {"model": V3, "input": []}), {"body -> input": "too_short"})
    assert_422(post(http, jina, {"model": V3, "input": ["ok", 3]}), {"body -> input -> 1": "union_type"})
    assert_422(post(http, jina, {"input": "x"}), {"body -> model": "missing"})


def test_v2_rejects_v3_fields(jina: MockJinaServer, http: httpx.Client) -> None:
    body = {"model": V2, "input": "x", "task": "retrieval.query", "dimensions": 64, "late_chunking": True}
    err = assert_422(post(http, jina, body), {"body -> task": "extra_forbidden",
                                              "body -> dimensions": "extra_forbidden",
                                              "body -> late_chunking": "extra_forbidden"})
    assert err["detail"].endswith("Validation errors in 3 fields")
    assert {e["message"] for e in err["errors"]} == {"Extra inputs are not permitted"}
    # the old field name is accepted with v2 (and v3), as deployed clients send it
    ok = post(http, jina, {"model": V2, "input": "x", "encoding_type": "float", "normalized": True})
    assert vectors(ok).shape == (1, 768)


def test_task_dimensions_and_extra_fields(jina: MockJinaServer, http: httpx.Client) -> None:
    assert_422(post(http, jina, {"model": V3, "input": "x", "task": "nope"}), {"body -> task": "literal_error"})
    assert_422(post(http, jina, {"model": V3, "input": "x", "dimensions": 0}),
               {"body -> dimensions": "greater_than_equal"})
    assert_422(post(http, jina, {"model": V3, "input": "x", "dimensions": 1025}),
               {"body -> dimensions": "less_than_equal"})
    assert_422(post(http, jina, {"model": V3, "input": "x", "colour": "red"}),
               {"body -> colour": "extra_forbidden"})
    for task in ("retrieval.query", "retrieval.passage", "text-matching", "classification", "separation"):
        assert post(http, jina, {"model": V3, "input": "x", "task": task}).status_code == 200
    assert vectors(post(http, jina, {"model": V4, "input": "x", "dimensions": 2048})).shape == (1, 2048)


def test_embedding_types(jina: MockJinaServer, http: httpx.Client) -> None:
    texts = ["the quick brown fox", "jumps over", ""]
    as_float = vectors(post(http, jina, {"model": V3, "input": texts, "embedding_type": "float"}))
    as_b64 = vectors(post(http, jina, {"model": V3, "input": texts, "embedding_type": "base64"}))
    old_name = vectors(post(http, jina, {"model": V3, "input": texts, "encoding_type": "base64"}))
    np.testing.assert_array_equal(as_float, as_b64)
    np.testing.assert_array_equal(as_b64, old_name)
    both = post(http, jina, {"model": V3, "input": "x", "embedding_type": ["float", "base64"]}).json()
    np.testing.assert_array_equal(np.float32(both["data"][0]["embedding"]["float"]),
                                  decode_base64(both["data"][0]["embedding"]["base64"]))
    body = assert_error(post(http, jina, {"model": V3, "input": "x", "embedding_type": "binary"}), 400)
    assert "not supported by the local server" in body["detail"]
    assert_422(post(http, jina, {"model": V3, "input": "x", "embedding_type": "int8"}),
               {"body -> embedding_type": "literal_error"})


# --- vectors --------------------------------------------------------------------------------------------------

def test_response_shape_and_usage(jina: MockJinaServer, http: httpx.Client) -> None:
    texts = ["Hello, world!", "Embeddings are vectors."]
    response = post(http, jina, {"model": V3, "input": texts})
    body = response.json()
    assert body["model"] == V3 and body["object"] == "list"
    total = sum(count_tokens(t) for t in texts)
    assert body["usage"] == {"total_tokens": total, "prompt_tokens": total}
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert {d["object"] for d in body["data"]} == {"embedding"}
    assert "X-RateLimit-Remaining-Requests" not in response.headers  # no limits set
    assert count_tokens("Hello, world!") == 2 + 4  # Hello , world !


def test_vectors_deterministic_normalised_and_semantic(jina: MockJinaServer, http: httpx.Client) -> None:
    texts = ["The cat sat on the mat", "A cat sat on the mat today", "Stock markets fell sharply", ""]
    first = vectors(post(http, jina, {"model": V3, "input": texts}))
    second = vectors(post(http, jina, {"model": V3, "input": texts, "task": "retrieval.query"}))
    np.testing.assert_array_equal(first, second)  # deterministic, and independent of the task
    np.testing.assert_allclose(first, embed_texts(V3, texts), atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    sims = first @ first.T
    assert sims[0, 1] > 0.6 > 0.2 > abs(sims[0, 2])
    raw = vectors(post(http, jina, {"model": V3, "input": texts[:1], "normalized": False}))
    assert np.linalg.norm(raw) > 1.5
    small = vectors(post(http, jina, {"model": V3, "input": texts, "dimensions": 64}))
    assert small.shape == (4, 64)
    np.testing.assert_allclose(small, embed_texts(V3, texts, dimensions=64), atol=1e-7)


def test_late_chunking_depends_on_neighbours(jina: MockJinaServer, http: httpx.Client) -> None:
    chunks = ["Berlin is the capital", "It has many museums"]
    plain = vectors(post(http, jina, {"model": V3, "input": chunks}))
    late = vectors(post(http, jina, {"model": V3, "input": chunks, "late_chunking": True}))
    other = vectors(post(http, jina, {"model": V3, "input": [chunks[0], "Rain is wet"], "late_chunking": True}))
    assert not np.allclose(plain, late)
    assert not np.allclose(late[0], other[0])
    np.testing.assert_allclose(late, embed_texts(V3, chunks, late_chunking=True), atol=1e-7)


def test_shuffle_keeps_indices(jina: MockJinaServer, http: httpx.Client) -> None:
    jina.configure(shuffle=True)
    texts = [f"text number {i}" for i in range(32)]
    response = post(http, jina, {"model": V3, "input": texts})
    order = [d["index"] for d in response.json()["data"]]
    assert sorted(order) == list(range(32)) and order != list(range(32))
    np.testing.assert_allclose(vectors(response), embed_texts(V3, texts), atol=1e-7)


# --- limits ---------------------------------------------------------------------------------------------------

def test_window_limiter_retry_after() -> None:
    now = [1000.0]
    limiter = WindowLimiter(clock=lambda: now[0])
    for tokens in (10, 20, 30):
        assert limiter.check(tokens, rpm=3, tpm=100, max_concurrency=0) is None
        limiter.acquire(tokens)
        limiter.release()
        now[0] += 10.0  # requests at t = 0, 10, 20 s; now t = 30 s
    rejected = limiter.check(1, rpm=3, tpm=0, max_concurrency=0)
    assert rejected is not None and rejected.code == "RATE_REQUEST_LIMIT_EXCEEDED"
    assert rejected.retry_after == 30  # the request at t = 0 leaves the window at t = 60
    rejected = limiter.check(55, rpm=0, tpm=100, max_concurrency=0)  # needs 15 of the 60 tokens freed
    assert rejected is not None and rejected.code == "RATE_TOKEN_LIMIT_EXCEEDED"
    assert rejected.retry_after == 40  # the t = 0 and t = 10 requests must expire
    assert limiter.check(101, rpm=0, tpm=100, max_concurrency=0).retry_after == 60  # can never fit
    assert limiter.remaining(rpm=5, tpm=100) == (2, 40)
    now[0] += 30.5  # t = 60.5 s: the first request has expired
    assert limiter.check(1, rpm=3, tpm=100, max_concurrency=0) is None
    limiter.acquire(1)
    assert limiter.check(1, rpm=0, tpm=0, max_concurrency=1).code == "RATE_CONCURRENCY_LIMIT_EXCEEDED"


def test_rpm_limit_gives_429_with_retry_after(jina: MockJinaServer, http: httpx.Client) -> None:
    jina.configure(rpm=2)
    ok = [post(http, jina, {"model": V3, "input": "x"}) for _ in range(2)]
    assert [r.headers["X-RateLimit-Remaining-Requests"] for r in ok] == ["1", "0"]
    limited = post(http, jina, {"model": V3, "input": "x"})
    assert_error(limited, 429, "RATE_REQUEST_LIMIT_EXCEEDED")
    assert 55 <= int(limited.headers["Retry-After"]) <= 60
    jina.configure(retry_after=False)
    assert "Retry-After" not in post(http, jina, {"model": V3, "input": "x"}).headers
    stats = jina.stats()
    assert stats["rate_limited"] == 2 and stats["billed_requests"] == 2 and stats["tokens"] == 6


def test_tpm_limit(jina: MockJinaServer, http: httpx.Client) -> None:
    jina.configure(tpm=20)
    ok = post(http, jina, {"model": V3, "input": "one two three four five"})  # 7 tokens
    assert ok.headers["X-RateLimit-Remaining-Tokens"] == "13"
    limited = post(http, jina, {"model": V3, "input": "a b c d e f g h i j k l m n"})  # 16 tokens
    assert_error(limited, 429, "RATE_TOKEN_LIMIT_EXCEEDED")
    assert int(limited.headers["Retry-After"]) >= 1
    assert jina.stats()["tokens"] == 7  # 429s are not billed


def test_concurrency_limit_and_latency(jina: MockJinaServer) -> None:
    jina.configure(max_concurrency=2, latency_ms=400)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            async def one() -> httpx.Response:
                return await client.post(f"{jina.url}/embeddings", json={"model": V3, "input": "x"},
                                         headers={"Authorization": "Bearer jina_" + "c" * 60})
            return list(await asyncio.gather(*(one() for _ in range(4))))

    started = time.monotonic()
    responses = asyncio.run(burst())
    assert time.monotonic() - started >= 0.4
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 429, 429]
    for r in responses:
        if r.status_code == 429:
            assert_error(r, 429, "RATE_CONCURRENCY_LIMIT_EXCEEDED")
            assert r.headers["Retry-After"] == "1"
    assert jina.stats()["max_concurrent_seen"] == 2


def test_balance(jina: MockJinaServer, http: httpx.Client) -> None:
    jina.configure(balance_tokens=5)
    assert post(http, jina, {"model": V3, "input": "one two three four"}).status_code == 200  # 6 tokens
    assert_error(post(http, jina, {"model": V3, "input": "x"}), 403, "AUTHZ_INSUFFICIENT_BALANCE")


# --- faults ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fault", "status", "code"), [
    ("500", 500, "INTERNAL_ERROR"),
    ("429", 429, "RATE_REQUEST_LIMIT_EXCEEDED"),
    ("401", 401, "AUTH_INVALID_API_KEY"),
    ("403", 403, "AUTHZ_INSUFFICIENT_BALANCE"),
])
def test_json_faults(jina: MockJinaServer, http: httpx.Client, fault: str, status: int, code: str) -> None:
    jina.inject(fault)
    response = post(http, jina, {"model": V3, "input": "x"})
    assert_error(response, status, code)
    if status == 429:
        assert response.headers["Retry-After"] == "1"
    assert post(http, jina, {"model": V3, "input": "x"}).status_code == 200  # one request only


def test_body_faults(jina: MockJinaServer, http: httpx.Client) -> None:
    jina.inject("503_html", "400_too_long", "malformed_json", "missing_embedding", "reset")
    html = post(http, jina, {"model": V3, "input": "x"})
    assert html.status_code == 503 and html.headers["Content-Type"].startswith("text/html")
    body = assert_error(post(http, jina, {"model": V3, "input": "x"}), 400)
    assert re.fullmatch(r"Single text cannot exceed 8192 tokens\. \d+ tokens given\.", body["detail"])
    malformed = post(http, jina, {"model": V3, "input": ["x", "y"]})
    assert malformed.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.text)
    missing = post(http, jina, {"model": V3, "input": ["x", "y", "z"]})
    assert missing.status_code == 200 and len(missing.json()["data"]) == 2
    with pytest.raises(httpx.RemoteProtocolError):
        post(http, jina, {"model": V3, "input": ["x", "y"]})
    stats = jina.stats()
    assert stats["faults"] == 5 and stats["tokens"] == 0 and stats["billed_requests"] == 0
    assert stats["by_status"] == {"503": 1, "400": 1, "200": 2, "reset": 1}
    assert stats["faults_by_kind"] == dict.fromkeys(
        ["503_html", "400_too_long", "malformed_json", "missing_embedding", "reset"], 1)


def test_stall_outlasts_client_timeout(jina: MockJinaServer, http: httpx.Client) -> None:
    jina.configure(stall_seconds=1.0)
    jina.inject("stall")
    with pytest.raises(httpx.ReadTimeout):
        post(http, jina, {"model": V3, "input": "x"}, timeout=0.3)
    jina.inject("stall")
    started = time.monotonic()
    assert post(http, jina, {"model": V3, "input": "x"}).status_code == 200  # answers normally, late
    assert time.monotonic() - started >= 1.0
    assert jina.stats()["faults_by_kind"] == {"stall": 2}


def test_fail_rate_is_seeded(jina: MockJinaServer, http: httpx.Client) -> None:
    jina.configure(fail_rate=0.5, faults=["500", "503"])

    def run() -> list[int]:
        jina.reset()
        return [post(http, jina, {"model": V3, "input": "x"}).status_code for _ in range(20)]

    first = run()
    assert first == run()
    assert {200, 500, 503} == set(first)
    stats = jina.stats()
    assert stats["faults"] == first.count(500) + first.count(503)
    assert stats["errors"] == 0  # faults are counted apart from real errors


# --- stats, admin, CLI ----------------------------------------------------------------------------------------

def test_stats_counts(jina: MockJinaServer, http: httpx.Client) -> None:
    post(http, jina, {"model": V3, "input": ["a b", "c"]})  # 4 + 3 tokens
    post(http, jina, {"model": V3, "input": "x"}, key=None)
    post(http, jina, {"model": V2, "input": "x", "task": "t"})
    jina.configure(rpm=1)
    post(http, jina, {"model": V3, "input": "x"})
    stats = jina.stats()
    assert stats["requests"] == 4 and stats["billed_requests"] == 1
    assert stats["tokens"] == 7 and stats["inputs"] == 2
    assert stats["errors"] == 2 and stats["rate_limited"] == 1
    assert stats["by_status"] == {"200": 1, "401": 1, "422": 1, "429": 1}
    assert stats["rate_limited_by_code"] == {"RATE_REQUEST_LIMIT_EXCEEDED": 1}
    jina.reset()
    assert jina.stats()["requests"] == 0
    assert post(http, jina, {"model": V3, "input": "x"}).status_code == 200  # the window was reset too


def test_admin_endpoints(jina: MockJinaServer, http: httpx.Client) -> None:
    assert http.get(f"{jina.root_url}/health").status_code == 200
    assert http.post(f"{jina.root_url}/admin/config", json={"rpm": -1}).status_code == 400
    assert http.post(f"{jina.root_url}/admin/config", json={"api_key": "jina_x"}).status_code == 400
    assert http.post(f"{jina.root_url}/admin/inject", json={"faults": ["boom"]}).status_code == 400
    effective = jina.configure(rpm=10, latency_ms=0, faults="500,stall")
    assert effective["rpm"] == 10 and effective["faults"] == ["500", "stall"]
    assert "api_key" not in effective


def test_only_the_api_route_is_served(jina: MockJinaServer, http: httpx.Client) -> None:
    """Like api.jina.ai (FastAPI): only POST /v1/embeddings; a base URL without /v1 or with /v2 gets a JSON 404, a
    GET a JSON 405. Those requests are counted apart from the embedding requests."""
    headers = {"Authorization": "Bearer jina_abc"}
    for path in ("/embeddings", "/v2/embeddings", "/v1/embeddings/", "/v1"):
        response = http.post(f"{jina.root_url}{path}", json={"model": V3, "input": "x"}, headers=headers)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "Not Found"}
        assert response.headers["content-type"].startswith("application/json")
    response = http.get(f"{jina.url}/embeddings", headers=headers)
    assert response.status_code == 405 and response.json() == {"detail": "Method Not Allowed"}
    assert "POST" in response.headers["Allow"]
    stats = jina.stats()
    assert stats["requests"] == 0 and stats["unrouted"] == 5
    assert stats["unrouted_by_route"]["404 POST /v2/embeddings"] == 1
    assert stats["unrouted_by_route"]["405 GET /v1/embeddings"] == 1
    assert post(http, jina, {"model": V3, "input": "x"}).status_code == 200


def test_reject_inputs_answers_400_about_the_input(jina: MockJinaServer, http: httpx.Client) -> None:
    jina.configure(reject_inputs="^https?://")
    bad = post(http, jina, {"model": V3, "input": ["fine", "http://example.com/a"]})
    body = assert_error(bad, 400, "INPUT_VALIDATION_ERROR")
    assert "input" in body["detail"].lower()
    assert post(http, jina, {"model": V3, "input": ["fine", "also fine"]}).status_code == 200
    post(http, jina, {"model": V3, "input": ["http://example.com/a"]})
    assert jina.stats()["rejected_inputs"] == 1, "each rejected text counts once"
    jina.configure(reject_inputs="^")
    assert post(http, jina, {"model": V3, "input": ["fine"]}).status_code == 400
    with pytest.raises(ValueError, match="not a regular expression"):
        jina.configure(reject_inputs="(")
    assert jina.configure(reject_inputs=None)["reject_inputs"] is None


def test_banner_and_clean_stop() -> None:
    server = MockJinaServer(rpm=5, shuffle=True, retry_after=False, faults=["500"])
    with server:
        assert re.fullmatch(r"mock-jina listening on http://127\.0\.0\.1:\d+/v1 "
                            r"\(local stand-in for Jina AI, not the real API\)", server.banner)
        assert server.url == f"http://127.0.0.1:{server.port}/v1"
        settings = server.settings()
        assert settings["rpm"] == 5 and settings["shuffle"] and not settings["retry_after"]
        assert settings["port"] == server.port
        assert server.stop() == 0
