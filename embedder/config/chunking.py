"""The ``[chunking]`` section: long documents split into chunks, each chunk embedded (absent: a vector per row)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from embedder.config.fields import Context, checked

if TYPE_CHECKING:
    from embedder.config.schema import EmbeddingConfig, SourceConfig


@dataclass(frozen=True, kw_only=True)
class ChunkingConfig:
    """``[chunking]``: split each row's text into chunks at natural boundaries (paragraphs, sentences, words)."""

    max_tokens: int = checked(512, ge=1)
    """Chunk size, in the job's token estimate (characters ÷ ``embedding.chars_per_token``)."""
    overlap_tokens: int = checked(0, ge=0)
    """Tokens that consecutive chunks share (must be less than ``max_tokens``)."""
    max_chunks_per_document: int = checked(10_000, ge=1)
    """A document that yields more chunks is dead-lettered with its id instead of flooding the run."""

    def max_chars(self, chars_per_token: float) -> int:
        return max(1, int(self.max_tokens * chars_per_token))

    def overlap_chars(self, chars_per_token: float) -> int:
        return int(self.overlap_tokens * chars_per_token)


DOCUMENT_COLUMNS = ("doc_id", "chunk_index", "chunk_start", "chunk_end")
"""Columns the output gains when it holds chunks (chunking, or pre-chunked input): no passthrough may take them."""


def check_documents(chunking: ChunkingConfig | None, source: SourceConfig, embedding: EmbeddingConfig,
                    ctx: Context) -> None:
    """The rules that tie chunking, pre-chunked input and late chunking together; messages name the key."""
    if chunking is not None:
        if source.document_column is not None:
            raise ctx.invalid("source.document_column", "the input is already chunked (one row per chunk), so "
                              "it takes no [chunking] table; remove one of them")
        limit = embedding.spec.max_tokens
        if chunking.max_tokens > limit:
            raise ctx.invalid("chunking.max_tokens", f"{embedding.model} takes at most {limit:,} tokens per input, "
                              f"got {chunking.max_tokens:,}")
        if chunking.overlap_tokens >= chunking.max_tokens:
            raise ctx.invalid("chunking.overlap_tokens", f"must be less than chunking.max_tokens "
                              f"({chunking.max_tokens:,}), got {chunking.overlap_tokens:,}")
        if embedding.late_chunking and chunking.max_tokens > embedding.effective_window_tokens:
            raise ctx.invalid("chunking.max_tokens", f"with late chunking a chunk must fit one request window of "
                              f"{embedding.effective_window_tokens:,} tokens, got {chunking.max_tokens:,}")
    if source.chunk_order_column is not None and source.document_column is None:
        raise ctx.invalid("source.chunk_order_column", "orders the rows of a document: set source.document_column")
    cut = embedding.spec.late_chunking_max_tokens
    if embedding.late_chunking and embedding.window_tokens > cut:
        raise ctx.invalid("embedding.window_tokens", f"the API cuts a late-chunked request at {cut:,} tokens, got "
                          f"{embedding.window_tokens:,}")
    if chunking is not None or source.document_column is not None:
        for column in source.passthrough:
            if column in DOCUMENT_COLUMNS:
                raise ctx.invalid("source.passthrough", f"column '{column}' is a name the output of chunks reserves "
                                  f"({', '.join(DOCUMENT_COLUMNS)})")
