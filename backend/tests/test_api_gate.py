"""The fair gate in front of the connection pool: slots go to waiters in arrival order, never to newcomers."""

from __future__ import annotations

import asyncio

import pytest

from backend.app.api.gate import FairGate


async def test_waiters_get_slots_in_arrival_order_and_newcomers_queue_behind() -> None:
    # Given a gate of one slot, held
    gate = FairGate(1)
    order: list[int] = []
    await gate.__aenter__()

    async def request(number: int) -> None:
        async with gate:
            order.append(number)
            await asyncio.sleep(0)

    # When three requests queue up, and the holder releases while a fourth arrives
    waiting = [asyncio.create_task(request(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    await gate.__aexit__(None, None, None)
    late = asyncio.create_task(request(4))
    await asyncio.gather(*waiting, late)
    # Then they ran in arrival order; the newcomer did not overtake
    assert order == [1, 2, 3, 4]


async def test_a_cancelled_waiter_gives_up_its_place_without_losing_a_slot() -> None:
    gate = FairGate(1)
    await gate.__aenter__()
    cancelled = asyncio.create_task(gate.__aenter__())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await gate.__aexit__(None, None, None)
    # The slot is free again: two sequential entries succeed at once
    await asyncio.wait_for(gate.__aenter__(), timeout=1)
    await gate.__aexit__(None, None, None)


def test_a_gate_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        FairGate(0)
