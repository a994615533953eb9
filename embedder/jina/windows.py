"""Late chunking for documents longer than one request: windows of consecutive chunks.

With late chunking the API embeds a request's inputs as one sequence and pools each input's span, so a chunk's
vector carries the context of the request. A request must therefore hold the chunks of one document only, in order,
and the API cuts the sequence at a fixed length (8,192 tokens for v3). A document that fits travels whole, in one
request; a longer one is embedded in windows of consecutive chunks that each fit, consecutive windows sharing
``overlap`` chunks. Each chunk's vector is taken from exactly one window: the one where it sits farthest from the
window's edges (the most context on both sides), the earlier window on a tie. This is the API-level form of the
"long late chunking" of Jina's paper (arXiv 2409.04701, §3.1).

Everything here is a pure function of the chunks' token estimates and the settings, so a chunk's vector depends on
its document and the configuration alone — never on shards, workers, retries or resumes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def plan_windows(tokens: Sequence[int], budget: int, overlap: int, max_inputs: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` chunk ranges: one range for a document whose chunks fit ``budget`` estimated tokens
    and ``max_inputs`` inputs, else greedy windows that fit, each starting up to ``overlap`` chunks before the
    previous window's end and always reaching past it. A chunk larger than ``budget`` gets a window of its own."""
    n = len(tokens)
    windows: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end, used = start, 0
        while end < n and end - start < max_inputs and (end == start or used + tokens[end] <= budget):
            used += tokens[end]
            end += 1
        windows.append((start, end))
        if end == n:
            break
        # the next window shares up to `overlap` chunks, but must reach past this one's end
        start = max(start + 1, end - overlap)
        while start < end and (sum(tokens[start:end + 1]) > budget or end + 1 - start > max_inputs):
            start += 1
    return windows


def choose_windows(count: int, windows: Sequence[tuple[int, int]]) -> list[int]:
    """For each of ``count`` chunks, the window its vector is taken from: the one where the chunk is farthest from
    the window's nearer edge, the earlier one on a tie."""
    chosen = [-1] * count
    margin = [-1] * count
    for number, (start, end) in enumerate(windows):
        for index in range(start, end):
            room = min(index - start, end - 1 - index)
            if room > margin[index]:
                chosen[index], margin[index] = number, room
    return chosen


SPECIAL_TOKENS_PER_INPUT = 2
"""Added to each chunk's estimate: tokenizers add tokens around every input."""
DEFAULT_CHARS_PER_TOKEN = 4.0
"""The token estimate where no job says otherwise (``embedding.chars_per_token``): about right for English."""
LATE_CHUNKING_MARGIN = 0.8
"""Share of the model's late-chunking cut a window fills by default: the token estimate is not the tokenizer."""
WINDOW_OVERLAP_CHUNKS = 2
"""Chunks consecutive windows share by default (``embedding.window_overlap_chunks``)."""


@dataclass(frozen=True)
class WindowPlan:
    """The requests of one document under late chunking, and where each chunk's vector comes from."""

    order: list[int]
    """The chunk sent at each position of the flattened requests (a chunk in two windows is sent twice)."""
    groups: list[tuple[int, int]]
    """Each request, as a ``(start, end)`` range of positions."""
    picks: list[int]
    """For each chunk, the position whose vector it takes."""


def plan_document(lengths: Sequence[int], *, chars_per_token: float, budget: int, overlap: int,
                  max_inputs: int, offset: int = 0) -> WindowPlan:
    """The windows of a document whose chunks have ``lengths`` characters; positions start at ``offset``."""
    tokens = [math.ceil(length / chars_per_token) + SPECIAL_TOKENS_PER_INPUT for length in lengths]
    windows = plan_windows(tokens, budget, overlap, max_inputs)
    order: list[int] = []
    groups: list[tuple[int, int]] = []
    first_position: list[int] = []
    for start, end in windows:
        first_position.append(offset + len(order))
        groups.append((offset + len(order), offset + len(order) + end - start))
        order.extend(range(start, end))
    chosen = choose_windows(len(lengths), windows)
    picks = [first_position[w] + (index - windows[w][0]) for index, w in enumerate(chosen)]
    return WindowPlan(order, groups, picks)
