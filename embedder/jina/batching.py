"""Pure batching: estimate tokens from text length (calibrated by what the API bills) and pack requests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# No tokenizer packs more characters than this into one token on average; a text longer than
# max_tokens * this is over the model's limit for certain, so it is rejected without a request.
MAX_CHARS_PER_TOKEN = 16


class TokenEstimator:
    """Tokens ≈ characters / chars_per_token + per-input overhead; ``chars_per_token`` follows the API's bills.

    It starts pessimistic (3 characters a token: more tokens than most English text has) so the first requests stay
    under their budget, then moves toward what ``usage.total_tokens`` says with an exponential moving average.
    """

    def __init__(self, chars_per_token: float = 3.0, overhead: int = 2, smoothing: float = 0.3) -> None:
        self.chars_per_token = chars_per_token
        self.overhead = overhead
        self.smoothing = smoothing
        self.observations = 0

    def estimate_lengths(self, char_lengths: np.ndarray) -> np.ndarray:
        return np.ceil(np.asarray(char_lengths, dtype=np.float64) / self.chars_per_token).astype(np.int64) + \
            self.overhead

    def observe(self, chars: int, inputs: int, billed_tokens: int) -> None:
        """Fold in one response: ``chars`` characters in ``inputs`` inputs were billed ``billed_tokens``."""
        content_tokens = billed_tokens - self.overhead * inputs
        if chars <= 0 or content_tokens <= 0:
            return
        observed = min(max(chars / content_tokens, 0.5), 12.0)
        weight = 1.0 if self.observations == 0 else self.smoothing
        self.chars_per_token += weight * (observed - self.chars_per_token)
        self.observations += 1


def plan_batches(token_counts: Sequence[int] | np.ndarray, max_inputs: int, max_tokens: int) -> list[tuple[int, int]]:
    """Split items ``0..n`` into contiguous ``(start, end)`` ranges of at most ``max_inputs`` items and about
    ``max_tokens`` estimated tokens (an item larger than ``max_tokens`` alone gets a range of its own)."""
    if max_inputs < 1 or max_tokens < 1:
        raise ValueError("max_inputs and max_tokens must be positive")
    batches: list[tuple[int, int]] = []
    start = 0
    batch_tokens = 0
    for end, tokens in enumerate(np.asarray(token_counts, dtype=np.int64).tolist()):
        if end > start and (end - start + 1 > max_inputs or batch_tokens + tokens > max_tokens):
            batches.append((start, end))
            start, batch_tokens = end, 0
        batch_tokens += tokens
    if len(token_counts) > start:
        batches.append((start, len(token_counts)))
    return batches
