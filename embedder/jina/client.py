"""Async client for Jina's embeddings API: one request per call, typed errors, retries decided by error class.

The transport is handed in (``transport=``), never patched: unit tests pass ``httpx.MockTransport``, integration
tests and the job use the real network (the local stand-in server on loopback, or Jina's API).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np

try:  # orjson (a pymilvus dependency) encodes a request body ~20x and parses a response ~2-10x faster than json
    import orjson
except ImportError:  # pragma: no cover - the stdlib path below is the same, only slower
    orjson = None  # type: ignore[assignment]

from embedder.errors import (
    FatalError,
    InputRejected,
    JinaError,
    PermanentError,
    RateLimited,
    ResponseMismatch,
    TransientError,
    ValidationError,
)
from embedder.jina import endpoint
from embedder.jina.models import API_KEY_ENVS, DEFAULT_API_BASE, ModelSpec, model_spec

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class EmbedOptions:
    """The request fields besides ``input``. ``None`` means: not sent."""

    model: str = "jina-embeddings-v3"
    task: str | None = None
    dimensions: int | None = None
    normalized: bool | None = True
    truncate: bool = False
    late_chunking: bool = False
    embedding_type: str = "base64"

    @property
    def spec(self) -> ModelSpec:
        return model_spec(self.model)

    def payload(self, inputs: Sequence[str]) -> dict[str, Any]:
        """The JSON body, with only the fields that are set and that this model accepts."""
        body: dict[str, Any] = {"model": self.model, "input": list(inputs),
                                "embedding_type": self.embedding_type}
        if self.normalized is not None:
            body["normalized"] = self.normalized
        if self.truncate:
            body["truncate"] = True
        if self.spec.accepts_v3_fields:  # v2 models answer 422 to any of these
            if self.task is not None:
                body["task"] = self.task
            if self.dimensions is not None:
                body["dimensions"] = self.dimensions
            if self.late_chunking:
                body["late_chunking"] = True
        return body


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures and 429s are retried: exponential backoff with full jitter, capped."""

    max_attempts: int = 8
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    retry_after_cap_s: float = 120.0

    def delay(self, attempt: int, error: JinaError, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempt + 1``; Retry-After wins when the server sent one."""
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return min(error.retry_after, self.retry_after_cap_s) + rng.uniform(0, 0.1)
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)


@dataclass
class EmbeddingResponse:
    """Vectors of one request, in input order, with what the API billed and what it took to get them."""

    vectors: np.ndarray
    total_tokens: int
    attempts: int = 1
    rate_limited: int = 0
    errors: list[str] = field(default_factory=list)


class RequestGate(Protocol):
    """Asked for a permit before every attempt and told its outcome after: the job's rate limiter implements this.

    ``release`` gets the tokens billed (``None`` when the attempt failed) and, for a 429, its Retry-After and kind;
    ``verdict`` is ``"answered"`` when the API refused an input (so the endpoint is right) and ``"stop"`` when the
    answer stops the job (a wrong endpoint, a bad key: see :func:`verdict_of`).
    """

    async def acquire(self, estimated_tokens: int) -> Any: ...

    async def release(self, permit: Any, used_tokens: int | None, rate_limited_after: float | None = None,
                      rate_limited_kind: str | None = None, verdict: str | None = None) -> None: ...


def resolve_api_key(api_key: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    if api_key:
        return api_key
    for name in API_KEY_ENVS:
        if env.get(name):
            return env[name]
    return None


def resolve_api_base(api_base: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (api_base or env.get("JINA_API_BASE") or DEFAULT_API_BASE).rstrip("/")


class JinaClient:
    """One pooled HTTP connection set to the embeddings endpoint; ``embed`` retries, ``request_once`` does not."""

    def __init__(self, api_key: str | None = None, *, api_base: str | None = None, timeout: float = 120.0,
                 retry: RetryPolicy | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 max_connections: int = 64, gate: RequestGate | None = None,
                 environ: Mapping[str, str] | None = None, seed: int | None = None) -> None:
        key = resolve_api_key(api_key, environ)
        if not key:
            raise FatalError("no Jina API key: set JINA_API_KEY (or JINAAI_API_KEY), or pass api_key=")
        self.api_base = resolve_api_base(api_base, environ)
        self.url = f"{self.api_base}/embeddings"
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.gate = gate
        self._rng = random.Random(seed)
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                     "Accept": "application/json"},
        )

    def __repr__(self) -> str:  # the key stays out of reprs, logs and tracebacks
        return f"JinaClient(api_base={self.api_base!r}, timeout={self.timeout})"

    async def __aenter__(self) -> JinaClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def embed(self, inputs: Sequence[str], options: EmbedOptions,
                    estimated_tokens: int = 0) -> EmbeddingResponse:
        """Embed ``inputs`` in one request, retrying transient failures and 429s; permanent errors raise at once."""
        attempt, rate_limited, errors = 0, 0, []
        while True:
            attempt += 1
            permit = await self.gate.acquire(estimated_tokens) if self.gate is not None else None
            try:
                response = await self.request_once(inputs, options)
            except JinaError as exc:
                limited = exc if isinstance(exc, RateLimited) else None
                if self.gate is not None:
                    await self.gate.release(permit, None, limited.retry_after if limited else None,
                                            limited.kind if limited else None, verdict_of(exc))
                if not exc.retryable or attempt >= self.retry.max_attempts:
                    raise
                rate_limited += limited is not None
                errors.append(type(exc).__name__)
                delay = self.retry.delay(attempt, exc, self._rng)
                if limited is not None and self.gate is not None:
                    delay = 0.0  # the gate pauses every caller for Retry-After; waiting here too would double it
                log.info("embeddings request failed (%s), attempt %d of %d, retrying in %.2fs",
                         exc, attempt, self.retry.max_attempts, delay)
                if delay:
                    await asyncio.sleep(delay)
                continue
            except BaseException:
                if self.gate is not None:  # cancelled, or failed outside the error tree: return the permit
                    await asyncio.shield(self.gate.release(permit, None))
                raise
            if self.gate is not None:
                await self.gate.release(permit, response.total_tokens)
            response.attempts, response.rate_limited, response.errors = attempt, rate_limited, errors
            return response

    async def request_once(self, inputs: Sequence[str], options: EmbedOptions) -> EmbeddingResponse:
        """One HTTP exchange. Every failure leaves as a :class:`JinaError`; lower-level errors are mapped here."""
        body = encode_body(options.payload(inputs))
        started = time.perf_counter()
        try:
            # Streamed and joined here rather than ``response.content``: httpx's Response sits in a reference cycle
            # (response -> stream -> response) that only the cyclic GC frees, so a body cached on it (megabytes
            # of vectors) would outlive the request by seconds to minutes and make a worker's memory creep.
            async with self._http.stream("POST", self.url, content=body) as http_response:
                content = b"".join([chunk async for chunk in http_response.aiter_bytes()])
        except httpx.TimeoutException as exc:
            raise TransientError(f"request timed out after {self.timeout:g}s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientError(f"connection error: {type(exc).__name__}: {exc}") from None
        log.debug("POST %s model=%s inputs=%d status=%d in %.3fs", self.url, options.model, len(inputs),
                  http_response.status_code, time.perf_counter() - started)
        status = http_response.status_code
        if not 200 <= status < 300:
            raise error_from_response(status, http_response.headers, content, url=self.url)
        return decode_response(content, len(inputs), options, url=self.url, status=status)


def verdict_of(error: JinaError) -> str | None:
    """What a failed attempt tells the request gate: the API answered about an input, or the job must stop."""
    if isinstance(error, InputRejected):
        return "answered"
    if isinstance(error, PermanentError):
        return "stop"
    return None


def encode_body(body: dict[str, Any]) -> bytes:
    """The request body as UTF-8 JSON, as httpx's ``json=`` would write it (compact, non-ASCII kept as is)."""
    if orjson is not None:
        try:
            return orjson.dumps(body)
        except TypeError:  # e.g. a lone surrogate: let the stdlib path fail (or succeed) exactly as before
            pass
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _json_or_none(content: bytes) -> dict | None:
    data = _parse_json(content)
    return data if isinstance(data, dict) else None


def _parse_json(content: bytes) -> object:
    """The parsed body, or ``None`` when it is not JSON."""
    data: object = None
    if orjson is not None:
        try:
            data = orjson.loads(content)
        except ValueError:  # stricter than json (NaN, huge integers): the stdlib decides
            data = None
    if data is None:
        try:
            data = json.loads(content)
        except ValueError:
            return None
    return data


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare; fall back to backoff


def error_from_response(status: int, headers: Mapping[str, str], content: bytes, *, url: str = "") -> JinaError:
    """Map a non-2xx answer to the error tree, keeping Jina's ``detail`` and ``code``. Only a 400 that names an
    input (and a 413) is :class:`InputRejected`; an answer that is not from the API is an :class:`EndpointError`."""
    data = _json_or_none(content)
    if data is None:
        snippet = content[:120].decode("utf-8", "replace").replace("\n", " ")
        kind = "HTML page" if b"<html" in content[:500].lower() else "non-JSON body"
        what = f"a {kind}: {snippet!r}"
        if (wrong := endpoint.status_error(status, url, what)) is not None:
            return wrong
        if status in (401, 402, 403):
            return FatalError(f"HTTP {status} with {what}", status=status)
        if status >= 500 or status in (408, 429):
            return TransientError(f"HTTP {status} with {what}", status=status)
        if status == 413:
            return InputRejected(f"HTTP {status} with {what}", status=status)
        return endpoint.request_error(status, url, "", None, None)
    detail = str(data.get("detail", ""))
    code = data.get("code")
    if data.get("errors"):
        detail = f"{detail}: " + "; ".join(
            f"{e.get('field')}: {e.get('message')}" for e in data["errors"] if isinstance(e, dict))
    code = str(code) if code is not None else None
    request_id = str(data["request_id"]) if data.get("request_id") is not None else None
    message = f"HTTP {status}{f' {code}' if code else ''}: {detail}"
    if (wrong := endpoint.status_error(status, url, detail or "no detail")) is not None:
        return wrong
    if status == 429:
        kind = (code or "RATE_LIMIT_EXCEEDED").removeprefix("RATE_").removesuffix("_LIMIT_EXCEEDED").lower()
        return RateLimited(message, kind=kind, retry_after=_retry_after(headers), status=status, code=code,
                           detail=detail, request_id=request_id)
    kind_of: type[JinaError] = InputRejected
    if status in (401, 402, 403) or code == "INPUT_MODEL_NOT_FOUND":
        kind_of = FatalError
    elif status == 422:
        kind_of = ValidationError
    elif status >= 500 or status == 408:
        kind_of = TransientError
    elif status != 413 and not (detail and endpoint.is_about_inputs(detail)):
        return endpoint.request_error(status, url, detail, code, request_id)
    return kind_of(message, status=status, code=code, detail=detail, request_id=request_id)


def decode_response(content: bytes, expected: int, options: EmbedOptions, *, url: str = "",
                    status: int = 200) -> EmbeddingResponse:
    """Decode a 2xx body into an (n, dim) float32 array ordered by ``index``; anything inconsistent raises:
    :class:`EndpointError` when it is no embeddings response at all, else :class:`ResponseMismatch`."""
    parsed = _parse_json(content)
    if (wrong := endpoint.not_embeddings(status, url, content, parsed)) is not None:
        raise wrong
    data = parsed if isinstance(parsed, dict) else None
    if data is None or not isinstance(data.get("data"), list):
        raise ResponseMismatch(f"malformed response body ({len(content)} bytes, not the embeddings JSON)")
    items = data["data"]
    if len(items) != expected:
        raise ResponseMismatch(f"response has {len(items)} embeddings for {expected} inputs")
    order: list[object] = [None] * expected
    for item in items:
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < expected or order[index] is not None:
            raise ResponseMismatch(f"response has a bad or repeated embedding index {index!r}")
        order[index] = item.get("embedding")
    vectors = _decode_vectors(order)
    expected_dim = options.dimensions if options.spec.accepts_v3_fields else None
    if expected_dim is not None and vectors.shape[1] != expected_dim:
        raise ResponseMismatch(f"response vectors have {vectors.shape[1]} dimensions, expected {expected_dim}")
    usage = data.get("usage") or {}
    return EmbeddingResponse(vectors=vectors, total_tokens=int(usage.get("total_tokens") or 0))


def _decode_vectors(embeddings: list[object]) -> np.ndarray:
    """All base64 (the fast path: one ``frombuffer`` for the whole response) or all float lists."""
    if all(isinstance(e, str) for e in embeddings):
        try:
            raws = [base64.b64decode(e) for e in embeddings]  # type: ignore[arg-type]
        except ValueError:
            raise ResponseMismatch("an embedding is not valid base64") from None
        sizes = {len(raw) for raw in raws}
        if len(sizes) != 1 or 0 in sizes or next(iter(sizes)) % 4:
            raise ResponseMismatch(f"base64 embeddings have inconsistent byte sizes {sorted(sizes)[:5]}")
        flat = np.frombuffer(b"".join(raws), dtype="<f4")
        return flat.reshape(len(raws), -1).astype(np.float32, copy=False)
    if all(isinstance(e, list) and e for e in embeddings):
        lengths = {len(e) for e in embeddings}  # type: ignore[arg-type]
        if len(lengths) != 1:
            raise ResponseMismatch(f"float embeddings have inconsistent dimensions {sorted(lengths)[:5]}")
        return np.asarray(embeddings, dtype=np.float32)
    raise ResponseMismatch("an embedding is missing, empty or of an unexpected type")
