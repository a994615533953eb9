"""Embed any number of texts through one :class:`JinaClient`: batches, concurrency, splitting, per-row failures.

Rows that cannot be embedded (empty text, an input the API rejects) become :class:`RowFailure` records with their
reason instead of failing everything; errors that concern the whole job (bad key, no balance, invalid request
fields) and transient errors that outlived their retries are raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from embedder.errors import FatalError, InputRejected, PermanentError, ResponseMismatch
from embedder.jina.batching import MAX_CHARS_PER_TOKEN, TokenEstimator, plan_batches
from embedder.jina.client import EmbedOptions, JinaClient

# Requests far above this many tokens take many seconds each and make the token rate lumpy; small enough to
# spread over a minute's quota, large enough that requests-per-minute rarely binds before tokens-per-minute.
DEFAULT_MAX_TOKENS_PER_REQUEST = 65_536


@dataclass(frozen=True)
class RowFailure:
    """One input that was not embedded, and why."""

    index: int
    reason: str
    error_class: str


Observer = Callable[[int, Sequence[RowFailure]], None]
"""Told each outcome as it comes: ``(inputs embedded, failures)`` — after each request, and for the inputs refused
before any request. The job's dead-letter budget listens (``embedder.run.budget``)."""


@dataclass
class EmbedResult:
    """Vectors in input order (zeros where ``ok`` is false), the failures, and what it cost."""

    vectors: np.ndarray
    ok: np.ndarray
    failures: list[RowFailure] = field(default_factory=list)
    tokens: int = 0
    requests: int = 0
    attempts: int = 0
    rate_limited: int = 0
    splits: int = 0

    def picked(self, picks: Sequence[int], owners: Sequence[int]) -> EmbedResult:
        """The result per item when items were sent at several positions (late chunking: a chunk in two windows):
        item ``i`` takes the vector at position ``picks[i]``; ``owners[p]`` is the item sent at position ``p``, and
        a failure at any of an item's positions fails the item."""
        failures = {owners[f.index]: RowFailure(owners[f.index], f.reason, f.error_class) for f in self.failures}
        chosen = np.asarray(picks, dtype=np.int64)
        ok = self.ok[chosen].copy()
        ok[list(failures)] = False
        return EmbedResult(vectors=self.vectors[chosen], ok=ok, failures=sorted(failures.values(),
                                                                                key=lambda f: f.index),
                           tokens=self.tokens, requests=self.requests, attempts=self.attempts,
                           rate_limited=self.rate_limited, splits=self.splits)


