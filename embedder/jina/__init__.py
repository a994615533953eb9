"""The provider: Jina AI's embeddings API, and the pymilvus-style function built on it.

    models.py     the models' limits and the API's constants (base URL, key variables, embedding types)
    client.py     one request: its body, its typed errors, base64 decoding, retries with backoff
    batching.py   pure packing of texts into requests by inputs and estimated tokens
    embedding.py  any number of texts through one client: batches, concurrency, splitting, per-row failures
    function.py   ``JinaEmbeddingFunction``, the synchronous API of pymilvus' class of the same name

Nothing here knows about jobs, shards or Ray: a request gate (the job's rate limiter) is handed in.

May import: ``embedder.errors``, httpx, numpy.
"""

from __future__ import annotations
