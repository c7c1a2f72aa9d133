"""Turns at Triton: at most ``capacity`` requests in flight, waiters served in arrival order."""

from __future__ import annotations

import asyncio

import pytest

from bridge.admission import InFlightLimit


def run(coroutine):
    return asyncio.run(coroutine)


def test_capacity_bounds_in_flight_and_waiters_go_in_arrival_order():
    async def scenario():
        limit = InFlightLimit(1)
        order: list[str] = []

        async def user(name: str) -> None:
            await limit.acquire()
            order.append(name)
            assert limit.in_flight <= limit.capacity
            await asyncio.sleep(0.01)
            limit.release()

        await asyncio.gather(*(user(name) for name in "abcd"))
        return order, limit

    order, limit = run(scenario())
    assert order == list("abcd") and limit.in_flight == 0


def test_a_cancelled_waiter_gives_up_its_place():
    async def scenario():
        limit = InFlightLimit(1)
        await limit.acquire()
        waiter = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0)
        assert limit.waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert limit.waiting == 0
        limit.release()
        await asyncio.wait_for(limit.acquire(), 1)  # the place is free, not held by the ghost
        return limit

    assert run(scenario()).in_flight == 1


def test_more_capacity_wakes_waiters():
    async def scenario():
        limit = InFlightLimit(1)
        await limit.acquire()
        waiter = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0)
        limit.set_capacity(2)
        await asyncio.wait_for(waiter, 1)
        return limit

    assert run(scenario()).in_flight == 2


def test_release_after_keeps_the_place_for_a_while():
    async def scenario():
        limit = InFlightLimit(1)
        await limit.acquire()
        limit.release_after(0.1)
        waiter = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0.05)
        assert not waiter.done(), "Triton is still busy with the abandoned request"
        await asyncio.wait_for(waiter, 1)

    run(scenario())


@pytest.mark.parametrize(
    "text",
    [
        "instance_group { count: -1 }\nmax_batch_size: 4\ndynamic_batching { }",  # found by fuzzing
        "instance_group { count: 0 }\nmax_batch_size: -3\ndynamic_batching { }",
        "",
    ],
)
def test_a_models_capacity_is_at_least_one_whatever_its_config_says(text):
    """The turns' bound comes from each served config: a negative count or batch there must not
    make the bound zero or negative (the bridge would let no frame through, or any)."""
    from bridge.triton import capacity_of
    from depthstream.model_config import parse

    assert capacity_of(parse(text)) >= 1
