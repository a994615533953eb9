"""The client's request gate inside a worker actor, backed by the job's rate-limiter actor.

Every attempt of every request asks the limiter for a permit first and reports its outcome after, so the whole
cluster stays inside one quota (see :mod:`embedder.run.limiter`). No ``import ray`` here: the limiter is an actor
handle, called with ``.remote``.
"""

from __future__ import annotations

import asyncio
from typing import Any


class RemoteGate:
    """The client's request gate, backed by the job's rate-limiter actor."""

    def __init__(self, limiter: Any, owner: str | None = None) -> None:
        self.limiter = limiter
        self.owner = owner
        """Names the worker holding the permits, so its restarted successor can return what it held."""

    async def acquire(self, estimated_tokens: int) -> Any:
        if self.owner is None:
            ref = self.limiter.acquire.remote(estimated_tokens)
        else:
            ref = self.limiter.acquire.remote(estimated_tokens, self.owner)
        granted = asyncio.ensure_future(_await(ref))
        try:
            return await asyncio.shield(granted)
        except asyncio.CancelledError:
            # Cancelled while waiting (a sibling request of the shard failed): the limiter still grants the permit
            # later, to nobody. Hand it back when it comes, or it stays "in flight" until its lease runs out and
            # the concurrency cap starves every worker of the job.
            granted.add_done_callback(self._give_back)
            raise

    def _give_back(self, granted: asyncio.Future) -> None:
        if not granted.cancelled() and granted.exception() is None and granted.result() is not None:
            self.limiter.release.remote(granted.result(), None)

    async def release(self, permit: Any, used_tokens: int | None, rate_limited_after: float | None = None,
                      rate_limited_kind: str | None = None, verdict: str | None = None) -> None:
        # not awaited: the worker need not wait for the bookkeeping round trip
        self.limiter.release.remote(permit, used_tokens, rate_limited_after, rate_limited_kind, verdict)


async def _await(ref: Any) -> Any:
    return await ref
