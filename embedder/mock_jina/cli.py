"""``embedder mock-jina``: run the local Jina-compatible stand-in server until SIGTERM or Ctrl-C.

The first line on stdout, flushed, is ``mock-jina listening on http://HOST:PORT/v1 (...)``: scripts and
:class:`embedder.mock_jina.testing.MockJinaServer` wait for it and read the port from it (``--port 0`` picks a
free one). Heavy imports (aiohttp, numpy) happen only in :func:`run`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal

from embedder.errors import ConfigError
from embedder.mock_jina.faults import DEFAULT_FAULTS, FAULT_KINDS, parse_fault_kinds
from embedder.mock_jina.settings import API_KEY_ENV, MockSettings

log = logging.getLogger("embedder.mock_jina")
KEY_RE = re.compile(r"jina_[A-Za-z0-9_]+")
BANNER = "mock-jina listening on {url} (local stand-in for Jina AI, not the real API)"


def _faults(value: str) -> tuple[str, ...]:
    try:
        return parse_fault_kinds(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value}")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port; 0 picks a free one (default 8787)")
    limits = parser.add_argument_group("limits (0 = unlimited)")
    limits.add_argument("--rpm", type=int, default=0, help="requests per sliding minute")
    limits.add_argument("--tpm", type=int, default=0, help="tokens per sliding minute")
    limits.add_argument("--max-concurrency", type=int, default=0, help="requests served at the same time")
    limits.add_argument("--balance-tokens", type=int, default=None,
                        help="answer 403 AUTHZ_INSUFFICIENT_BALANCE once this many tokens are billed")
    limits.add_argument("--no-retry-after", dest="retry_after", action="store_false",
                        help="send 429s without a Retry-After header")
    timing = parser.add_argument_group("latency and faults")
    timing.add_argument("--latency-ms", type=float, default=0.0, help="base latency of every request")
    timing.add_argument("--latency-ms-per-1k-tokens", type=float, default=0.0, help="added latency per 1k tokens")
    timing.add_argument("--fail-rate", type=_fraction, default=0.0, help="fraction of requests given a fault")
    timing.add_argument("--faults", type=_faults, default=DEFAULT_FAULTS,
                        help=f"comma-separated fault kinds to draw from (default {','.join(DEFAULT_FAULTS)}); "
                        f"known: {','.join(FAULT_KINDS)}")
    timing.add_argument("--stall-seconds", type=float, default=30.0, help="how long a 'stall' fault waits")
    timing.add_argument("--seed", type=int, default=0, help="seed of fault draws and shuffling")
    timing.add_argument("--reject-inputs", default=None, metavar="REGEX",
                        help="answer 400 to a request with an input matching REGEX ('^': every input)")
    parser.add_argument("--api-key", default=None,
                        help=f"accept only this key (better: set {API_KEY_ENV}, which stays out of `ps`)")
    parser.add_argument("--shuffle", action="store_true", help="return data in shuffled order")


def settings_from_args(args: argparse.Namespace) -> MockSettings:
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if api_key is not None and not KEY_RE.fullmatch(api_key):
        raise ConfigError(f"--api-key / {API_KEY_ENV} must look like jina_<letters, digits, underscores>")
    for name in ("rpm", "tpm", "max_concurrency", "latency_ms", "latency_ms_per_1k_tokens", "stall_seconds"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
    return MockSettings(host=args.host, port=args.port, seed=args.seed, api_key=api_key, rpm=args.rpm,
                        tpm=args.tpm, max_concurrency=args.max_concurrency, latency_ms=args.latency_ms,
                        latency_ms_per_1k_tokens=args.latency_ms_per_1k_tokens, fail_rate=args.fail_rate,
                        faults=args.faults, stall_seconds=args.stall_seconds, balance_tokens=args.balance_tokens,
                        shuffle=args.shuffle, retry_after=args.retry_after, reject_inputs=args.reject_inputs)


async def serve(settings: MockSettings) -> None:
    """Serve until SIGTERM or SIGINT, then close every connection."""
    from aiohttp import web

    from embedder.mock_jina.server import build_app

    # handler_cancellation: a client that gives up (timeout) frees its concurrency slot at once, as a stall ends.
    runner = web.AppRunner(build_app(settings), access_log=None, handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    port = runner.addresses[0][1]
    settings.port = port  # --port 0: report the port actually bound
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(BANNER.format(url=f"http://{host}:{port}/v1"), flush=True)
    log.info("settings: %s", settings.public())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("mock-jina stopping")
        await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    asyncio.run(serve(settings_from_args(args)))
    return 0
