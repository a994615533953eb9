"""The client and JinaEmbeddingFunction against the real local server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import numpy as np
import pytest

from embedder.errors import FatalError, InputRejected, ResponseMismatch, ValidationError
from embedder.jina.client import EmbedOptions, JinaClient, RetryPolicy
from embedder.jina.embedding import Embedder
from embedder.jina.function import JinaEmbeddingFunction
from embedder.jina.windows import (
    DEFAULT_CHARS_PER_TOKEN,
    LATE_CHUNKING_MARGIN,
    WINDOW_OVERLAP_CHUNKS,
    plan_document,
)
from embedder.mock_jina.vectors import embed_texts


class RecordingTransport(httpx.AsyncHTTPTransport):
    """The real network transport, keeping each request body it sent (to see what reached the wire)."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return await super().handle_async_request(request)


def client_for(jina, api_key, **kwargs) -> JinaClient:
    kwargs.setdefault("retry", RetryPolicy(max_attempts=4, base_delay_s=0.05, max_delay_s=0.2))
    return JinaClient(api_key, api_base=jina.url, **kwargs)


def embed(client: JinaClient, inputs, options: EmbedOptions):
    async def go():
        async with client:
            return await client.embed(inputs, options)

    return asyncio.run(go())


def test_every_request_field_reaches_the_wire(jina, api_key):
    transport = RecordingTransport()
    options = EmbedOptions(model="jina-embeddings-v3", task="retrieval.query", dimensions=256, normalized=False,
                           truncate=True, late_chunking=True, embedding_type="float")
    response = embed(client_for(jina, api_key, transport=transport), ["a b", "c d e"], options)
    assert transport.bodies == [{"model": "jina-embeddings-v3", "input": ["a b", "c d e"], "task": "retrieval.query",
                                 "dimensions": 256, "normalized": False, "truncate": True, "late_chunking": True,
                                 "embedding_type": "float"}]
    assert response.vectors.shape == (2, 256)
    expected = embed_texts("jina-embeddings-v3", ["a b", "c d e"], 256, normalized=False, late_chunking=True)
    np.testing.assert_allclose(response.vectors, expected, rtol=1e-6)
    assert abs(np.linalg.norm(response.vectors[0]) - 1.0) > 1e-3  # normalized=false reached the server


def test_v2_model_requests_carry_no_v3_fields_and_succeed(jina, api_key):
    transport = RecordingTransport()
    options = EmbedOptions(model="jina-embeddings-v2-base-en", task="retrieval.passage", dimensions=64,
                           late_chunking=True)
    response = embed(client_for(jina, api_key, transport=transport), ["hello"], options)
    assert set(transport.bodies[0]) == {"model", "input", "embedding_type", "normalized"}
    assert response.vectors.shape == (1, 768)


def test_base64_and_float_decode_to_the_same_vectors(jina, api_key):
    texts = [f"document number {i} about rivers and mountains" for i in range(50)]
    b64 = embed(client_for(jina, api_key), texts, EmbedOptions(dimensions=1024, embedding_type="base64"))
    floats = embed(client_for(jina, api_key), texts, EmbedOptions(dimensions=1024, embedding_type="float"))
    np.testing.assert_array_equal(b64.vectors, floats.vectors)
    np.testing.assert_allclose(b64.vectors, embed_texts("jina-embeddings-v3", texts, 1024), rtol=1e-6)
    assert b64.total_tokens > 0


def test_order_is_restored_from_index_when_the_server_shuffles(api_key):
    from embedder.mock_jina.testing import MockJinaServer

    texts = [f"text {i} " * (i + 1) for i in range(40)]
    with MockJinaServer(shuffle=True, seed=3) as server:
        response = embed(client_for(server, api_key), texts, EmbedOptions(dimensions=64))
    np.testing.assert_allclose(response.vectors, embed_texts("jina-embeddings-v3", texts, 64), rtol=1e-6)


def test_429_with_retry_after_is_waited_out_then_succeeds(jina, api_key):
    jina.inject("429")  # answered with Retry-After: 1
    started = time.monotonic()
    response = embed(client_for(jina, api_key), ["wait for me"], EmbedOptions(dimensions=32))
    waited = time.monotonic() - started
    assert response.rate_limited == 1 and response.attempts == 2
    assert waited >= 1.0, f"the client retried after {waited:.2f}s, before Retry-After (1 s)"
    assert jina.stats()["by_status"]["429"] == 1


