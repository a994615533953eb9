"""Run the local server in a subprocess from Python: for tests, benchmarks and the offline demo.

    with MockJinaServer(rpm=600, latency_ms=50) as server:
        client = JinaClient(api_base=server.url, ...)
        ...
        assert server.stats()["rate_limited"] == 0

The server is a real process on a free loopback port, talking real HTTP, so whatever talks to it (httpx, Ray
workers in other processes) sees what it would see from the API. Admin calls use httpx with ``trust_env=False``
so a proxy configured in the environment is never consulted for loopback traffic.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from embedder.mock_jina.settings import API_KEY_ENV

OPTIONS = frozenset({"rpm", "tpm", "max_concurrency", "latency_ms", "latency_ms_per_1k_tokens", "fail_rate",
                     "faults", "stall_seconds", "seed", "balance_tokens", "shuffle", "retry_after",
                     "reject_inputs"})
_BANNER_RE = re.compile(r"listening on (http://\S+)")


def _flags(options: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if name == "shuffle":
            flags += [flag] if value else []
        elif name == "retry_after":
            flags += [] if value else ["--no-retry-after"]
        elif name == "faults":
            flags += [flag, value if isinstance(value, str) else ",".join(value)]
        elif value is not None:
            flags += [flag, str(value)]
    return flags


class MockJinaServer:
    """The local Jina-compatible server in a subprocess; a context manager.

    Keyword options are the server's settings (``rpm``, ``tpm``, ``max_concurrency``, ``latency_ms``,
    ``latency_ms_per_1k_tokens``, ``fail_rate``, ``faults``, ``stall_seconds``, ``seed``, ``balance_tokens``,
    ``shuffle``, ``retry_after``, ``reject_inputs``). ``api_key`` makes it accept only that key (passed through
    the environment, not the command line); ``debug`` turns on its per-request DEBUG log lines, readable with
    :meth:`logs`.
    """

    def __init__(self, *, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 debug: bool = False, startup_timeout: float = 30.0, **options: Any) -> None:
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise TypeError(f"unknown MockJinaServer options {unknown}; known: {sorted(OPTIONS)}")
        self._api_key = api_key
        self._host = host
        self._port = port
        self._debug = debug
        self._startup_timeout = startup_timeout
        self._options = options
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._http: httpx.Client | None = None
        self._final_logs = ""
        self.url = ""
        """The API base to give a client, ``http://127.0.0.1:PORT/v1``."""
        self.root_url = ""
        """``http://127.0.0.1:PORT``: where ``/stats``, ``/health`` and ``/admin/*`` live."""
        self.banner = ""
        """The first line the server printed."""
        self.initial_settings: dict[str, Any] = {}
        """The settings the server started with (what :meth:`restore` goes back to)."""

    def command(self) -> list[str]:
        debug = ["--debug"] if self._debug else []
        return [sys.executable, "-m", "embedder", *debug, "mock-jina", "--host", self._host,
                "--port", str(self._port), *_flags(self._options)]

    def start(self) -> MockJinaServer:
        """Start the process and wait (bounded by ``startup_timeout``) for its first line."""
        env = dict(os.environ)
        env.pop(API_KEY_ENV, None)
        if self._api_key is not None:
            env[API_KEY_ENV] = self._api_key
        self._dir = Path(tempfile.mkdtemp(prefix="mock-jina-"))
        with open(self._dir / "stdout", "wb") as out, open(self._dir / "stderr", "wb") as err:
            self._proc = subprocess.Popen(self.command(), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                          env=env)
        try:
            self.url = self._wait_for_banner()
        except BaseException:
            self.stop()
            raise
        self.root_url = self.url.removesuffix("/v1")
        self._http = httpx.Client(base_url=self.root_url, timeout=10.0, trust_env=False)
        self.initial_settings = self.settings()
        return self

    def _wait_for_banner(self) -> str:
        assert self._proc is not None and self._dir is not None
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            match = _BANNER_RE.search((self._dir / "stdout").read_text(errors="replace"))
            if match:
                self.banner = (self._dir / "stdout").read_text(errors="replace").splitlines()[0]
                return match.group(1)
            if self._proc.poll() is not None:
                raise RuntimeError(f"mock-jina exited with {self._proc.returncode}:\n{self.logs()[-2000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"mock-jina did not start within {self._startup_timeout} s:\n{self.logs()[-2000:]}")

    @property
    def port(self) -> int:
        return int(self.root_url.rsplit(":", 1)[1])

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        if self._http is None:
            raise RuntimeError("MockJinaServer is not running: call start() or use it in a with block")
        response = self._http.request(method, path, json=payload)
        if response.status_code >= 400:
            raise ValueError(f"mock-jina {path}: {response.status_code} {response.text}")
        return response.json()

    def stats(self) -> dict[str, Any]:
        """``GET /stats``: requests, tokens, inputs, rate_limited, errors, faults, by_status, ..."""
        return self._call("GET", "/stats")

    def reset(self) -> None:
        """Zero the counters and the rate-limit windows, empty the fault queue, restart the seeded draws."""
        self._call("POST", "/admin/reset")

    def settings(self) -> dict[str, Any]:
        """The effective settings (never the key)."""
        return self._call("GET", "/admin/config")

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change runtime settings at once (``rpm=…``, ``revoked=True``, ...); returns the effective settings."""
        return self._call("POST", "/admin/config", settings)

    def restore(self) -> dict[str, Any]:
        """Back to the settings the server started with."""
        keep = {k: v for k, v in self.initial_settings.items() if k in OPTIONS - {"seed"} or k == "revoked"}
        return self.configure(**keep)

    def inject(self, *faults: str) -> int:
        """Queue faults for the next embedding requests, FIFO; returns the queue length."""
        return int(self._call("POST", "/admin/inject", {"faults": list(faults)})["queued"])

    def logs(self) -> str:
        """Everything the server wrote to stderr so far (its log)."""
        if self._dir is not None and (self._dir / "stderr").exists():
            return (self._dir / "stderr").read_text(errors="replace")
        return self._final_logs

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code. Safe to call twice."""
        if self._http is not None:
            self._http.close()
            self._http = None
        code = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout)
            code = self._proc.returncode
        if self._dir is not None:
            self._final_logs = self.logs()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        return code

    def __enter__(self) -> MockJinaServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
