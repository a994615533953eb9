"""The local server's token rule: deterministic, cheap, roughly one token per four characters of English.

    tokens(text) = 2 + number of matches of ``\\w{1,6}|[^\\w\\s]``

Every word is split into pieces of up to six word characters, every punctuation character is one token, and
two tokens are added per input (the real tokenizers add a start and an end token). Jina's real tokenizers
(XLM-RoBERTa for v3) are not shipped here; a client must calibrate its estimate from ``usage.total_tokens``
anyway, and this rule gives it something realistic to calibrate against.
"""

from __future__ import annotations

import re

TOKEN_RE = re.compile(r"\w{1,6}|[^\w\s]")
SPECIAL_TOKENS = 2
"""Added to every input, like the start and end tokens of a real tokenizer."""


def count_tokens(text: str) -> int:
    """Tokens of one input under the local rule."""
    return SPECIAL_TOKENS + TOKEN_RE.subn("", text)[1]  # subn counts without building the match strings


def truncate_text(text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` that counts at most ``max_tokens`` tokens (what ``truncate=true`` keeps)."""
    keep = max_tokens - SPECIAL_TOKENS
    if keep <= 0:
        return ""
    end = 0
    for n, match in enumerate(TOKEN_RE.finditer(text), start=1):
        end = match.end()
        if n == keep:
            return text[:end]
    return text
