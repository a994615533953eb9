"""A shard's rows as documents and chunks: what gets embedded, and what each output row will say.

Three shapes of input, one structure:

- **rows** (no ``[chunking]``, no ``source.document_column``): each row is a document of one chunk, its whole text.
  The output has a row per input row, keyed by the row's id (the shape before documents existed).
- **chunking** (``[chunking]``): each row is a document; its text is split at natural boundaries
  (:mod:`.chunker`). Chunk ``k`` of document ``d`` gets the id ``"<d>#<k>"``; its offsets are Python string
  offsets into the document's text.
- **pre-chunked** (``source.document_column``): each row is a chunk; consecutive rows with the same document value
  form a document, ordered by ``source.chunk_order_column`` (else by input order). A chunk keeps its row's id; its
  offsets are those of its text in the document's chunks joined end to end.

A document that cannot be embedded at all (an empty text, more chunks than allowed) is refused here, before any
request, with a reason naming the document and the field.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedder.config import JobConfig
from embedder.source.chunker import split_chunks

CHUNK_ID_SEPARATOR = "#"
"""Chunk ids are ``<document id>#<chunk index>`` (for example ``doc-7#0``, ``doc-7#1``)."""


def chunk_id(document_id: object, index: int) -> str:
    return f"{document_id}{CHUNK_ID_SEPARATOR}{index}"


@dataclass
class DocumentFailure:
    """A document refused before any request."""

    document: int
    """Index of the document in :attr:`Documents.doc_ids`."""
    reason: str
    error_class: str


@dataclass
class Documents:
    """A shard's documents and their chunks, in input order. Per-chunk arrays are aligned."""

    doc_ids: pa.Array
    """Each document's id, in the source's type."""
    doc_rows: np.ndarray
    """Each document's first row in the shard's table (its ``_row`` is the file row named in messages)."""
    texts: list[str]
    """Each chunk's text: exactly what is embedded."""
    chunk_doc: np.ndarray
    """Each chunk's document (index into ``doc_ids``)."""
    chunk_index: np.ndarray
    chunk_start: np.ndarray
    chunk_end: np.ndarray
    chunk_rows: np.ndarray
    """Each chunk's row in the shard's table (where its passthrough values come from)."""
    ids: pa.Array
    """Each chunk's output id."""
    hashes: list[str | None]
    """Each document's content: what its ``content_hash`` is made of (``None`` for a refused document)."""
    failures: list[DocumentFailure] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.doc_ids)

    def ranges(self) -> list[tuple[int, int]]:
        """Each document's chunks as a ``(start, end)`` range of the per-chunk arrays."""
        bounds = np.searchsorted(self.chunk_doc, np.arange(self.count + 1))
        return [(int(bounds[d]), int(bounds[d + 1])) for d in range(self.count)]


def build_documents(rows: pa.Table, config: JobConfig) -> Documents:
    """The documents of a shard's rows (``id``, ``text``, the document columns, ``_row``) under ``config``."""
    if config.source.document_column is not None:
        return _prechunked(rows, config)
    if config.chunking is not None:
        return _chunked(rows, config)
    return _as_rows(rows)


def _as_rows(rows: pa.Table) -> Documents:
    n = rows.num_rows
    texts = rows.column("text").to_pylist()
    everything = np.arange(n, dtype=np.int64)
    return Documents(doc_ids=rows.column("id").combine_chunks(), doc_rows=everything, texts=texts,
                     chunk_doc=everything, chunk_index=np.zeros(n, np.int32),
                     chunk_start=np.zeros(n, np.int64),
                     chunk_end=np.fromiter((len(t or "") for t in texts), np.int64, n), chunk_rows=everything,
                     ids=rows.column("id").combine_chunks(), hashes=texts)


def _chunked(rows: pa.Table, config: JobConfig) -> Documents:
    assert config.chunking is not None
    chunking, per_token = config.chunking, config.embedding.chars_per_token
    max_chars, overlap = chunking.max_chars(per_token), chunking.overlap_chars(per_token)
    column = config.source.text_column or "text"
    doc_ids = rows.column("id").combine_chunks()
    builder = _ChunkBuilder()
    hashes: list[str | None] = []
    failures: list[DocumentFailure] = []
    for number, text in enumerate(rows.column("text").to_pylist()):
        document = doc_ids[number].as_py()
        spans = split_chunks(text, max_chars, overlap) if text else []
        if not spans:
            failures.append(DocumentFailure(number, f"document {document!r}: text ({column}) is empty", "EmptyText"))
        elif len(spans) > chunking.max_chunks_per_document:
            failures.append(DocumentFailure(number, f"document {document!r} yields {len(spans):,} chunks, more than "
                                            f"chunking.max_chunks_per_document = {chunking.max_chunks_per_document:,}",
                                            "TooManyChunks"))
        else:
            builder.add_split(number, document, spans)
        hashes.append(None if failures and failures[-1].document == number else text)
    return builder.finish(doc_ids, np.arange(rows.num_rows, dtype=np.int64), hashes, failures, ids=None)


