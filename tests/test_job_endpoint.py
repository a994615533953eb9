"""System tests: a wrong ``api_base`` stops the job at its first request (real Ray, a real server on loopback).

Before: a 404 was "input rejected", so every request was split down to single rows and every row dead-lettered;
the job "completed" after about 2n requests. Now the first request is a canary: the job exits non-zero within
seconds, having sent at most a few requests, dead-lettering nothing, and says which URL answered 404 and what to
check. Two servers: the local stand-in behind a wrong path (``/v2``), and a plain HTTP server that answers every
request with a JSON 404.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from jobtools import corpus_rows, ledger, start_cli, wait_for, write_parquet

from embedder.testing import cli_env, fault_job

pytestmark = pytest.mark.slow


class NotFoundServer(ThreadingHTTPServer):
    """Answers every request ``404 {"detail": "Not Found"}`` and counts them."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _NotFound)
        self.requests = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _NotFound(BaseHTTPRequestHandler):
    server: NotFoundServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests += 1
        body = json.dumps({"detail": "Not Found"}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def not_found() -> Iterator[NotFoundServer]:
    server = NotFoundServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("server", ["stand-in with /v2", "plain 404 server"])
def test_wrong_endpoint_stops_at_the_first_request(server: str, tmp_path: Path, jina, api_key, ray_tmp,
                                                   not_found: NotFoundServer) -> None:
    if server == "plain 404 server":
        base, count = not_found.url, lambda: not_found.requests
    else:
        base = jina.url.removesuffix("/v1") + "/v2"

        def count() -> int:
            stats = jina.stats()
            return stats["requests"] + stats["unrouted"]
    url = f"{base}/embeddings"
    write_parquet(tmp_path / "data.parquet", corpus_rows(4000), row_group_rows=500)
    out = tmp_path / "out"
    job = fault_job(tmp_path / "job.toml", tmp_path / "data.parquet", out, shard_rows=500, workers=3,
                    embedding={"batch_size": 50})  # 8 shards, 24 requests in flight without the canary
    run = start_cli(job, env=cli_env(base, api_key, ray_tmpdir=ray_tmp))
    try:
        wait_for(lambda: count() > 0 or not run.running(), timeout=120, what="the first request")
        first_request = time.monotonic()
    finally:
        result = run.wait(120)
    stopped_after = time.monotonic() - first_request
    assert result.returncode not in (0, 130), result.describe()
    assert stopped_after < 30, f"the job ran {stopped_after:.0f}s after its first request"
    requests = count()
    assert 1 <= requests <= 5, f"the server saw {requests} requests"
    assert url in result.stderr and "404" in result.stderr, result.describe()
    assert "/v1" in result.stderr, "the message says what to check"
    book = ledger(str(out / "_checkpoint"))
    assert book.failed_rows().num_rows == 0, "no row is dead-lettered for a wrong endpoint"
    assert not book.done_ids()
    report = book.read_report()
    assert report is not None and report.status == "failed" and report.error_class == "EndpointError"
    assert url in (report.error or "") and api_key not in json.dumps(report.to_dict())
    print(f"\n{server}: exit {result.returncode} {stopped_after:.1f}s after the first request, "
          f"{requests} request(s) seen by the server")
