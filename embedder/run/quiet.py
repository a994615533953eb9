"""Quiet by default, loud with ``--debug``: the log levels of this job's processes (the CLI, and each actor).

Third-party libraries announce themselves at INFO (httpx: a line per request; faiss: its CPU features; Milvus
Lite: its server's start) and gRPC's C core writes to stderr directly. Without debug they are turned down to
warnings; gRPC and glog read their levels from the environment when they start, so :func:`quiet_environment` sets
them before Ray, gRPC or Milvus Lite is imported, and Ray's workers started from this process inherit them.
"""

from __future__ import annotations

import logging
import os

NOISY_LOGGERS = ("httpx", "httpcore", "faiss", "faiss.loader", "milvus_lite", "pymilvus", "grpc", "urllib3",
                 "asyncio", "filelock", "botocore", "s3fs", "aiobotocore", "ray")
"""Loggers of libraries that say more than a user needs; WARNING and up still show."""

QUIET_ENVIRONMENT = {
    "GRPC_VERBOSITY": "ERROR",        # gRPC's C core: no INFO/WARNING chatter (keepalive GOAWAYs, fork notes)
    "GRPC_ENABLE_FORK_SUPPORT": "0",  # ... nor its fork-handler warnings in Ray's worker processes
    "GLOG_minloglevel": "2",          # Milvus Lite's and Ray's C++ parts: errors only
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
"""What the C/C++ libraries read from the environment at start (set only where the user has not chosen)."""

DEBUG_ENV = "EMBEDDER_DEBUG"
"""Set to ``1`` by ``embedder --debug``: Ray's worker processes, started from the CLI, inherit it."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def quiet_environment(debug: bool) -> None:
    """Tell the C/C++ libraries of this process, and of the processes it starts, how much to say."""
    if debug:
        os.environ[DEBUG_ENV] = "1"
        return
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def quiet_loggers(debug: bool | None = None) -> None:
    """Python loggers of this process: third-party ones at WARNING unless ``debug`` (default: ``$EMBEDDER_DEBUG``);
    this project's at DEBUG with it, INFO without."""
    debug = debug_enabled() if debug is None else debug
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("embedder").setLevel(logging.DEBUG if debug else logging.INFO)


def configure(debug: bool) -> None:
    """The CLI's logging: one plain format, quiet third parties, and the environment its children inherit."""
    quiet_environment(debug)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if debug
                        else "embedder: %(levelname)s: %(message)s")
    quiet_loggers(debug)
