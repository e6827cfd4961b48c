"""One pipeline run for one symbol: its id, its clock time, and what every stage decided and took."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from itertools import combinations
from typing import Any

from src.ai.models import Decision
from src.config.settings import TradingMode
from src.trading.orders import OrderStatus
from src.trading.repository import CycleRecord, StageRecord


class CycleStatus(StrEnum):
    OK = "ok"
    ERROR = "error"


def cycle_outcomes() -> tuple[str, ...]:
    """Every ``outcome`` a cycle can end with (``TradingPipeline.run_cycle`` and its execution stage): ``none``,
    ``error``, ``hold``, ``buy_vetoed``, ``dry_run_<decision>``, and ``<decision>_nothing_sent`` or
    ``<decision>_<the orders' statuses, sorted, comma-joined>`` after orders were sent."""
    statuses = sorted(status.value for status in OrderStatus)
    sent = [",".join(chosen) for size in range(1, len(statuses) + 1) for chosen in combinations(statuses, size)]
    traded = [Decision.BUY.value, Decision.SELL.value]
    return (
        "none",
        "error",
        "hold",
        "buy_vetoed",
        *(f"dry_run_{decision}" for decision in traded),
        *(f"{decision}_{result}" for decision in traded for result in ["nothing_sent", *sent]),
    )


def new_cycle_id(now: datetime, symbol: str) -> str:
    return f"{now.astimezone(UTC).strftime('%Y%m%dT%H%M%S')}-{symbol}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class StageTimer:
    """Handed to the body of a stage; the body sets ``outcome`` and adds ``detail``."""

    name: str
    outcome: str = "ok"
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CycleContext:
    cycle_id: str
    symbol: str
    mode: TradingMode
    now: datetime  # from the injected clock: the real time, or the replay's simulated time
    stages: list[StageRecord] = field(default_factory=list)
    outcome: str | None = None
    error: str | None = None
    started_monotonic: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, symbol: str, mode: TradingMode, now: datetime) -> CycleContext:
        return cls(new_cycle_id(now, symbol), symbol, mode, now)

    @contextmanager
    def stage(self, name: str) -> Iterator[StageTimer]:
        """Time a stage and record it, also when it raises (outcome ``error``)."""
        timer = StageTimer(name)
        started = time.perf_counter()
        try:
            yield timer
        except BaseException as exc:
            timer.outcome = "error"
            timer.detail.setdefault("error", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            self.stages.append(StageRecord(name, timer.outcome, round(elapsed_ms, 3), timer.detail))

    def skip(self, name: str, reason: str) -> None:
        self.stages.append(StageRecord(name, "skipped", 0.0, {"reason": reason}))

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started_monotonic) * 1000.0

    def record(self, finished_at: datetime) -> CycleRecord:
        return CycleRecord(
            cycle_id=self.cycle_id,
            symbol=self.symbol,
            mode=self.mode,
            started_at=self.now,
            finished_at=finished_at,
            status=CycleStatus.ERROR if self.error else CycleStatus.OK,
            outcome=(self.outcome or "none")[:50],
            stages=list(self.stages),
            error=self.error,
        )
