"""Replay's driver: the scheduler's own jobs called at their simulated fire times (``build_triggers`` is the one
definition of their timing), as fast as possible or at a given speed; and between those moments the real-time
exits fed from the candles (``CandleTicks``: the same ``RealtimeExits`` the scheduler feeds from the WebSocket)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd
from apscheduler.triggers.base import BaseTrigger

from backend.app.core.jobs import JOB_ORDER, JobName, JobRunner
from src.data.replay import ReplayMarketSource
from src.domain.bot import DesiredState
from src.domain.market_stream import PriceTick, TickSource
from src.trading.pipeline.realtime_exits import RealtimeExits, candle_path, leg_ticks

Feed = Callable[[datetime, datetime], Awaitable[None]]


def fire_times(
    triggers: dict[JobName, BaseTrigger], start: datetime, end: datetime
) -> list[tuple[datetime, list[JobName]]]:
    """Every moment in ``[start, end)`` at which a job is due, with the jobs in ``JOB_ORDER``."""
    moments: dict[datetime, set[JobName]] = {}
    tick = timedelta(microseconds=1)
    for job, trigger in triggers.items():
        previous: datetime | None = None
        moment = trigger.get_next_fire_time(None, start)
        while moment is not None and moment < end:
            moments.setdefault(moment.astimezone(UTC), set()).add(job)
            previous = moment
            moment = trigger.get_next_fire_time(previous, previous + tick)
    return [(at, [job for job in JOB_ORDER if job in jobs]) for at, jobs in sorted(moments.items())]


async def drive_replay(
    runner: JobRunner,
    advance_to: Callable[[datetime], Any],
    schedule: list[tuple[datetime, list[JobName]]],
    *,
    speed: float | None = None,
    on_tick: Callable[[datetime], None] | None = None,
    feed: Feed | None = None,
) -> int:
    """Call the scheduler's own job functions at their simulated fire times; ``speed`` = simulated
    seconds per real second (``None``: as fast as possible). The desired state and the run-time settings are
    read at the start and before every trading cycle. ``feed(previous, moment)`` runs after the clock moved to
    ``moment`` and before its jobs (the real-time exits over the candles completed since ``previous``).
    Returns the number of moments driven."""
    previous: datetime | None = None
    desired: DesiredState | None = None
    for count, (moment, jobs) in enumerate(schedule, start=1):
        if speed is not None and previous is not None:
            await asyncio.sleep((moment - previous).total_seconds() / speed)
        advance_to(moment)
        if desired is None or JobName.TRADING in jobs:  # the control poll, in simulated time: hourly
            desired = await runner.read_control()
        if feed is not None and previous is not None:
            await feed(previous, moment)
        for job in jobs:
            await runner.run(job, desired)
        if on_tick is not None:
            on_tick(moment)
        previous = moment
        if runner.stopping:
            return count
    return len(schedule)


class CandleTicks:
    """Replay's price stream: each candle completed between two scheduler moments becomes a few ticks (open, low,
    high, close, plus any level of the position the path passes: ``candle_path``/``leg_ticks``), fed to the
    real-time exits with ``TickSource.REPLAY``. While a tick is handled the exchange quotes its price
    (``ReplayMarketSource.trade_at``), so an exit fills there. Only watched coins are fed; a tick that crosses
    nothing costs no database round trip."""

    def __init__(self, source: ReplayMarketSource, watcher: RealtimeExits) -> None:
        self.source = source
        self.watcher = watcher
        self.ticks = 0

    async def __call__(self, previous: datetime, moment: datetime) -> None:
        try:
            for symbol in self.watcher.symbols:
                for _, candle in self.source.candles_between(symbol, previous, moment).iterrows():
                    if not await self._candle(symbol, candle, moment):
                        break  # the position was sold
        finally:
            self.source.advance_to(moment)  # the jobs at ``moment`` see the close again

    async def _candle(self, symbol: str, candle: pd.Series, at: datetime) -> bool:
        """Feed one candle; False once the coin is no longer watched (sold)."""
        path = candle_path(*(Decimal(str(candle[name])) for name in ("open", "high", "low", "close")))
        for index, end in enumerate(path):
            prices = [end] if index == 0 else leg_ticks(path[index - 1], end, self.watcher.levels(symbol))
            for price in prices:
                self.ticks += 1
                self.source.trade_at(symbol, price)
                task = self.watcher.check(PriceTick(symbol, price, at, TickSource.REPLAY, time.perf_counter()))
                if task is not None:
                    await task
                    if symbol not in self.watcher.symbols:
                        return False
        return True
