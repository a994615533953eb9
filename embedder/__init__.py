"""embedder: distributed, rate-limited, resumable batch embedding with Jina AI's embeddings API on Ray."""

from embedder.errors import (
    ConfigError,
    EmbedderError,
    FatalError,
    InputError,
    InputRejected,
    JinaError,
    LedgerError,
    PermanentError,
    RateLimited,
    ResponseMismatch,
    SinkError,
    TransientError,
    ValidationError,
)
from embedder.jina.client import EmbeddingResponse, EmbedOptions, JinaClient, RetryPolicy
from embedder.jina.embedding import Embedder, EmbedResult, RowFailure
from embedder.jina.function import JinaEmbeddingFunction

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EmbedOptions",
    "EmbedResult",
    "Embedder",
    "EmbedderError",
    "EmbeddingResponse",
    "FatalError",
    "InputError",
    "InputRejected",
    "JinaClient",
    "JinaEmbeddingFunction",
    "JinaError",
    "LedgerError",
    "PermanentError",
    "RateLimited",
    "ResponseMismatch",
    "RetryPolicy",
    "RowFailure",
    "SinkError",
    "TransientError",
    "ValidationError",
    "__version__",
]
