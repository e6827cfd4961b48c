"""Client-side pacing for Upbit: obey ``Remaining-Req``, back off on 429, stand still on 418.

Upbit counts requests per second and per group (``candle``, ``ticker``, ``orderbook``, ``market``,
``default``, ``order``...). Every answer carries ``Remaining-Req: group=<g>; min=<m>; sec=<n>``; when
``sec`` reaches 0 the next request of that group waits for the next one-second window. A 429 is
answered with an exponential backoff; a 418 (a temporary block for continuing after 429) makes every
request fail fast with ``Blocked`` until the block has passed, so the client never hammers a block.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from src.exceptions import Blocked

_GROUP = re.compile(r"group=([a-z\-]+)")
_SEC = re.compile(r"sec=(\d+)")
WINDOW_SECONDS = 1.0


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
    ) -> None:
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

    async def acquire(self, group: str) -> None:
        """Wait until ``group`` may send; raise ``Blocked`` at once while a 418 block lasts."""
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
