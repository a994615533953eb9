"""The one place that decides what a storage failure means: worth retrying, or a reason to stop.

Everything that reads or writes files goes through :mod:`embedder.storage.retry`, which calls :func:`translate`
on what pyarrow or the operating system raised:

* ``OSError`` with an ``errno``: not found (``ENOENT``), access denied (``EACCES``, ``EPERM``), no space left
  (``ENOSPC``, ``EDQUOT``), a read-only filesystem (``EROFS``) are **permanent**; ``ECONNRESET``, ``ETIMEDOUT``,
  ``EPIPE``, ``EAGAIN``... are **transient**.
* the S3 errors pyarrow raises: an ``OSError`` whose text is ``AWS Error <NAME> during <Op> operation: ...``
  (``arrow/filesystem/s3_internal.h``), with ``<NAME>`` one of the AWS SDK's ``S3Errors`` (``SLOW_DOWN``,
  ``NETWORK_CONNECTION``, ``ACCESS_DENIED``, ``NO_SUCH_KEY``...), or ``UNKNOWN (HTTP status 503)`` for a status
  the SDK has no name for. 5xx, SlowDown, throttling, network and timeout errors are **transient**; not found,
  access denied, bad credentials are **permanent**. pyarrow also says ``Path does not exist`` (an
  ``FileNotFoundError``) for a missing key: permanent.
* ``pyarrow.ArrowInvalid`` (a file that is not what it should be: a truncated Parquet footer, an invalid path) is
  **permanent**, unless its text is one of the transient S3 errors above (pyarrow passes some through).

Anything not recognised is permanent: retrying an error nobody understood hides it for minutes.
"""

from __future__ import annotations

import errno
import re

import pyarrow as pa

from embedder.errors import StorageError, StoragePermanent, StorageTransient

PERMANENT_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                              errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.EFBIG, errno.ENAMETOOLONG})
TRANSIENT_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT,
                              errno.EPIPE, errno.EAGAIN, errno.EINTR, errno.EHOSTUNREACH, errno.ENETUNREACH,
                              errno.ENETDOWN, errno.ENETRESET, errno.EBUSY})
TRANSIENT_S3 = frozenset({"SLOW_DOWN", "THROTTLING", "SERVICE_UNAVAILABLE", "INTERNAL_FAILURE", "NETWORK_CONNECTION",
                          "REQUEST_TIMEOUT", "REQUEST_TIME_TOO_SKEWED", "REQUEST_EXPIRED"})
"""S3 error names (as pyarrow prints them) worth retrying. Every other name is permanent."""
_AWS = re.compile(r"AWS Error (?P<name>\[code \d+\]|[A-Z_]+)(?: \(HTTP status (?P<status>\d+)\))?")
_TRANSIENT_TEXT = re.compile(r"(?i)connection reset|timed out|timeout|curl(?:Code)?: ?(?:28|52|55|56)\b|"
                             r"broken pipe|temporarily unavailable|please reduce your request rate|slow ?down")
_NOT_FOUND_TEXT = re.compile(r"(?i)path does not exist|no such file|not found")

_KINDS: dict[bool, type[StorageError]] = {True: StorageTransient, False: StoragePermanent}


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the operation that raised ``exc`` may succeed (see the module docstring)."""
    if isinstance(exc, StorageError):
        return exc.retryable
    text = str(exc)
    aws = _AWS.search(text)
    if aws is not None:
        status = int(aws.group("status") or 0)
        return aws.group("name") in TRANSIENT_S3 or status >= 500 or status in (408, 429)
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return False
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno in PERMANENT_ERRNOS:
            return False
        if exc.errno in TRANSIENT_ERRNOS:
            return True
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if _NOT_FOUND_TEXT.search(text):
        return False
    return bool(_TRANSIENT_TEXT.search(text))


def is_storage_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is about the storage (transient, missing, access denied, disk full...) rather than about
    the bytes read: readers turn the others into input errors and let these through to be retried or reported."""
    if is_transient(exc) or isinstance(exc, FileNotFoundError | PermissionError | StorageError):
        return True
    if isinstance(exc, OSError) and exc.errno in PERMANENT_ERRNOS:
        return True
    return _AWS.search(str(exc)) is not None


def describe(exc: BaseException) -> str:
    """The error's text without noise: the exception's own words, and ``ENOSPC``-style names for an errno."""
    if isinstance(exc, StorageError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{exc.strerror} ({name})"
    return str(exc) or type(exc).__name__


def translate(exc: BaseException, operation: str, path: str, *, attempts: int = 1) -> StorageError:
    """``exc`` (an ``OSError``, a ``pyarrow.ArrowException``...) as a :class:`StorageTransient` or a
    :class:`StoragePermanent` whose message names the operation and the path."""
    if isinstance(exc, StorageError) and exc.operation and exc.path:
        return exc
    transient = is_transient(exc)
    reason = describe(exc)
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    kind = "transient" if transient else "permanent"
    message = f"storage {operation} failed for {path}{tried}: {reason} ({kind})"
    return _KINDS[transient](message, operation=operation, path=path, reason=reason, attempts=attempts)


STORAGE_FAILURES: tuple[type[BaseException], ...] = (OSError, pa.ArrowException)
"""What a storage call may raise that :func:`translate` understands."""
