"""Deterministic stand-in vectors: signed feature hashing of lower-cased words.

Each word (``\\w+``, lower-cased) is hashed with CRC-32 seeded by a per-model salt; the hash picks a bucket
(``h % dimensions``) and a sign (bit 31). A text's vector is the signed count of its words per bucket, as float32,
L2-normalised when ``normalized`` is true. Texts sharing words therefore get similar vectors, unrelated texts
nearly orthogonal ones, and the vector depends only on (model, text, dimensions, normalized) — never on the task,
so a query equal to a document's text finds that document.

Unlike the real Matryoshka models, a vector of 256 dimensions is not the prefix of the 1024-dimension one.

With ``late_chunking`` every input also gets ``0.25 ×`` the context of the request: the mean feature vector of the
inputs' text that lies within the first 8,192 tokens of their concatenation (the model's late-chunking cut; an
input that straddles the cut contributes the part before it, inputs after it nothing). So, as with the real API,
an input's vector depends on its neighbours in the request, and nothing past the cut shapes it. Whether the real
API refuses a longer request or cuts it silently is not documented; this stand-in cuts, and counts such requests
(``late_chunking_over_cut`` in ``/stats``) so a test can show a job never sends one.
"""

from __future__ import annotations

import base64
import itertools
import re
import zlib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from embedder.jina.models import model_spec
from embedder.mock_jina.tokens import count_tokens, truncate_text

WORD_RE = re.compile(r"\w+")
LATE_CHUNKING_WEIGHT = 0.25
_EMPTY_FEATURE = "\x00empty"  # never matched by \w+, so it cannot collide with a real word


class _WordHashes(dict[str, int]):
    """word -> CRC-32 seeded with the model's salt, computed on first use.

    A dict read through ``map(table.__getitem__, words)`` stays in C for every cached word: about five times
    faster than an ``lru_cache``d function. Word frequencies are Zipfian, so a bounded table answers nearly
    every lookup of a real corpus.
    """

    MAX_WORDS = 1 << 20

    def __init__(self, salt: int) -> None:
        super().__init__()
        self.salt = salt

    def __missing__(self, word: str) -> int:
        if len(self) >= self.MAX_WORDS:
            self.clear()
        value = self[word] = zlib.crc32(word.encode("utf-8"), self.salt)
        return value


@lru_cache(maxsize=64)
def _word_hashes(model: str) -> _WordHashes:
    return _WordHashes(zlib.crc32(model.encode("utf-8")))


def _features(model: str, texts: Sequence[str], dimensions: int) -> np.ndarray:
    """Unnormalised signed word counts, shape (len(texts), dimensions), float64."""
    table = _word_hashes(model)
    words = [WORD_RE.findall(t.lower()) or [_EMPTY_FEATURE] for t in texts]
    counts = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    flat = np.fromiter(map(table.__getitem__, itertools.chain.from_iterable(words)), dtype=np.int64,
                       count=int(counts.sum()))
    rows = np.repeat(np.arange(len(words), dtype=np.int64), counts)
    signs = 1.0 - 2.0 * (flat >> 31)
    index = rows * dimensions + flat % dimensions
    summed = np.bincount(index, weights=signs, minlength=len(words) * dimensions)
    return summed.reshape(len(words), dimensions)


def over_the_cut(model: str, texts: Sequence[str]) -> bool:
    """Whether a late-chunked request of ``texts`` goes past the model's cut."""
    return sum(count_tokens(t) for t in texts) > model_spec(model).late_chunking_max_tokens


def _late_chunking_context(model: str, texts: Sequence[str], features: np.ndarray, dimensions: int) -> np.ndarray:
    """Mean features of the part of the concatenation inside the model's token cut."""
    left = model_spec(model).late_chunking_max_tokens
    inside: list[np.ndarray] = []
    for text, own in zip(texts, features, strict=True):
        tokens = count_tokens(text)
        if tokens <= left:
            inside.append(own)
        elif left > 0:  # the input the cut falls in: only its text before the cut
            inside.append(_features(model, [truncate_text(text, left)], dimensions)[0])
        left -= tokens
        if left <= 0:
            break
    return np.mean(inside, axis=0)


def embed_texts(model: str, texts: Sequence[str], dimensions: int | None = None, normalized: bool = True,
                late_chunking: bool = False) -> np.ndarray:
    """The vectors the local server returns for ``texts``: float32 array of shape (len(texts), dimensions).

    ``dimensions=None`` means the model's default size. Texts are used as given: apply
    :func:`embedder.mock_jina.tokens.truncate_text` first to reproduce a ``truncate=true`` request.
    """
    dim = model_spec(model).dimensions_or_default(dimensions)
    if dim < 1:
        raise ValueError(f"dimensions must be at least 1, got {dim}")
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    vectors = _features(model, texts, dim)
    if late_chunking:
        vectors += LATE_CHUNKING_WEIGHT * _late_chunking_context(model, texts, vectors, dim)
    if normalized:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.where(norms > 0, norms, 1.0)
    return vectors.astype(np.float32)


def encode_base64(vector: np.ndarray) -> str:
    """What ``embedding_type=base64`` sends: base64 of the little-endian float32 bytes."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_base64(text: str) -> np.ndarray:
    """Inverse of :func:`encode_base64`."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)
