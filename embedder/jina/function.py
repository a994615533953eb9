"""``JinaEmbeddingFunction``: the synchronous API pymilvus users know, on the batching, retrying async client.

Same constructor and methods as ``pymilvus.model.dense.JinaEmbeddingFunction`` (``model_name``, ``api_key``,
``task``, ``dimensions``, ``late_chunking``; ``encode_documents``, ``encode_queries``, ``__call__``, ``dim``), plus
``api_base``, ``timeout`` and batching options. Long lists are split into requests transparently.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import numpy as np

from embedder.errors import InputRejected
from embedder.jina.client import EmbedOptions, JinaClient, RetryPolicy
from embedder.jina.embedding import Embedder
from embedder.jina.windows import (
    DEFAULT_CHARS_PER_TOKEN,
    LATE_CHUNKING_MARGIN,
    WINDOW_OVERLAP_CHUNKS,
    plan_document,
)

T = TypeVar("T")


class _LoopThread:
    """A private event loop in a daemon thread, so the sync API works inside notebooks that run a loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="embedder-jina-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)


class JinaEmbeddingFunction:
    """Embeds texts with Jina AI's embeddings API; returns a list of float32 numpy vectors."""

    def __init__(self, model_name: str = "jina-embeddings-v3", api_key: str | None = None,
                 task: str = "retrieval.passage", dimensions: int | None = None, late_chunking: bool = False,
                 *, api_base: str | None = None, timeout: float = 120.0, batch_size: int | None = None,
                 max_tokens_per_request: int | None = None, concurrency: int = 4, normalized: bool = True,
                 truncate: bool = False, embedding_type: str = "base64", max_attempts: int = 8,
                 **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        self.model_name = model_name
        self.task = task
        self.dimensions = dimensions
        self.late_chunking = late_chunking
        self._options = EmbedOptions(model=model_name, task=task, dimensions=dimensions, normalized=normalized,
                                     truncate=truncate, late_chunking=late_chunking, embedding_type=embedding_type)
        self._loop = _LoopThread()
        self._client = JinaClient(api_key, api_base=api_base, timeout=timeout,
                                  retry=RetryPolicy(max_attempts=max_attempts))
        self._batching = {"max_inputs": batch_size, "max_tokens_per_request": max_tokens_per_request,
                          "concurrency": concurrency}
        self._embedders: dict[str | None, Embedder] = {}
        self._dim: int | None = dimensions if self._options.spec.accepts_v3_fields else None
        self.last_usage_tokens = 0

    def __repr__(self) -> str:
        return (f"JinaEmbeddingFunction(model_name={self.model_name!r}, task={self.task!r}, "
                f"dimensions={self.dimensions!r}, api_base={self._client.api_base!r})")

    @property
    def dim(self) -> int:
        """Vector size: the configured ``dimensions``, else learnt from one small request (as the seed does)."""
        if self._dim is None:
            self._dim = int(self._encode(["dim probe"], self.task)[0].shape[0])
        return self._dim

    def encode_queries(self, queries: Sequence[str]) -> list[np.ndarray]:
        return self._encode(queries, "retrieval.query")

    def encode_documents(self, documents: Sequence[str]) -> list[np.ndarray]:
        return self._encode(documents, "retrieval.passage")

    def __call__(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._encode(texts, self.task)

    def close(self) -> None:
        """Close the connections and stop the private event loop."""
        self._loop.run(self._client.aclose())
        self._loop.stop()

    def __enter__(self) -> JinaEmbeddingFunction:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _embedder(self, task: str | None) -> Embedder:
        if task not in self._embedders:
            spec = self._options.spec
            options = self._options
            if spec.accepts_v3_fields and (spec.tasks is None or task in spec.tasks):
                options = EmbedOptions(**{**options.__dict__, "task": task})
            self._embedders[task] = Embedder(self._client, options, **self._batching)  # type: ignore[arg-type]
        return self._embedders[task]

    def _encode(self, texts: Sequence[str], task: str | None) -> list[np.ndarray]:
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        if not texts:
            return []
        embedder = self._embedder(task)
        if self.late_chunking:  # the call's texts are the chunks of one document, as in the seed's single request
            plan = plan_document([len(text) for text in texts], chars_per_token=DEFAULT_CHARS_PER_TOKEN,
                                 budget=int(self._options.spec.late_chunking_max_tokens * LATE_CHUNKING_MARGIN),
                                 overlap=WINDOW_OVERLAP_CHUNKS, max_inputs=embedder.max_inputs)
            sent = self._loop.run(embedder.embed([texts[i] for i in plan.order], plan.groups))
            result = sent.picked(plan.picks, plan.order)
        else:
            result = self._loop.run(embedder.embed(list(texts)))
        self.last_usage_tokens = result.tokens
        if result.failures:
            first = result.failures[0]
            more = f" (and {len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
            raise InputRejected(f"input {first.index} was not embedded: {first.reason}{more}")
        if self._dim is None:
            self._dim = int(result.vectors.shape[1])
        return list(result.vectors)
