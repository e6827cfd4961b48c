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

from src.domain.decisions import Decision
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus
from src.trading.repository import CycleRecord, StageRecord


class StageOutcome(StrEnum):
    """How a stage ended (the analysis stage ends in its ``Decision``, execution in an ``ExecutionOutcome``)."""

    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"
    BUYS_ALLOWED = "buys_allowed"  # risk stage
    BUYS_BLOCKED = "buys_blocked"  # risk stage
    NO_CANDLES = "no_candles"  # data stage
    NOTHING_SENT = "nothing_sent"  # execution stage: no order went out


class CycleOutcome(StrEnum):
    """How a cycle ended when no order went out (else its ``ExecutionOutcome``)."""

    NONE = "none"
    ERROR = "error"
    HOLD = "hold"
    BUY_VETOED = "buy_vetoed"
    DRY_RUN_BUY = "dry_run_buy"
    DRY_RUN_SELL = "dry_run_sell"

    @classmethod
    def dry_run(cls, decision: Decision) -> CycleOutcome:
        return cls.DRY_RUN_BUY if decision is Decision.BUY else cls.DRY_RUN_SELL


@dataclass(frozen=True, slots=True)
class ExecutionOutcome:
    """What the orders of a buy or sell came to: the decision acted on and the statuses its orders reached.

    Labels: the stage's is the sorted statuses (``cancelled,filled``) or ``nothing_sent``; the cycle's
    is ``<decision>_<stage label>`` (``buy_filled``), at most 41 characters.
    """

    decision: Decision
    statuses: frozenset[OrderStatus]

    @property
    def stage_label(self) -> str:
        return ",".join(sorted(status.value for status in self.statuses)) or StageOutcome.NOTHING_SENT.value

    @property
    def cycle_label(self) -> str:
        return f"{self.decision.value}_{self.stage_label}"


def _stage_label(outcome: StageOutcome | Decision | ExecutionOutcome) -> str:
    return outcome.stage_label if isinstance(outcome, ExecutionOutcome) else outcome.value


class CycleStatus(StrEnum):
    OK = "ok"
    ERROR = "error"


def cycle_outcomes() -> tuple[str, ...]:
    """Every ``outcome`` a cycle can end with (``TradingPipeline.run_cycle`` and its execution stage): the
    ``CycleOutcome`` labels, and ``<decision>_nothing_sent`` or ``<decision>_<the orders' statuses, sorted,
    comma-joined>`` (``ExecutionOutcome.cycle_label``) after a buy or sell was acted on."""
    statuses = sorted(OrderStatus)
    sent = [frozenset(chosen) for size in range(len(statuses) + 1) for chosen in combinations(statuses, size)]
    acted = [
        ExecutionOutcome(decision, chosen).cycle_label for decision in (Decision.BUY, Decision.SELL) for chosen in sent
    ]
    return (*(outcome.value for outcome in CycleOutcome), *acted)


def new_cycle_id(now: datetime, symbol: str) -> str:
    return f"{now.astimezone(UTC).strftime('%Y%m%dT%H%M%S')}-{symbol}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class StageTimer:
    """Handed to the body of a stage; the body sets ``outcome`` and adds ``detail``."""

    name: str
    outcome: StageOutcome | Decision | ExecutionOutcome = StageOutcome.OK
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CycleContext:
    cycle_id: str
    symbol: str
    mode: TradingMode
    now: datetime  # from the injected clock: the real time, or the replay's simulated time
    stages: list[StageRecord] = field(default_factory=list)
    outcome: CycleOutcome | ExecutionOutcome = CycleOutcome.NONE
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
            timer.outcome = StageOutcome.ERROR
            timer.detail.setdefault("error", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            self.stages.append(StageRecord(name, _stage_label(timer.outcome), round(elapsed_ms, 3), timer.detail))

    def skip(self, name: str, reason: str) -> None:
        self.stages.append(StageRecord(name, StageOutcome.SKIPPED.value, 0.0, {"reason": reason}))

    @property
    def outcome_label(self) -> str:
        """The cycle's outcome as stored in ``trading_cycles.outcome`` and reported."""
        return self.outcome.cycle_label if isinstance(self.outcome, ExecutionOutcome) else self.outcome.value

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
            outcome=self.outcome_label,
            stages=list(self.stages),
            error=self.error,
        )
