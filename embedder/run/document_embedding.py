"""Embed a shard's documents: every chunk a vector, or the document dead-lettered whole.

Without late chunking every chunk is an independent input, and chunks of many documents share requests. With
late chunking a request holds the chunks of one document only: the whole document when it fits the API's cut,
else windows of consecutive chunks (:mod:`embedder.jina.windows`), each chunk's vector taken from one window. Either
way a chunk's vector depends on its document and the configuration alone.

A document is written whole or not at all: when any of its chunks (or windows) fails, the document goes to the
dead letters once, with the first reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from embedder.jina.embedding import Embedder, EmbedResult, Observer, RowFailure
from embedder.jina.windows import plan_document
from embedder.source.documents import Documents

DocumentObserver = Callable[[int, list[tuple[int, str]]], None]
"""Told each outcome as it comes: ``(chunks embedded, [(document index, reason), ...] dead-lettered)``."""


@dataclass(frozen=True)
class LateChunking:
    """How a document longer than one request is cut into windows."""

    chars_per_token: float
    budget: int
    """Estimated tokens one window may hold."""
    overlap: int
    """Chunks consecutive windows share."""


@dataclass
class DocumentVectors:
    """Per chunk a vector; per document whether it is written, or why not."""

    vectors: np.ndarray
    written: np.ndarray
    """Per document: all its chunks have vectors."""
    failures: dict[int, tuple[str, str]] = field(default_factory=dict)
    """Document index -> (reason, error class)."""
    result: EmbedResult | None = None
    """What the requests cost (``None`` when nothing was sent)."""


async def embed_documents(embedder: Embedder, documents: Documents, skip: np.ndarray,
                          late: LateChunking | None, observe: DocumentObserver | None = None) -> DocumentVectors:
    """Vectors for the chunks of every document not refused already and not in ``skip`` (a boolean per document:
    an incremental run's unchanged documents, whose vectors are copied). ``observe`` hears of each outcome."""
    failures = {f.document: (f.reason, f.error_class) for f in documents.failures}
    if observe is not None and failures:
        observe(0, [(document, reason) for document, (reason, _) in failures.items()])
    ranges = documents.ranges()
    send = [d for d in range(documents.count) if d not in failures and not skip[d]]
    chunks = np.zeros((len(documents.texts), embedder.dimensions), dtype=np.float32)
    sent_ok = np.zeros(len(documents.texts), dtype=bool)
    result = None
    if send:
        if late is None:
            owners = [i for d in send for i in range(*ranges[d])]
            result = await embedder.embed([documents.texts[i] for i in owners],
                                          observe=_by_document(observe, documents, owners))
        else:
            result, owners = await _late(embedder, documents, ranges, send, late, observe)
        if result.vectors.shape[1] != chunks.shape[1]:  # a model not in the registry: its answer tells the size
            chunks = np.zeros((len(documents.texts), result.vectors.shape[1]), dtype=np.float32)
        chunks[owners] = result.vectors
        sent_ok[owners] = result.ok
        chunk_doc = documents.chunk_doc
        for failure in result.failures:
            failures.setdefault(int(chunk_doc[owners[failure.index]]), (failure.reason, failure.error_class))
    written = np.array([d not in failures and not skip[d] for d in range(documents.count)], dtype=bool)
    return DocumentVectors(chunks, written, failures, result)


def _by_document(observe: DocumentObserver | None, documents: Documents,
                 chunks: Sequence[int]) -> Observer | None:
    """The embedder's observer for texts that are ``chunks`` (global chunk indices), told per document."""
    if observe is None:
        return None
    chunk_doc = documents.chunk_doc

    def seen(ok: int, failures: Sequence[RowFailure]) -> None:
        observe(ok, [(int(chunk_doc[chunks[f.index]]), f.reason) for f in failures])
    return seen


async def _late(embedder: Embedder, documents: Documents, ranges: list[tuple[int, int]], send: list[int],
                late: LateChunking, observe: DocumentObserver | None) -> tuple[EmbedResult, list[int]]:
    """One request per window of one document; the result per chunk (``owners``: the chunks, in order)."""
    order: list[int] = []  # the chunk (global index) at each position of the flattened requests
    groups: list[tuple[int, int]] = []
    picks: list[int] = []
    for d in send:
        start, end = ranges[d]
        plan = plan_document([len(documents.texts[i]) for i in range(start, end)],
                             chars_per_token=late.chars_per_token, budget=late.budget, overlap=late.overlap,
                             max_inputs=embedder.max_inputs, offset=len(order))
        order.extend(start + i for i in plan.order)
        groups.extend(plan.groups)
        picks.extend(plan.picks)
    sent = await embedder.embed([documents.texts[i] for i in order], groups, _by_document(observe, documents, order))
    owners = [i for d in send for i in range(*ranges[d])]
    position_of = {chunk: n for n, chunk in enumerate(owners)}
    return sent.picked(picks, [position_of[chunk] for chunk in order]), owners
