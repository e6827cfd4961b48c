"""Client-side pacing for Upbit: budgets of the order groups, ``Remaining-Req``, back off on 429, stand still on 418.

Upbit counts requests per second and per group (``candle``, ``ticker``, ``orderbook``, ``market``,
``default``, ``order``...). The order groups are paced ahead of the answers, so that a burst of orders
never meets a 429 (an order refused is an order late): ``order`` 12 per second (raised from 8 on
2026-08-21), ``order-test`` 8 per second, ``order-cancel-all`` 1 per 2 seconds (``GROUP_BUDGETS``); a
request waits until fewer than the budget are in flight or were answered in the last window (counted from
the answer, which comes after the exchange counted the request, so a burst that arrives bunched still fits).
Every answer also carries ``Remaining-Req: group=<g>; min=<m>; sec=<n>``; when ``sec`` reaches 0 the next
request of that group waits for the next one-second window. A 429 is answered with an exponential
backoff; a 418 (a temporary block for continuing after 429) makes every
request fail fast with ``Blocked`` until the block has passed, so the client never hammers a block.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from src.exceptions import Blocked

_GROUP = re.compile(r"group=([a-z\-]+)")
_SEC = re.compile(r"sec=(\d+)")
WINDOW_SECONDS = 1.0
# Added to a budget's window: requests leave in one order and may arrive in another (network jitter)
BUDGET_MARGIN_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``requests`` per ``seconds`` (a sliding window)."""

    requests: int
    seconds: float = 1.0


_IN_FLIGHT_POLL_SECONDS = 0.01


@dataclass(slots=True)
class Slot:
    """One request of a budgeted group: in flight until ``finished_at`` is set (``UpbitRateLimiter.done``)."""

    finished_at: float | None = None


# Upbit's order groups (docs.upbit.com rate limits, changelog "order-rate-limit-update" of 2026-08-21).
GROUP_BUDGETS: dict[str, Budget] = {
    "order": Budget(12),
    "order-test": Budget(8),
    "order-cancel-all": Budget(1, 2.0),
}


@dataclass(frozen=True, slots=True)
class RemainingReq:
    group: str
    sec: int


def parse_remaining_req(header: str | None) -> RemainingReq | None:
    """Parse ``group=default; min=1800; sec=29``; ``None`` when absent or unreadable."""
    if not header:
        return None
    group, sec = _GROUP.search(header), _SEC.search(header)
    if group is None or sec is None:
        return None
    return RemainingReq(group=group.group(1), sec=int(sec.group(1)))


class UpbitRateLimiter:
    """Per-group pacing plus a global block; one instance per client (per API key and IP)."""

    def __init__(
        self,
        *,
        backoff_seconds: float = 0.25,
        max_backoff_seconds: float = 4.0,
        default_block_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        budgets: Mapping[str, Budget] | None = None,
    ) -> None:
        self.budgets = dict(GROUP_BUDGETS if budgets is None else budgets)
        self._sent: dict[str, list[Slot]] = {}
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._default_block = default_block_seconds
        self._clock = clock
        self._sleep = sleep
        self._resume_at: dict[str, float] = {}
        self._blocked_until = 0.0

    @property
    def blocked_for(self) -> float:
        """Seconds left of a 418 block (0 when not blocked)."""
        return max(0.0, self._blocked_until - self._clock())

    async def acquire(self, group: str) -> Slot | None:
        """Wait until ``group`` may send; raise ``Blocked`` at once while a 418 block lasts.

        For a group with a budget the request's ``Slot`` comes back: pass it to ``done`` when the answer (or
        the failure) is in. The window counts from that moment, so requests that left in one burst and arrived
        late still arrive at most ``requests`` per window.
        """
        if self.blocked_for > 0:
            raise Blocked(
                f"Upbit blocked this client; {self.blocked_for:.1f} s left, no request sent",
                name="blocked",
                status=418,
                retry_after=self.blocked_for,
            )
        wait = self._resume_at.get(group, 0.0) - self._clock()
        if wait > 0:
            await self._sleep(wait)
        return await self._within_budget(group)

    def done(self, slot: Slot | None) -> None:
        """The request of ``slot`` was answered (or failed): its window starts now."""
        if slot is not None:
            slot.finished_at = self._clock()

    async def _within_budget(self, group: str) -> Slot | None:
        """Wait until fewer than the group's budget are in flight or finished within its window, then take a slot.

        Checking and taking happen with no ``await`` in between, so concurrent callers never share a slot.
        """
        budget = self.budgets.get(group)
        if budget is None:
            return None
        slots = self._sent.setdefault(group, [])
        window = budget.seconds + BUDGET_MARGIN_SECONDS
        while True:
            now = self._clock()
            # the tolerance: a sleep may end a hair early
            slots[:] = [s for s in slots if s.finished_at is None or now - s.finished_at < window - 1e-6]
            if len(slots) < budget.requests:
                slot = Slot()
                slots.append(slot)
                return slot
            finished = [s.finished_at for s in slots if s.finished_at is not None]
            await self._sleep(window - (now - min(finished)) if finished else _IN_FLIGHT_POLL_SECONDS)

    def record(self, header: str | None) -> None:
        """Remember the budget the exchange reported for the group of the last answer."""
        remaining = parse_remaining_req(header)
        if remaining is None:
            return
        if remaining.sec <= 0:
            self._resume_at[remaining.group] = self._clock() + WINDOW_SECONDS
        else:
            self._resume_at.pop(remaining.group, None)

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Delay before retry number ``attempt`` (0-based) after a 429."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self._max_backoff)
        return min(self._backoff * (2**attempt), self._max_backoff)

    async def wait_backoff(self, attempt: int, retry_after: float | None = None) -> None:
        await self._sleep(self.backoff_delay(attempt, retry_after))

    def block(self, seconds: float | None) -> float:
        """Stop all requests for ``seconds`` (the exchange's stated block, or the default)."""
        duration = seconds if seconds is not None and seconds >= 0 else self._default_block
        self._blocked_until = max(self._blocked_until, self._clock() + duration)
        return duration
