"""A local, Jina-compatible embeddings server for tests, benchmarks and the offline demo.

It is a stand-in for development, not the real API: same endpoints, validation, error bodies, rate limits and
(configurable) faults, with deterministic hashed-word vectors. See ``docs/mock-jina.md``.

    embedder mock-jina --port 0 --rpm 500 --tpm 1000000 --max-concurrency 5

Public pieces: :func:`embedder.mock_jina.vectors.embed_texts` (the vectors it returns),
:func:`embedder.mock_jina.tokens.count_tokens` (its token rule) and
:class:`embedder.mock_jina.testing.MockJinaServer` (run it in a subprocess from Python).

May import: ``embedder.jina.models`` (the models' limits), ``embedder.errors``. Imported only by the CLI
(``embedder mock-jina``, the demo), ``embedder.testing``, the tests and the benchmarks: never by the job.
"""

from __future__ import annotations
