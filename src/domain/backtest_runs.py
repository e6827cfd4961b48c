"""A backtest run through the API: its status and the legal moves between them."""

from __future__ import annotations

from enum import StrEnum


class BacktestStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({BacktestStatus.DONE, BacktestStatus.FAILED, BacktestStatus.CANCELLED})

# queued -> running -> done | failed | cancelled; queued -> cancelled | failed (an API restart)
TRANSITIONS: dict[BacktestStatus, frozenset[BacktestStatus]] = {
    BacktestStatus.QUEUED: frozenset({BacktestStatus.RUNNING, BacktestStatus.CANCELLED, BacktestStatus.FAILED}),
    BacktestStatus.RUNNING: frozenset({BacktestStatus.DONE, BacktestStatus.FAILED, BacktestStatus.CANCELLED}),
    BacktestStatus.DONE: frozenset(),
    BacktestStatus.FAILED: frozenset(),
    BacktestStatus.CANCELLED: frozenset(),
}


def sources_of(target: BacktestStatus) -> frozenset[BacktestStatus]:
    """The statuses a run may move to ``target`` from."""
    return frozenset(status for status, targets in TRANSITIONS.items() if target in targets)
