"""The aiohttp application of the local Jina-compatible server.

One event loop serves every request; simulated latency is ``asyncio.sleep``, so thousands of requests can be
in flight at once. Request flow: count → authenticate (401) → validate (400/422) → balance (403) → fault
draw (immediate faults answer here) → rate limits (429) → latency → vectors → bill → answer.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid
from typing import Any

from aiohttp import web

from embedder.mock_jina.faults import IMMEDIATE_FAULTS
from embedder.mock_jina.responses import ApiError, dumps, html_response, json_response, loads
from embedder.mock_jina.settings import MockSettings
from embedder.mock_jina.state import MockState
from embedder.mock_jina.validation import EmbedRequest, parse_request
from embedder.mock_jina.vectors import embed_texts, encode_base64, over_the_cut

log = logging.getLogger("embedder.mock_jina")
STATE_KEY = web.AppKey("mock_jina_state", MockState)
BEARER_RE = re.compile(r"Bearer (jina_[A-Za-z0-9_]+)")
LOOPBACK = frozenset({"127.0.0.1", "::1"})

# status, code, detail of the faults answered with a JSON error at once
_JSON_FAULTS: dict[str, tuple[int, str, str]] = {
    "500": (500, "INTERNAL_ERROR", "Internal server error"),
    "503": (503, "SERVICE_UNAVAILABLE", "Service unavailable"),
    "504": (504, "SERVICE_TIMEOUT", "Service timeout"),
    "429": (429, "RATE_REQUEST_LIMIT_EXCEEDED", "Request rate limit exceeded (injected)"),
    "401": (401, "AUTH_INVALID_API_KEY", "Invalid API key"),
    "402": (402, "AUTHZ_INSUFFICIENT_BALANCE", "Insufficient balance"),
    "403": (403, "AUTHZ_INSUFFICIENT_BALANCE", "Insufficient balance"),
}


def _authorize(header: str | None, settings: MockSettings) -> None:
    # Never put the key (or the header) into a message: it would reach the client's logs.
    if not header:
        raise ApiError(401, "AUTH_MISSING_API_KEY", "Missing API key: send 'Authorization: Bearer <key>'")
    match = BEARER_RE.fullmatch(header.strip())
    if match is None:
        raise ApiError(401, "AUTH_INVALID_FORMAT", "Invalid API key format: expected 'Bearer jina_...'")
    expected = settings.api_key
    if settings.revoked or (expected is not None and not hmac.compare_digest(match.group(1), expected)):
        raise ApiError(401, "AUTH_INVALID_API_KEY", "Invalid API key")


def _immediate_fault(kind: str, req: EmbedRequest, rid: str, retry_after: bool) -> web.Response:
    if kind in ("502_html", "503_html"):
        return html_response(int(kind[:3]))
    if kind == "400_too_long":
        given = max(max(req.tokens), req.spec.max_tokens + 1)
        detail = f"Single text cannot exceed {req.spec.max_tokens} tokens. {given} tokens given."
        return ApiError(400, "INPUT_VALIDATION_ERROR", detail).response(rid)
    status, code, detail = _JSON_FAULTS[kind]
    headers = {"Retry-After": "1"} if status == 429 and retry_after else None
    return ApiError(status, code, detail, headers=headers).response(rid)


def _reject_inputs(req: EmbedRequest, state: MockState, pattern: str) -> None:
    """``reject_inputs``: a 400 about the first matching input, as the API refuses an input it cannot take."""
    rx = re.compile(pattern)
    bad = [text for text in req.texts if rx.search(text)]
    if bad:
        state.count_rejected(bad)
        raise ApiError(400, "INPUT_VALIDATION_ERROR",
                       "Input text rejected by the local server: it matches the reject_inputs pattern")


def _rate_headers(state: MockState) -> dict[str, str]:
    s = state.settings
    requests, tokens = state.limiter.remaining(s.rpm, s.tpm)
    headers = {}
    if requests is not None:
        headers["X-RateLimit-Remaining-Requests"] = str(requests)
    if tokens is not None:
        headers["X-RateLimit-Remaining-Tokens"] = str(tokens)
    return headers


def _payload(req: EmbedRequest, state: MockState) -> dict[str, Any]:
    if req.late_chunking and over_the_cut(req.spec.name, req.texts):
        state.stats.late_chunking_over_cut += 1
    vectors = embed_texts(req.spec.name, req.texts, req.dimensions, req.normalized, req.late_chunking)
    data = []
    for i, vector in enumerate(vectors):
        values = {kind: (encode_base64(vector) if kind == "base64" else vector) for kind in req.embedding_types}
        embedding = values if req.as_dict else values[req.embedding_types[0]]
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    if state.settings.shuffle:
        state.shuffle_rng.shuffle(data)
    total = req.total_tokens
    return {"model": req.spec.name, "object": "list",
            "usage": {"total_tokens": total, "prompt_tokens": total}, "data": data}


async def _reset_midway(request: web.Request, body: bytes) -> web.StreamResponse:
    """Announce the whole body, send half of it, then drop the connection."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.abort()
    return response


