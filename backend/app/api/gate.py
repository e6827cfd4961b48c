"""A first-come, first-served limit on concurrent database work.

SQLAlchemy's async pool hands a returned connection to whichever task asks next, so under load a request
that just arrived can take it from one that has waited long (an ``asyncio.Queue`` waiter that loses the race
goes to the back). Requests therefore pass this gate, sized to the pool, before they check a connection
out: the pool never has waiters, and a freed slot goes to the oldest waiting request. That keeps the slowest
requests close to the average instead of seconds behind it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType


class FairGate:
    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("a gate needs at least one slot")
        self._free = slots
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # the slot is handed over by __aexit__, never taken by a newcomer
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # got the slot as it was cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