def _prechunked(rows: pa.Table, config: JobConfig) -> Documents:
    source = config.source
    values = rows.column("_document").combine_chunks()
    n = rows.num_rows
    starts = _run_starts(values)
    ends = [*starts[1:], n] if starts else []
    order = _chunk_order(rows, starts, ends)
    texts_in = rows.column("text").to_pylist()
    builder = _ChunkBuilder()
    hashes: list[str | None] = []
    failures: list[DocumentFailure] = []
    for number, (first, last) in enumerate(zip(starts, ends, strict=True)):
        members = order[first:last]
        document = values[int(first)].as_py()
        chunk_texts = [texts_in[i] for i in members]
        empty = next((i for i in members if not (texts_in[i] or "").strip()), None)
        if empty is not None:
            failures.append(DocumentFailure(number, f"document {document!r}: a chunk's text ({source.text_column}) "
                                            f"is empty (row id {rows.column('id')[int(empty)].as_py()!r})",
                                            "EmptyText"))
            hashes.append(None)
            continue
        offsets = np.cumsum([0, *(len(t) for t in chunk_texts)])
        spans = list(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True))
        builder.add(number, document, "".join(chunk_texts), spans, members)
        hashes.append("\x1f".join(chunk_texts))
    ids = rows.column("id").combine_chunks().take(pa.array(builder.rows, pa.int64()))  # a chunk keeps its row's id
    return builder.finish(values.take(pa.array(starts, pa.int64())), np.asarray(starts, np.int64), hashes, failures,
                          ids=ids)


def _run_starts(values: pa.Array) -> list[int]:
    """Where each run of equal document values starts (the reader made a document's rows contiguous)."""
    if len(values) == 0:
        return []
    changed = pc.not_equal(values.slice(1), values.slice(0, len(values) - 1)).to_numpy(zero_copy_only=False)
    return [0, *(np.flatnonzero(changed) + 1).tolist()]


def _chunk_order(rows: pa.Table, starts: list[int], ends: list[int]) -> np.ndarray:
    """Row positions in chunk order: each document's rows sorted by the order column (stable), else as read."""
    order = np.arange(rows.num_rows)
    if "_chunk_order" not in rows.column_names:
        return order
    column = rows.column("_chunk_order")
    if pa.types.is_string(column.type):  # CSV reads every column as text: order "10" after "9", not after "1"
        with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
            column = pc.cast(column, pa.int64())
    keys = column.to_numpy(zero_copy_only=False)
    for first, last in zip(starts, ends, strict=True):
        order[first:last] = first + np.argsort(keys[first:last], kind="stable")
    return order


class _ChunkBuilder:
    """Collects chunks document by document into the aligned arrays of :class:`Documents`."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.docs: list[int] = []
        self.index: list[int] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.rows: list[int] = []
        self.chunk_ids: list[str] = []

    def add(self, number: int, document: object, text: str, spans: list[tuple[int, int]],
            rows: np.ndarray | int) -> None:
        """Document ``number``'s chunks: ``spans`` of ``text``, from ``rows`` (one row for all, or one each)."""
        members = rows if isinstance(rows, np.ndarray) else [rows] * len(spans)
        for k, ((start, end), row) in enumerate(zip(spans, members, strict=True)):
            self.texts.append(text[start:end])
            self.docs.append(number)
            self.index.append(k)
            self.starts.append(start)
            self.ends.append(end)
            self.rows.append(int(row))
            self.chunk_ids.append(chunk_id(document, k))

    def add_split(self, number: int, document: object, chunks: list[tuple[int, str]]) -> None:
        """Document ``number`` (one row) as the splitter cut it: ``(start, text)`` per chunk."""
        for k, (start, text) in enumerate(chunks):
            self.texts.append(text)
            self.docs.append(number)
            self.index.append(k)
            self.starts.append(start)
            self.ends.append(start + len(text))
            self.rows.append(number)
            self.chunk_ids.append(f"{document}{CHUNK_ID_SEPARATOR}{k}")

    def finish(self, doc_ids: pa.Array, doc_rows: np.ndarray, hashes: list[str | None],
               failures: list[DocumentFailure], *, ids: pa.Array | None) -> Documents:
        return Documents(doc_ids=doc_ids, doc_rows=doc_rows, texts=self.texts,
                         chunk_doc=np.asarray(self.docs, np.int64), chunk_index=np.asarray(self.index, np.int32),
                         chunk_start=np.asarray(self.starts, np.int64), chunk_end=np.asarray(self.ends, np.int64),
                         chunk_rows=np.asarray(self.rows, np.int64),
                         ids=ids if ids is not None else pa.array(self.chunk_ids, pa.string()),
                         hashes=hashes, failures=failures)


def document_hash(content: str, content_key: str) -> str:
    """A stable hash of what was embedded with the fields that shape its vectors: equal hash, equal vectors."""
    key = content_key.encode()[:64]
    return hashlib.blake2b(content.encode("utf-8", "surrogatepass"), digest_size=16, key=key).hexdigest()