class Embedder:
    """Packs texts into requests for one model and options and runs up to ``concurrency`` of them at once."""

    def __init__(self, client: JinaClient, options: EmbedOptions, *, max_inputs: int | None = None,
                 max_tokens_per_request: int | None = None, concurrency: int = 4,
                 estimator: TokenEstimator | None = None) -> None:
        spec = options.spec
        self.client = client
        self.options = options
        self.max_inputs = min(max_inputs or spec.max_inputs, spec.max_inputs)
        self.max_tokens_per_request = max_tokens_per_request or DEFAULT_MAX_TOKENS_PER_REQUEST
        if options.late_chunking:  # the API cuts a late-chunked request's concatenation at this many tokens
            self.max_tokens_per_request = min(self.max_tokens_per_request, spec.late_chunking_max_tokens)
        self.concurrency = max(1, concurrency)
        self.estimator = estimator or TokenEstimator()
        self.dimensions = spec.dimensions_or_default(options.dimensions)

    def local_rejection(self, text: object) -> str | None:
        """Why ``text`` cannot be sent at all, or None."""
        if not isinstance(text, str):
            return "text is null" if text is None else f"text is not a string ({type(text).__name__})"
        if not text or text.isspace():  # isspace, not strip: no copy of a long text
            return "text is empty or whitespace only"
        limit = self.options.spec.max_tokens
        if not self.options.truncate and len(text) > limit * MAX_CHARS_PER_TOKEN:
            return (f"text of {len(text)} characters is certainly over the model's {limit}-token limit "
                    f"(truncate is off)")
        return None

    async def embed(self, texts: Sequence[str | None], groups: Sequence[tuple[int, int]] | None = None,
                    observe: Observer | None = None) -> EmbedResult:
        """Vectors of ``texts`` in order, and a failure for each text not embedded.

        Without ``groups`` the texts are packed into as few requests as the limits allow, and a request the API
        rejects is split until the offending input is alone. With ``groups`` (late chunking: a window of one
        document's chunks) each ``(start, end)`` range is exactly one request, never packed with another and never
        split: a range with an input that cannot be sent fails whole. ``observe`` is told every outcome as it comes.
        """
        n = len(texts)
        result = EmbedResult(vectors=np.zeros((n, self.dimensions), dtype=np.float32), ok=np.zeros(n, bool))
        reasons = {index: reason for index, text in enumerate(texts) if (reason := self.local_rejection(text))}
        if groups is None:
            valid = [index for index in range(n) if index not in reasons]
            result.failures.extend(RowFailure(i, r, _local_class(r)) for i, r in reasons.items())
            lengths = np.fromiter((len(str(texts[i])) for i in valid), dtype=np.int64, count=len(valid))
            ranges = plan_batches(self.estimator.estimate_lengths(lengths), self.max_inputs,
                                  self.max_tokens_per_request)
            batches = [[valid[i] for i in range(start, end)] for start, end in ranges]
        else:
            batches = []
            for start, end in groups:
                bad = next((i for i in range(start, end) if i in reasons), None)
                if bad is None:
                    batches.append(list(range(start, end)))
                    continue
                result.failures.extend(RowFailure(i, f"a chunk of its request cannot be sent: {reasons[bad]}",
                                                  _local_class(reasons[bad])) for i in range(start, end))
        if observe is not None and result.failures:
            observe(0, list(result.failures))
        await self._send(texts, batches, result, splittable=groups is None, observe=observe)
        result.failures.sort(key=lambda failure: failure.index)
        return result

    async def _send(self, texts: Sequence[str | None], batches: list[list[int]], result: EmbedResult, *,
                    splittable: bool, observe: Observer | None = None) -> None:
        if not batches:
            return
        semaphore = asyncio.Semaphore(self.concurrency)
        try:
            async with asyncio.TaskGroup() as group:
                for indices in batches:
                    group.create_task(self._run(texts, indices, result, semaphore, splittable=splittable,
                                                observe=observe))
        except BaseExceptionGroup as errors:
            # the error itself, not "unhandled errors in a TaskGroup": the driver decides by its type whether
            # the job stops (a revoked key) or the shard is tried again
            raise _most_severe(errors) from None

    async def _run(self, texts: Sequence[str | None], indices: list[int], result: EmbedResult,
                   semaphore: asyncio.Semaphore, *, splittable: bool, observe: Observer | None = None) -> None:
        inputs = [str(texts[i]) for i in indices]  # only valid (string) texts are sent
        lengths = np.array([len(text) for text in inputs])
        chars = int(lengths.sum())
        estimated = int(self.estimator.estimate_lengths(lengths).sum())
        try:
            async with semaphore:
                response = await self.client.embed(inputs, self.options, estimated)
        except InputRejected as exc:
            if len(indices) == 1 or not splittable:
                failures = [RowFailure(index, exc.detail or str(exc), type(exc).__name__) for index in indices]
                result.failures.extend(failures)
                if observe is not None:
                    observe(0, failures)
                return
            # One bad input (or too many) rejects the whole request: split it and send each half again.
            result.splits += 1
            middle = len(indices) // 2
            await asyncio.gather(
                self._run(texts, indices[:middle], result, semaphore, splittable=True, observe=observe),
                self._run(texts, indices[middle:], result, semaphore, splittable=True, observe=observe))
            return
        if response.vectors.shape[1] != result.vectors.shape[1]:
            if result.ok.any():
                raise ResponseMismatch(f"responses disagree on the vector size: {response.vectors.shape[1]} "
                                       f"and {result.vectors.shape[1]}")
            # a model not in the registry: its first answer tells the size
            result.vectors = np.zeros((len(result.ok), response.vectors.shape[1]), dtype=np.float32)
        result.vectors[indices] = response.vectors
        result.ok[indices] = True
        result.tokens += response.total_tokens
        result.requests += 1
        result.attempts += response.attempts
        result.rate_limited += response.rate_limited
        self.estimator.observe(chars, len(inputs), response.total_tokens)
        if observe is not None:
            observe(len(indices), ())


def _local_class(reason: str) -> str:
    return "EmptyText" if "empty" in reason or "null" in reason else "InputTooLong"


def _most_severe(group: BaseExceptionGroup) -> BaseException:
    """The leaf of ``group`` that matters most: fatal (auth, balance) first, then permanent, then the first."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    for kind in (FatalError, PermanentError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if leaves else group