@pytest.mark.parametrize("fault", ["500", "503_html", "malformed_json", "missing_embedding", "reset"])
def test_transient_faults_are_retried_then_succeed(jina, api_key, fault):
    jina.inject(fault, fault)
    response = embed(client_for(jina, api_key), ["a", "b", "c"], EmbedOptions(dimensions=16))
    assert response.attempts == 3
    np.testing.assert_allclose(response.vectors, embed_texts("jina-embeddings-v3", ["a", "b", "c"], 16), rtol=1e-6)


def test_a_stalled_response_times_out_and_is_retried(jina, api_key):
    jina.configure(stall_seconds=5)
    jina.inject("stall")
    started = time.monotonic()
    response = embed(client_for(jina, api_key, timeout=0.5), ["slow"], EmbedOptions(dimensions=16))
    assert response.attempts == 2 and response.errors == ["TransientError"]
    assert time.monotonic() - started < 4


def test_a_missing_embedding_is_detected_not_accepted(jina, api_key):
    jina.inject("missing_embedding")
    client = client_for(jina, api_key)

    async def once():
        async with client:
            return await client.request_once(["a", "b"], EmbedOptions(dimensions=8))

    with pytest.raises(ResponseMismatch, match="1 embeddings for 2 inputs"):
        asyncio.run(once())


@pytest.mark.parametrize(
    ("options", "inputs", "error", "detail"),
    [
        (EmbedOptions(model="jina-embeddings-v9"), ["a"], FatalError, "INPUT_MODEL_NOT_FOUND"),
        (EmbedOptions(), ["word " * 9000], InputRejected, "Single text cannot exceed 8192 tokens"),
        (EmbedOptions(dimensions=4096), ["a"], ValidationError, "dimensions"),
    ],
)
def test_permanent_errors_are_not_retried_and_carry_the_detail(jina, api_key, options, inputs, error, detail):
    with pytest.raises(error, match=detail):
        embed(client_for(jina, api_key), inputs, options)
    assert jina.stats()["requests"] == 1


@pytest.mark.parametrize(("key", "status", "code"), [
    ("not-a-jina-key", 401, "AUTH_INVALID_FORMAT"),
])
def test_auth_errors_are_fatal_and_name_no_key(jina, key, status, code):
    with pytest.raises(FatalError) as info:
        embed(client_for(jina, key), ["a"], EmbedOptions())
    assert info.value.status == status and info.value.code == code
    assert key not in str(info.value)


def test_revoked_key_and_exhausted_balance_are_fatal(jina, api_key, caplog):
    caplog.set_level(logging.DEBUG)
    jina.configure(revoked=True)
    with pytest.raises(FatalError) as revoked:
        embed(client_for(jina, api_key), ["a"], EmbedOptions())
    assert revoked.value.status == 401
    jina.configure(revoked=False, balance_tokens=1)
    embed(client_for(jina, api_key), ["spend the balance"], EmbedOptions())
    with pytest.raises(FatalError) as broke:
        embed(client_for(jina, api_key), ["a"], EmbedOptions())
    assert broke.value.status == 403 and broke.value.code == "AUTHZ_INSUFFICIENT_BALANCE"
    assert api_key not in caplog.text + str(revoked.value) + str(broke.value)


def test_5000_texts_go_out_as_requests_of_at_most_2048_inputs(jina, api_key):
    transport = RecordingTransport()
    texts = [f"short text {i}" for i in range(5000)]

    async def go():
        async with client_for(jina, api_key, transport=transport) as client:
            return await Embedder(client, EmbedOptions(dimensions=32)).embed(texts)

    result = asyncio.run(go())
    sizes = [len(body["input"]) for body in transport.bodies]
    assert sum(sizes) == 5000 and max(sizes) <= 2048 and len(sizes) == 3
    assert result.ok.all() and not result.failures
    np.testing.assert_allclose(result.vectors[4321], embed_texts("jina-embeddings-v3", [texts[4321]], 32)[0], rtol=1e-6)
    assert jina.stats()["inputs"] == 5000


def test_over_long_input_is_rejected_alone_and_the_rest_embedded(jina, api_key):
    texts = ["fine text one", "word " * 9000, "fine text two", "", None]

    async def go():
        async with client_for(jina, api_key) as client:
            return await Embedder(client, EmbedOptions(dimensions=16)).embed(texts)

    result = asyncio.run(go())
    assert result.ok.tolist() == [True, False, True, False, False]
    reasons = {failure.index: failure.reason for failure in result.failures}
    assert "8192 tokens" in reasons[1] and "empty" in reasons[3] and "null" in reasons[4]
    assert result.splits >= 1
    # with truncate the same input is sent with the API's truncate flag and embedded
    async def truncated():
        async with client_for(jina, api_key) as client:
            return await Embedder(client, EmbedOptions(dimensions=16, truncate=True)).embed(texts[:3])

    assert asyncio.run(truncated()).ok.all()


