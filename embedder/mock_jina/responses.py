"""JSON encoding and the error bodies of the local server (``{"detail", "code", "request_id"}``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from aiohttp import web

try:  # orjson (a pymilvus dependency) writes float32 arrays ~10x faster than json
    import orjson
except ImportError:  # pragma: no cover - the plain json path is the fallback
    orjson = None  # type: ignore[assignment]


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(obj: Any) -> bytes:
    if orjson is not None:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(obj, default=_default, separators=(",", ":")).encode("utf-8")


def loads(raw: bytes) -> Any:
    """Parse a request body; raises ``ValueError`` on invalid JSON or UTF-8."""
    if orjson is not None:
        return orjson.loads(raw)  # orjson.JSONDecodeError subclasses ValueError
    return json.loads(raw)


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(payload), status=status, headers=headers,
                        content_type="application/json")


class ApiError(Exception):
    """An error answer: status, Jina-style code and detail, and optional 422 field errors."""

    def __init__(self, status: int, code: str, detail: str, *, errors: list[dict[str, Any]] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = dict(headers or {})

    def response(self, request_id: str) -> web.Response:
        body: dict[str, Any] = {"detail": self.detail, "code": self.code, "request_id": request_id}
        if self.errors is not None:
            body["detail"] = f"[RID: {request_id}] Validation errors in {len(self.errors)} fields"
            body["errors"] = self.errors
        return json_response(body, self.status, self.headers)


def field_error(field: str, message: str, kind: str, value: Any) -> dict[str, Any]:
    """One entry of a 422's ``errors`` list, shaped like the real API's (pydantic) errors."""
    return {"field": f"body -> {field}" if field else "body", "message": message, "type": kind, "input": value}


HTML_PAGES = {
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
}


def html_response(status: int) -> web.Response:
    """What a proxy in front of the API sends: an HTML page, not JSON."""
    title = HTML_PAGES[status]
    page = (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
            "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
    return web.Response(text=page, status=status, content_type="text/html")
