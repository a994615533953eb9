"""Answers that do not come from the embeddings API as configured, told apart from answers about the inputs.

A wrong ``api_base`` (``https://api.jina.ai`` without ``/v1``), a proxy, or another service answers 404, 405, a
400 that is about no input, or a 2xx that is not an embeddings response. Mapped to "input rejected", such answers
made the client split every request down to single rows and dead-letter each one: about 2n requests for nothing.
They are :class:`~embedder.errors.EndpointError` instead: never split, retried or dead-lettered; the job stops.
"""

from __future__ import annotations

import re

import httpx

from embedder.errors import EndpointError

NOT_THE_API = frozenset({404, 405, 406, 410, 411, 414, 415})
"""Statuses the embeddings endpoint never answers to a well-formed request: the URL or the method is wrong, or
something else answers there. (413 is not here: a body too large for a proxy gets smaller when split.)"""

INPUT_WORDS = re.compile(r"\b(inputs?|texts?|tokens?)\b", re.IGNORECASE)
"""The API's 400s about inputs name them (``/work/shared/JINA_API.md``): "Single text cannot exceed 8192 tokens",
"input length is larger than the largest allowed size 2048". A 400 that names none is about the request itself
("The request body is not valid JSON", "embedding_type 'binary' is not supported"): splitting cannot help."""


def show_url(url: str) -> str:
    """The URL without user info or query string: what a message may print."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<unparsable URL>"
    return str(parsed.copy_with(userinfo=b"", query=None, fragment=None))


def hint(url: str) -> str:
    """What to check, for an answer that is not from the embeddings API."""
    if not url.rstrip("/").endswith("/v1/embeddings"):
        return ("does `api_base` end in `/v1`? (embedding.api_base or $JINA_API_BASE; Jina's is "
                "https://api.jina.ai/v1)")
    return "is this Jina's embeddings API, or a proxy in front of it that answers for itself?"


def status_error(status: int, url: str, what: str) -> EndpointError | None:
    """An :class:`EndpointError` for a status that says the URL or the method is wrong; ``what`` describes the
    body (Jina's ``detail`` or the kind of page)."""
    if status not in NOT_THE_API:
        return None
    return EndpointError(f"POST {show_url(url)} answered HTTP {status} ({what}): this is not the embeddings "
                         f"endpoint; {hint(url)}", status=status, detail=what)


def is_about_inputs(detail: str) -> bool:
    """Whether a 400's detail is about the request's inputs (split the request, dead-letter the row)."""
    return bool(INPUT_WORDS.search(detail))


def request_error(status: int, url: str, detail: str, code: str | None,
                  request_id: str | None) -> EndpointError:
    """A 400 about the request itself, or one from something that is not the API (no JSON ``detail``)."""
    if detail:
        message = (f"POST {show_url(url)} answered HTTP {status}{f' {code}' if code else ''} about the request "
                   f"itself, not one of its inputs: {detail}; check the [embedding] settings, and {hint(url)}")
    else:
        message = (f"POST {show_url(url)} answered HTTP {status} without the API's JSON error body: this is not "
                   f"the embeddings API; {hint(url)}")
    return EndpointError(message, status=status, code=code, detail=detail or None, request_id=request_id)


def not_embeddings(status: int, url: str, content: bytes, data: object) -> EndpointError | None:
    """For a 2xx answer: an :class:`EndpointError` when it is not an embeddings response at all (an HTML page, plain
    text, JSON without a ``data`` list); ``None`` when it is one, or a broken one (truncated JSON: a transfer cut
    short, worth a retry). ``data`` is the parsed body (``None`` when it did not parse)."""
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return None
    start = content.lstrip()[:1]
    if data is None and start in (b"{", b"["):
        return None  # JSON cut short: the caller's ResponseMismatch (transient)
    if data is None:
        kind = "an HTML page" if b"<html" in content[:500].lower() else f"a non-JSON body of {len(content)} bytes"
    elif isinstance(data, dict):
        kind = f"JSON without a `data` list (keys: {', '.join(sorted(map(str, data))[:6]) or 'none'})"
    else:
        kind = f"JSON of another shape ({type(data).__name__})"
    return EndpointError(f"POST {show_url(url)} answered HTTP {status} with {kind}, not an embeddings response: "
                         f"{hint(url)}", status=status)