def test_function_names_the_position_of_a_rejected_input(jina, api_key):
    with (JinaEmbeddingFunction(api_key=api_key, api_base=jina.url) as ef,
          pytest.raises(InputRejected, match=r"input 1 was not embedded: .*8192 tokens")):
        ef.encode_documents(["ok", "word " * 9000])


def test_late_chunking_keeps_a_document_in_one_request(jina, api_key):
    transport_texts = [f"chunk {i} of the same long document" for i in range(30)]
    with JinaEmbeddingFunction(api_key=api_key, api_base=jina.url, late_chunking=True, dimensions=64) as ef:
        vectors = ef(transport_texts)
    assert jina.stats()["requests"] == 1
    expected = embed_texts("jina-embeddings-v3", transport_texts, 64, late_chunking=True)
    np.testing.assert_allclose(np.vstack(vectors), expected, rtol=1e-6)


def test_late_chunking_past_the_cut_uses_windows_instead_of_failing(jina, api_key):
    """One call is one document; when its texts exceed the API's cut they travel in windows, as the job's do."""
    chunks = [f"{word} " * 4000 for word in ("lorem", "ipsum", "dolor", "amet")]  # ~4,000 tokens each
    with JinaEmbeddingFunction(api_key=api_key, api_base=jina.url, late_chunking=True, dimensions=64) as ef:
        vectors = np.vstack(ef(chunks))
    plan = plan_document([len(c) for c in chunks], chars_per_token=DEFAULT_CHARS_PER_TOKEN,
                         budget=int(8192 * LATE_CHUNKING_MARGIN), overlap=WINDOW_OVERLAP_CHUNKS, max_inputs=2048)
    assert len(plan.groups) > 1 and jina.stats()["requests"] == len(plan.groups)
    assert jina.stats()["late_chunking_over_cut"] == 0  # no request went past the cut
    for index, position in enumerate(plan.picks):
        start, end = next((s, e) for s, e in plan.groups if s <= position < e)
        window = [chunks[c] for c in plan.order[start:end]]
        expected = embed_texts("jina-embeddings-v3", window, 64, late_chunking=True)[position - start]
        np.testing.assert_allclose(vectors[index], expected, rtol=1e-6)


def test_the_seed_example_runs_unchanged(jina, api_key, monkeypatch):
    """pymilvus's JinaEmbeddingFunction example; only where the key and the base URL come from differs."""
    monkeypatch.setenv("JINA_API_BASE", jina.url)
    jina_api_key = api_key
    ef = JinaEmbeddingFunction(
        "jina-embeddings-v3",
        jina_api_key,
        task="retrieval.passage",
        dimensions=1024,
    )

    docs = [
        "Artificial intelligence was founded as an academic discipline in 1956.",
        "Alan Turing was the first person to conduct substantial research in AI.",
        "Born in Maida Vale, London, Turing was raised in southern England.",
    ]
    docs_embeddings = ef.encode_documents(docs)
    assert ef.dim == 1024 and docs_embeddings[0].shape == (1024,)
    assert all(v.dtype == np.float32 for v in docs_embeddings)

    queries = ["When was artificial intelligence founded", "Where was Alan Turing born?"]
    query_embeddings = ef.encode_queries(queries)
    assert len(query_embeddings) == 2 and query_embeddings[0].shape == (1024,)

    ef = JinaEmbeddingFunction(
        "jina-embeddings-v3",
        jina_api_key,
        task="text-matching",
        dimensions=1024,
    )
    texts = [
        "Follow the white rabbit.",  # English
        "Sigue al conejo blanco.",  # Spanish
        "Suis le lapin blanc.",  # French
        "跟着白兔走。",  # Chinese
        "اتبع الأرنب الأبيض.",  # Arabic
        "Folge dem weißen Kaninchen.",  # German
    ]
    embeddings = ef(texts)
    similarity = embeddings[0] @ embeddings[1].T
    assert len(embeddings) == 6 and -1.0 <= float(similarity) <= 1.0
    assert jina.stats()["requests"] == 3
