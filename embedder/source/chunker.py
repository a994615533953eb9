"""Split a document's text into chunks at natural boundaries: paragraphs, then sentences, then words.

The splitting is done by ``semantic-text-splitter`` (a Rust library: see docs/chunking.md for why this one), sized
in characters: the job's token estimate is characters ÷ ``embedding.chars_per_token``, so a chunk of
``max_tokens`` holds at most ``max_tokens × chars_per_token`` characters. A chunk is a character range of the text,
in Python string offsets: ``text[start:end]`` is exactly what is embedded. The chunks cover the text in order;
between two chunks there is whitespace only (the splitter trims it), and with overlap consecutive chunks share
text. The same text and sizes give the same chunks in every process: a chunk depends on its document alone.
"""

from __future__ import annotations

import functools

from semantic_text_splitter import TextSplitter


@functools.lru_cache(maxsize=16)
def _splitter(max_chars: int, overlap_chars: int) -> TextSplitter:
    return TextSplitter(max_chars, overlap=overlap_chars, trim=True)


def split_text(text: str, max_chars: int, overlap_chars: int = 0) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: the chunks of ``text`` as Python string offsets (none for blank text)."""
    return [(start, start + len(chunk)) for start, chunk in _splitter(max_chars, overlap_chars).chunk_indices(text)]


def split_chunks(text: str, max_chars: int, overlap_chars: int = 0) -> list[tuple[int, str]]:
    """``[(start, chunk text), ...]``: as :func:`split_text`, with each chunk's text (``text[start:start + len]``)."""
    return _splitter(max_chars, overlap_chars).chunk_indices(text)
