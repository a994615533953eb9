"""The error tree. Whether an error is retried is part of its type, never read from its message.

    EmbedderError
    ├── ConfigError                 bad job file / option; names the key
    ├── InputError                  bad input data; names the file, column or row
    ├── LedgerError                 checkpoint refused (fingerprint mismatch, unreadable ledger)
    ├── SinkError                   a destination refused the data or its schema
    ├── TooManyFailures             more than limits.max_failed_fraction of the rows were dead-lettered
    ├── StorageError                a file or object could not be read or written; names the operation and path
    │   ├── StorageTransient        retried: 5xx, SlowDown, throttling, resets, timeouts
    │   └── StoragePermanent        stops the job: not found, access denied, no space left, invalid data
    └── JinaError                   anything that went wrong talking to the embeddings API
        ├── TransientError          retried: 5xx, HTML bodies, timeouts, connection errors, malformed bodies
        │   └── RateLimited         429; carries the limit kind and Retry-After
        └── PermanentError          never retried as is
            ├── InputRejected       400 about the input (too long, too many inputs)
            ├── FatalError          stop the whole job: auth (401), balance (402/403), unknown model
            │   └── EndpointError   not the embeddings API: 404/405, a 400 about the request, a 2xx of another shape
            └── ValidationError     422 / 400 about the request's fields: a configuration error

Every ``JinaError`` carries the HTTP status, Jina's ``code`` and ``detail`` when there was a response. None of
them ever holds the API key: messages are built from the response body and the request's non-secret fields only.
"""

from __future__ import annotations


class EmbedderError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(EmbedderError):
    """The job configuration is invalid; the message names the key."""


class InputError(EmbedderError):
    """The input data is invalid; the message names the file, the column or the row."""


class LedgerError(EmbedderError):
    """The checkpoint ledger cannot be used as asked (for example, another job's fingerprint)."""


class SinkError(EmbedderError):
    """A destination refused the data or its schema does not match the job."""


class TooManyFailures(EmbedderError):
    """More than ``limits.max_failed_fraction`` of the rows handled so far were dead-lettered: a systemic cause."""
class _KeepsFields(EmbedderError):
    """An error with fields of its own beyond the message: they survive Ray pickling it across processes."""

    def __reduce__(self):
        return (_rebuild, (type(self), str(self), self.__dict__.copy()))


class StorageError(_KeepsFields):
    """A storage operation failed (see :mod:`embedder.storage.errors`, the one place that decides which kind).

    ``operation`` is the named operation (``"part write"``, ``"shard read"``...), ``path`` the location shown to
    people, ``reason`` the underlying error's text, ``attempts`` how often it was tried."""

    retryable: bool = False

    def __init__(self, message: str, *, operation: str = "", path: str = "", reason: str = "",
                 attempts: int = 1) -> None:
        super().__init__(message)
        self.operation = operation
        self.path = path
        self.reason = reason
        self.attempts = attempts


class StorageTransient(StorageError):
    """Worth retrying after a backoff: 5xx, SlowDown / throttling, a reset connection, a timeout."""

    retryable = True


class StoragePermanent(StorageError):
    """Retrying cannot help: not found, access denied, no space left on the device, a file that is not valid."""


class JinaError(_KeepsFields):
    """A request to the embeddings API failed."""

    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 detail: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail
        self.request_id = request_id


def _rebuild(cls: type[_KeepsFields], message: str, state: dict) -> EmbedderError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class TransientError(JinaError):
    """Worth retrying after a backoff: 5xx, an HTML or malformed body, a timeout, a dropped connection."""

    retryable = True


class RateLimited(TransientError):
    """429: the key's request, token, concurrency or IP limit was exceeded."""

    def __init__(self, message: str, *, kind: str = "unknown", retry_after: float | None = None,
                 **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.kind = kind
        self.retry_after = retry_after


class PermanentError(JinaError):
    """Retrying the same request cannot succeed."""


class InputRejected(PermanentError):
    """The API rejected the request's input: an input too long, or too many inputs in one request."""


class FatalError(PermanentError):
    """The whole job must stop: the key is missing or invalid, the balance is gone, the model does not exist."""


class EndpointError(FatalError):
    """What answered is not the embeddings API as configured: a 404 or 405 (``api_base`` without ``/v1``, a proxy),
    a 400 about the request itself rather than one input, or a 2xx that is not an embeddings response. Never split,
    retried or dead-lettered: the message names the URL, the status and what to check."""


class ValidationError(PermanentError):
    """The request's fields are invalid for this model (422): a configuration error."""


class ResponseMismatch(TransientError):
    """A 200 response whose embeddings do not match the request (count, index or dimension)."""
