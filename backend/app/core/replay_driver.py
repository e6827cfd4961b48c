"""Replay's driver: the scheduler's own jobs called at their simulated fire times (``build_triggers`` is the one
definition of their timing), as fast as possible or at a given speed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from backend.app.core.jobs import JOB_ORDER, JobName, JobRunner
from src.domain.bot import DesiredState


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
) -> int:
    """Call the scheduler's own job functions at their simulated fire times; ``speed`` = simulated
    seconds per real second (``None``: as fast as possible). The desired state and the run-time settings are
    read at the start and before every trading cycle. Returns the number of moments driven."""
    previous: datetime | None = None
    desired: DesiredState | None = None
    for count, (moment, jobs) in enumerate(schedule, start=1):
        if speed is not None and previous is not None:
            await asyncio.sleep((moment - previous).total_seconds() / speed)
        advance_to(moment)
        if desired is None or JobName.TRADING in jobs:  # the control poll, in simulated time: hourly
            desired = await runner.read_control()
        for job in jobs:
            await runner.run(job, desired)
        if on_tick is not None:
            on_tick(moment)
        previous = moment
        if runner.stopping:
            return count
    return len(schedule)
