"""Where a location lives: one resolver from a path or URI to a ``pyarrow.fs`` filesystem, for every stage.

A location is a local path (made absolute), ``file:///...``, or a URI such as ``s3://bucket/prefix`` or
``gs://bucket/prefix``. ``options`` are keyword arguments of the filesystem's constructor (for S3:
``endpoint_override``, ``region``, ``access_key``...); they apply to ``s3://`` and ``gs://`` locations only. For S3
the endpoint comes from ``options["endpoint_override"]``, then ``$AWS_ENDPOINT_URL_S3``, then
``$AWS_ENDPOINT_URL``; it may be written as a URL (``http://127.0.0.1:9000``).

S3 filesystems are built with pyarrow's own retries off (:data:`PYARROW_S3_ATTEMPTS`): a SlowDown, a 5xx or a
reset connection reaches :mod:`embedder.storage.retry`, which waits, retries and counts it (given explicitly,
``options["retry_strategy"]`` wins).

Remote filesystems are built once per process and options: building an ``S3FileSystem`` resolves credentials,
which is slow, and every shard of a job reads through the same one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from embedder.errors import ConfigError

_CACHE: dict[tuple[str, str], pafs.FileSystem] = {}
_CACHE_LOCK = threading.Lock()
_LOCAL = pafs.LocalFileSystem()
_SCHEMES = {"s3": "s3://", "gcs": "gs://", "hdfs": "hdfs://"}
PYARROW_S3_ATTEMPTS = 1
"""Tries of one S3 request inside pyarrow (the AWS SDK's standard strategy): 1, so our layer does the retrying."""


def resolve(location: str, options: Mapping[str, Any] | None = None, *,
            filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``location`` and the path within it (``s3://b/k`` → ``(S3FileSystem, "b/k")``).

    With ``filesystem`` the location is a path inside it (a URI's scheme is dropped). ``ConfigError`` when the
    location is empty or its filesystem cannot be opened.
    """
    if not location:
        raise ConfigError("empty path: a folder or URI is required")
    if filesystem is not None:
        path = strip_scheme(location) if "://" in location else location
        return filesystem, path.rstrip("/") or path
    scheme = urlsplit(location).scheme.lower() if "://" in location else ""
    if not scheme:
        return _LOCAL, os.path.abspath(os.path.expanduser(location))
    if scheme == "file":
        return _LOCAL, urlsplit(location).path
    try:
        fs, path = _remote(location, scheme, dict(options or {}))
    except (pa.ArrowException, ValueError, OSError, TypeError) as exc:
        raise ConfigError(f"cannot open {location}: {exc}") from exc
    return fs, path.rstrip("/") or path


def _remote(location: str, scheme: str, options: dict[str, Any]) -> tuple[pafs.FileSystem, str]:
    if scheme in ("s3", "s3a"):
        endpoint = (options.pop("endpoint_override", None) or os.environ.get("AWS_ENDPOINT_URL_S3")
                    or os.environ.get("AWS_ENDPOINT_URL"))
        if endpoint:  # Arrow wants host:port and a separate scheme; users write a URL
            parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
            options["endpoint_override"] = parts.netloc
            options.setdefault("scheme", parts.scheme)
        if not options:  # from_uri also finds the bucket's region, which S3FileSystem() would not
            bucket = urlsplit(location).netloc
            return _cached(f"s3:{bucket}", {}, lambda: _s3_in_region_of(bucket)), strip_scheme(location)
        return _cached("s3", options, lambda: pafs.S3FileSystem(**_without_retries(options))), strip_scheme(location)
    if scheme in ("gs", "gcs") and options:
        return _cached("gs", options, lambda: pafs.GcsFileSystem(**options)), strip_scheme(location)
    fs, path = pafs.FileSystem.from_uri(location)
    return fs, path


def _without_retries(options: dict[str, Any]) -> dict[str, Any]:
    return {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=PYARROW_S3_ATTEMPTS), **options}


def _s3_in_region_of(bucket: str) -> pafs.FileSystem:
    found = pafs.FileSystem.from_uri(f"s3://{bucket}")[0]
    return pafs.S3FileSystem(**_without_retries({"region": getattr(found, "region", None) or "us-east-1"}))


def _cached(key: str, options: Mapping[str, Any], make: Callable[[], pafs.FileSystem]) -> pafs.FileSystem:
    cache_key = (key, repr(sorted(options.items())))
    with _CACHE_LOCK:
        if cache_key not in _CACHE:
            _CACHE[cache_key] = make()
        return _CACHE[cache_key]


def strip_scheme(uri: str) -> str:
    """``s3://bucket/key?x`` → ``bucket/key``."""
    return uri.split("://", 1)[1].split("?", 1)[0]


def local_path(filesystem: pafs.FileSystem, path: str) -> str | None:
    """The operating-system path behind ``path`` when it is on local disk, else ``None``."""
    if isinstance(filesystem, pafs.LocalFileSystem):
        return path
    if isinstance(filesystem, pafs.SubTreeFileSystem):
        inner = local_path(filesystem.base_fs, filesystem.base_path)
        return None if inner is None else os.path.join(inner, path.lstrip("/"))
    return None


def uri(filesystem: pafs.FileSystem, path: str) -> str:
    """A printable location (no credentials: filesystems keep those apart from paths)."""
    return _SCHEMES.get(filesystem.type_name, "") + path


def join(*parts: str) -> str:
    """Join path parts with ``/`` (pyarrow paths use ``/`` on every filesystem)."""
    return "/".join(p.rstrip("/") for p in parts if p)