async def _serve(request: web.Request, state: MockState, note: dict[str, Any]) -> web.StreamResponse:
    settings = state.settings
    _authorize(request.headers.get("Authorization"), settings)
    req = parse_request(await request.read())
    note.update(model=req.spec.name, inputs=len(req.texts), tokens=req.total_tokens)
    if settings.reject_inputs is not None:
        _reject_inputs(req, state, settings.reject_inputs)
    if settings.balance_tokens is not None and state.stats.tokens >= settings.balance_tokens:
        raise ApiError(403, "AUTHZ_INSUFFICIENT_BALANCE", "Insufficient balance: top up the key")
    fault = state.picker.next(settings.fail_rate, settings.faults)
    if fault is not None:
        note["fault"] = fault
        state.stats.faults += 1
        state.stats.faults_by_kind[fault] += 1
        if fault in IMMEDIATE_FAULTS:
            return _immediate_fault(fault, req, note["rid"], settings.retry_after)
    rejection = state.limiter.check(req.total_tokens, settings.rpm, settings.tpm, settings.max_concurrency)
    if rejection is not None:
        note["rate_limited"] = rejection.code
        headers = _rate_headers(state)
        if settings.retry_after:
            headers["Retry-After"] = str(rejection.retry_after)
        raise ApiError(429, rejection.code, f"Rate limit exceeded ({rejection.code})", headers=headers)
    state.limiter.acquire(req.total_tokens)
    try:
        delay = settings.latency_ms + settings.latency_ms_per_1k_tokens * req.total_tokens / 1000
        delay = delay / 1000 + (settings.stall_seconds if fault == "stall" else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        payload = _payload(req, state)
        if fault == "missing_embedding":  # a broken answer: not billed, like every fault but a stall
            payload["data"].pop(state.shuffle_rng.randrange(len(payload["data"])))
            return json_response(payload)
        body = dumps(payload)
        if fault == "malformed_json":
            return web.Response(body=body[: len(body) // 2], content_type="application/json")
        if fault == "reset":
            return await _reset_midway(request, body)
        state.stats.billed_requests += 1
        state.stats.tokens += req.total_tokens
        state.stats.inputs += len(req.texts)
        return web.Response(body=body, headers=_rate_headers(state), content_type="application/json")
    finally:
        state.limiter.release()


async def embeddings(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    started = time.perf_counter()
    note: dict[str, Any] = {"rid": uuid.uuid4().hex}
    state.stats.requests += 1
    try:
        response = await _serve(request, state, note)
    except ApiError as err:
        response = err.response(note["rid"])
    except asyncio.CancelledError:  # the client went away (e.g. timed out during a stall)
        state.stats.by_status["cancelled"] += 1
        log.debug("POST %s rid=%s cancelled: client disconnected", request.path, note["rid"])
        raise
    stats = state.stats
    status = "reset" if note.get("fault") == "reset" else str(response.status)
    stats.by_status[status] += 1
    if "rate_limited" in note:
        stats.rate_limited += 1
        stats.rate_limited_by_code[note["rate_limited"]] += 1
    elif response.status >= 400 and "fault" not in note:
        stats.errors += 1
    response.headers["X-Request-Id"] = note["rid"]
    # The Authorization header is never logged; only what the request asked for and how it ended.
    log.debug("POST %s rid=%s status=%s model=%s inputs=%s tokens=%s fault=%s ms=%.1f", request.path,
              note["rid"], status, note.get("model"), note.get("inputs"), note.get("tokens"),
              note.get("fault"), (time.perf_counter() - started) * 1000)
    return response


@web.middleware
async def unknown_routes(request: web.Request, handler: Any) -> web.StreamResponse:
    """FastAPI's answers for what the real API does not serve: 404 ``{"detail": "Not Found"}`` for an unknown path,
    405 ``{"detail": "Method Not Allowed"}`` (with ``Allow``) for a wrong method. Counted, so a test can tell how
    many requests a client sent to the wrong place."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        response = json_response({"detail": "Method Not Allowed"}, 405,
                                 {"Allow": ", ".join(sorted(exc.allowed_methods))})
    except web.HTTPNotFound:
        response = json_response({"detail": "Not Found"}, 404)
    request.app[STATE_KEY].count_unrouted(request.method, request.path, response.status)
    log.debug("%s %s status=%d (not a route of the API)", request.method, request.path, response.status)
    return response


@web.middleware
async def loopback_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """Admin and stats endpoints change or reveal the server's state: answer them on loopback only."""
    if request.path.startswith(("/admin", "/stats")) and request.remote not in LOOPBACK:
        return json_response({"detail": "admin endpoints are loopback only", "code": "FORBIDDEN"}, 403)
    return await handler(request)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = loads(await request.read() or b"{}")
    except ValueError:
        raise web.HTTPBadRequest(text='{"detail": "invalid JSON"}', content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"detail": "expected a JSON object"}', content_type="application/json")
    return body


async def stats(request: web.Request) -> web.Response:
    return json_response(request.app[STATE_KEY].snapshot())


async def reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return json_response({"reset": True})


async def get_config(request: web.Request) -> web.Response:
    return json_response(request.app[STATE_KEY].settings.public())


async def set_config(request: web.Request) -> web.Response:
    settings = request.app[STATE_KEY].settings
    try:
        settings.apply(await _json_body(request))
    except ValueError as exc:
        return json_response({"detail": str(exc), "code": "INVALID_SETTING"}, 400)
    log.info("settings changed: %s", settings.public())
    return json_response(settings.public())


async def inject(request: web.Request) -> web.Response:
    body = await _json_body(request)
    try:
        queued = request.app[STATE_KEY].picker.inject(body.get("faults", []))
    except (TypeError, ValueError) as exc:
        return json_response({"detail": str(exc), "code": "INVALID_FAULT"}, 400)
    return json_response({"queued": queued})


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "server": "mock-jina (local stand-in, not the real API)"})


def build_app(settings: MockSettings) -> web.Application:
    app = web.Application(middlewares=[unknown_routes, loopback_only], client_max_size=256 * 1024 * 1024)
    app[STATE_KEY] = MockState(settings)
    # the API's one route, as at api.jina.ai: a client whose base URL lacks /v1 must see the 404 here too
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/stats", stats)
    app.router.add_post("/admin/reset", reset)
    app.router.add_get("/admin/config", get_config)
    app.router.add_post("/admin/config", set_config)
    app.router.add_post("/admin/inject", inject)
    app.router.add_get("/health", health)
    return app
