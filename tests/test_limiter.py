"""The rate limiter's arithmetic under a fake clock, and its async face."""

from __future__ import annotations

import asyncio

import pytest

from embedder.run.limiter import Limits, RateLimiter, RateWindow


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_are_enforced_over_a_sliding_window():
    clock = FakeClock()
    window = RateWindow(Limits(rpm=3), clock=clock)
    permits = [window.try_acquire(1)[0] for _ in range(3)]
    assert all(permits)
    assert window.try_acquire(1)[0] is None
    for permit in permits:
        window.release(permit, 1)
    clock.now += 30
    permit, wait = window.try_acquire(1)
    assert permit is None and wait == pytest.approx(30, abs=0.1)
    clock.now += 30.01
    assert window.try_acquire(1)[0] is not None


def test_tokens_per_minute_count_billed_tokens_not_estimates():
    clock = FakeClock()
    window = RateWindow(Limits(tpm=1000), clock=clock)
    permit, _ = window.try_acquire(900)
    assert window.try_acquire(200)[0] is None  # 900 reserved + 200 > 1000
    window.release(permit, 300)  # the API billed less than estimated: the reservation shrinks
    assert window.try_acquire(200)[0] is not None


def test_a_request_larger_than_the_budget_still_goes_alone():
    window = RateWindow(Limits(tpm=1000), clock=FakeClock())
    assert window.try_acquire(5000)[0] is not None


def test_concurrency_cap():
    window = RateWindow(Limits(max_concurrency=2), clock=FakeClock())
    first, second = window.try_acquire(1)[0], window.try_acquire(1)[0]
    assert first and second and window.try_acquire(1)[0] is None
    window.release(first, 1)
    assert window.try_acquire(1)[0] is not None


def test_429_pauses_everyone_and_cuts_the_rate_then_successes_restore_it():
    clock = FakeClock()
    window = RateWindow(Limits(rpm=100, tpm=10_000), clock=clock, decrease=0.5, increase=0.1)
    permit, _ = window.try_acquire(10)
    window.release(permit, None, rate_limited_after=3.0, rate_limited_kind="token")
    permit, wait = window.try_acquire(10)
    assert permit is None and wait == pytest.approx(3.0)
    assert window.fraction == 0.5
    clock.now += 3.0
    for _ in range(10):
        permit, _ = window.try_acquire(10)
        window.release(permit, 10)
    assert window.fraction == pytest.approx(1.0)
    assert window.snapshot()["rate_limited"] == 1


def test_async_limiter_wakes_waiters_on_release():
    async def scenario() -> list[str]:
        limiter = RateLimiter(Limits(max_concurrency=1))
        order: list[str] = []
        first = await limiter.acquire(1)

        async def second() -> None:
            permit = await limiter.acquire(1)
            order.append("second granted")
            await limiter.release(permit, 1)

        task = asyncio.create_task(second())
        await asyncio.sleep(0.01)
        order.append("first releases")
        await limiter.release(first, 1)
        await asyncio.wait_for(task, 2)
        return order

    assert asyncio.run(scenario()) == ["first releases", "second granted"]


def test_a_grant_never_released_is_retired_after_its_lease():
    clock = FakeClock()
    window = RateWindow(Limits(rpm=1, max_concurrency=1), clock=clock, lease_s=100)
    assert window.try_acquire(1)[0] is not None  # its worker dies: no release ever comes
    clock.now += 99
    assert window.try_acquire(1)[0] is None
    clock.now += 2 + 60  # lease over, then the minute it counts for
    assert window.try_acquire(1)[0] is not None
    assert window.snapshot()["leases_expired"] == 1


def test_a_cancelled_request_gives_its_permit_back():
    import httpx

    from embedder.jina.client import EmbedOptions, JinaClient

    async def scenario() -> int:
        limiter = RateLimiter(Limits(max_concurrency=1))

        async def never_answers(request):
            await asyncio.sleep(30)

        client = JinaClient("jina_" + "x" * 60, api_base="http://jina.test/v1", gate=limiter,
                            transport=httpx.MockTransport(never_answers))
        task = asyncio.create_task(client.embed(["a"], EmbedOptions()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.aclose()
        return limiter.window.in_flight

    assert asyncio.run(scenario()) == 0
