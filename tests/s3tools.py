"""moto's S3 server on a loopback port (in a subprocess), an ``S3FileSystem`` on it, and the environment of a run
that uses it. Shared by the storage-fault tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
from jobtools import PYTHON, wait_for

from embedder.testing import free_port, kill_process_group

S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """moto's S3 server; yields its endpoint URL (``http://127.0.0.1:<port>``)."""
    port = free_port()
    log = open(log_dir / "moto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **S3_ENV})
    try:
        wait_for(lambda: _port_open(port) or proc.poll() is not None, timeout=60, what="moto to listen")
        assert proc.poll() is None, (log_dir / "moto.log").read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        kill_process_group(proc.pid, grace_s=5)
        log.close()


def s3_filesystem(endpoint: str, *, retries: int = 3) -> pafs.S3FileSystem:
    """A client of ``endpoint`` (with pyarrow's own retries, for the test's set-up and checks)."""
    return pafs.S3FileSystem(access_key="test", secret_key="test", region="us-east-1",
                             endpoint_override=endpoint.removeprefix("http://"), scheme="http",
                             allow_bucket_creation=True,
                             retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=retries))
