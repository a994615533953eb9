"""A faulty S3: a small threaded HTTP proxy on 127.0.0.1 in front of a real S3 server (moto's, in the tests).

Every request is passed through unchanged, except that a seeded random share of them fails the way S3 fails:

* ``slowdown_rate`` (default 10%): ``503 SlowDown`` with S3's XML error body (``<Code>SlowDown</Code>``), the
  request not forwarded;
* ``reset_rate`` (default 2%): the TCP connection reset (``SO_LINGER`` 0, then close: the client gets ``RST``),
  half of the time before the request reaches the server, half of the time after it ran there, half way through
  the answer (the client never learns that its PUT landed: retries must be idempotent). A reset before any byte
  of the answer on a reused keep-alive connection is re-sent by curl itself, invisibly (the AWS SDK's HTTP
  client); one half way through the answer reaches the caller as ``NETWORK_CONNECTION``.

:meth:`S3FaultProxy.inject` queues exact faults for the next requests (``slowdown``, ``reset``, ``reset_before``,
``reset_after``, ``internal`` (500 InternalError), ``access_denied`` (403), ``no_such_key`` (404)), for tests that
need one particular fault. :meth:`S3FaultProxy.stats` counts requests and faults. Only the standard library is used.

    with S3FaultProxy("http://127.0.0.1:5000", seed=7) as proxy:
        ...  # point AWS_ENDPOINT_URL at proxy.url
"""

from __future__ import annotations

import collections
import http.client
import random
import socket
import struct
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "access_denied": (403, "AccessDenied", "Access Denied"),
    "no_such_key": (404, "NoSuchKey", "The specified key does not exist."),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def error_body(code: str, message: str, resource: str) -> bytes:
    """S3's XML error document."""
    request_id = uuid.uuid4().hex[:16].upper()
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId>"
            f"<HostId>{uuid.uuid4().hex}</HostId></Error>").encode()


class S3FaultProxy:
    """The proxy; ``url`` is its endpoint. Start with :meth:`start` (or ``with``), stop with :meth:`stop`."""

    def __init__(self, upstream: str, *, slowdown_rate: float = 0.10, reset_rate: float = 0.02, seed: int = 0,
                 port: int = 0) -> None:
        parts = urlsplit(upstream if "://" in upstream else f"http://{upstream}")
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.slowdown_rate, self.reset_rate = slowdown_rate, reset_rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._queued: collections.deque[str] = collections.deque()
        self._stats: collections.Counter[str] = collections.Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> S3FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> S3FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, kind: str, count: int = 1) -> None:
        """The next ``count`` requests fail with ``kind``: a key of :data:`ERRORS`, ``reset_before``, ``reset_after``
        or ``reset`` (either, at random)."""
        if kind not in ("reset", "reset_before", "reset_after") and kind not in ERRORS:
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._queued.extend([kind] * count)

    def set_rates(self, *, slowdown_rate: float | None = None, reset_rate: float | None = None) -> None:
        with self._lock:
            if slowdown_rate is not None:
                self.slowdown_rate = slowdown_rate
            if reset_rate is not None:
                self.reset_rate = reset_rate

    def stats(self) -> dict[str, int]:
        """``requests`` and one count per fault kind injected (``slowdown``, ``reset_before``, ``reset_after``...),
        plus failures of the server behind (``upstream_error``: no answer, ``upstream_5xx``)."""
        with self._lock:
            return dict(self._stats)

    def _count(self, what: str) -> None:
        with self._lock:
            self._stats[what] += 1

    def _choose(self) -> str | None:
        """The fault for the next request, or ``None`` to pass it through."""
        with self._lock:
            self._stats["requests"] += 1
            if self._queued:
                kind = self._queued.popleft()
            else:
                roll = self._rng.random()
                kind = ("reset" if roll < self.reset_rate else
                        "slowdown" if roll < self.reset_rate + self.slowdown_rate else "")
            if kind == "reset":
                kind = "reset_before" if self._rng.random() < 0.5 else "reset_after"
            if kind:
                self._stats[kind] += 1
            return kind or None


def _handler(proxy: S3FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        owner = proxy

    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: S3FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read stats(), not logs
        return

    def _any(self) -> None:
        body = self._body()
        fault = self.owner._choose()
        if fault == "reset_before":
            self._reset()
            return
        if fault in ERRORS:
            status, code, message = ERRORS[fault]
            self._reply(status, [("Content-Type", "application/xml")],
                        b"" if self.command == "HEAD" else error_body(code, message, self.path))
            return
        try:
            status, headers, payload = self._forward(body)
        except OSError as exc:  # the server itself failed: say so, as a gateway would, and count it
            self.owner._count("upstream_error")
            self._reply(502, [("Content-Type", "text/plain")], f"upstream: {exc}".encode())
            return
        if status >= 500:
            self.owner._count("upstream_5xx")
        if fault == "reset_after":  # it ran on the server; the answer breaks off half way
            self._reply(status, headers, payload[: len(payload) // 2], length=len(payload))
            self._reset()
            return
        self._reply(status, headers, payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            dropped = _HOP_BY_HOP | {"server", "date"} | ({"content-length"} if self.command != "HEAD" else set())
            return response.status, [(k, v) for k, v in response.getheaders() if k.lower() not in dropped], payload
        finally:
            connection.close()

    def _reply(self, status: int, headers: list[tuple[str, str]], payload: bytes, *,
               length: int | None = None) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        if self.command != "HEAD" or not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(payload) if length is None else length))  # HEAD: as given
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _reset(self) -> None:
        """Close the connection with an RST: the client sees "connection reset by peer"."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()
