"""What the model's calls cost, where each call is recorded, and the budget that caps the spend.

Every request that reaches the model is counted (tokens and USD at ``OPENAI_*_PRICE_PER_1M``) by
``AIService``, whatever its purpose. ``AIBudget`` caps the spend per UTC day and per UTC month on the
scheduler's clock (simulated in replay): the spend is read from the recorded costs (``AISpendLedger``,
the ``ai_decisions`` table in the backend, so it survives a restart) plus what was charged since that
read. When a cap is reached the budget reports the reason and the adviser stays off until the period
rolls over; ``on_change`` hears both transitions (the engine turns them into alerts).
A limit of 0 means no cap for that period. Limits are settable at run time (``set_limits``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from src.ai.models import AIDecision, AIPurpose, MarketContext
from src.domain.money import ZERO
from src.exceptions import ConfigurationError
from src.utils.logger import get_logger

log = get_logger(__name__)


class AIUsageObserver(Protocol):
    """Metrics hooks (``SchedulerMetrics`` implements them)."""

    def on_ai_usage(self, purpose: str, prompt_tokens: int, completion_tokens: int, cost_usd: Decimal) -> None: ...

    def on_ai_budget(self, period: str, limit_usd: Decimal, remaining_usd: Decimal | None) -> None: ...


class AICallRecorder(Protocol):
    """Stores a model call that no trading-cycle row records (the quick filter's), with tokens and cost."""

    async def record_call(self, decision: AIDecision, context: MarketContext) -> None: ...


class AISpendLedger(Protocol):
    async def ai_spend_usd(self, since: datetime) -> Decimal:
        """USD recorded for model calls made at or after ``since`` (every purpose)."""
        ...


class BudgetPeriod(StrEnum):
    DAY = "day"
    MONTH = "month"


def period_start(period: BudgetPeriod, now: datetime) -> datetime:
    """The start of the UTC day or month that contains ``now``."""
    now = now.astimezone(UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start.replace(day=1) if period is BudgetPeriod.MONTH else start


@dataclass(frozen=True, slots=True)
class BudgetChange:
    """The adviser was switched off (``reason`` set) or on again (``reason`` None) by the budget."""

    reason: str | None
    spent_usd: dict[BudgetPeriod, Decimal]
    limits_usd: dict[BudgetPeriod, Decimal]
    at: datetime


def _check_limit(name: str, value: Decimal) -> Decimal:
    value = Decimal(value)
    if not value.is_finite() or value < 0:
        raise ConfigurationError(f"{name} must be a finite number >= 0 (0 = no cap), got {value}")
    return value


class AIBudget:
    """USD caps on the model's spend per UTC day and month, on the given clock."""

    def __init__(
        self,
        ledger: AISpendLedger,
        *,
        daily_usd: Decimal,
        monthly_usd: Decimal,
        clock: Callable[[], datetime],
        on_change: Callable[[BudgetChange], None] | None = None,
        observer: AIUsageObserver | None = None,
    ) -> None:
        self._ledger = ledger
        self._clock = clock
        self._on_change = on_change
        self._observer = observer
        self._limits: dict[BudgetPeriod, Decimal] = {}
        self.set_limits(daily_usd, monthly_usd)
        self._spent: dict[BudgetPeriod, Decimal] = {BudgetPeriod.DAY: ZERO, BudgetPeriod.MONTH: ZERO}
        self._starts: dict[BudgetPeriod, datetime] | None = None  # periods the spend was read for
        self.reason: str | None = None  # why the adviser is off; None while within budget

    @property
    def limits(self) -> dict[BudgetPeriod, Decimal]:
        return dict(self._limits)

    @property
    def spent(self) -> dict[BudgetPeriod, Decimal]:
        return dict(self._spent)

    @property
    def exhausted(self) -> bool:
        return self.reason is not None

    def set_limits(self, daily_usd: Decimal, monthly_usd: Decimal) -> None:
        """New caps (0 = none); they apply from the next ``check``."""
        self._limits = {
            BudgetPeriod.DAY: _check_limit("AI_DAILY_BUDGET_USD", daily_usd),
            BudgetPeriod.MONTH: _check_limit("AI_MONTHLY_BUDGET_USD", monthly_usd),
        }

    def remaining(self, period: BudgetPeriod) -> Decimal | None:
        """USD left in the period (never below 0); None when the period has no cap."""
        limit = self._limits[period]
        if limit <= 0:
            return None
        return max(ZERO, limit - self._spent[period])

    def charge(self, cost_usd: Decimal) -> None:
        """Count a call's cost now, before its row is written (the next refresh reads it from the ledger)."""
        for period in BudgetPeriod:
            self._spent[period] += cost_usd

    async def refresh(self) -> str | None:
        """Read the spend of the current day and month from the ledger, then ``evaluate``."""
        now = self._clock()
        starts = {period: period_start(period, now) for period in BudgetPeriod}
        for period, start in starts.items():
            self._spent[period] = await self._ledger.ai_spend_usd(start)
        self._starts = starts
        return self.evaluate()

    async def check(self) -> str | None:
        """The reason the adviser must not be asked now, or None. Reads the ledger when a period rolled over."""
        now = self._clock()
        if self._starts is None or any(period_start(p, now) != start for p, start in self._starts.items()):
            return await self.refresh()
        return self.evaluate()

    def evaluate(self) -> str | None:
        """Compare the known spend with the limits; publish gauges and any on/off transition."""
        reason = None
        for period in (BudgetPeriod.MONTH, BudgetPeriod.DAY):
            limit = self._limits[period]
            if limit > 0 and self._spent[period] >= limit:
                start = self._starts[period] if self._starts else period_start(period, self._clock())
                label = start.strftime("%Y-%m-%d" if period is BudgetPeriod.DAY else "%Y-%m")
                reason = (
                    f"AI budget reached: {period.value} limit ${limit} spent (${self._spent[period]:.6f} "
                    f"in {label} UTC); rules decide until the {period.value} rolls over"
                )
                break
        if self._observer is not None:
            for period in BudgetPeriod:
                self._observer.on_ai_budget(period.value, self._limits[period], self.remaining(period))
        if reason != self.reason and (reason is None or self.reason is None):
            self._transition(reason)
        self.reason = reason
        return reason

    def _transition(self, reason: str | None) -> None:
        if reason is None:
            log.info("ai.budget_restored", spent_day=str(self._spent[BudgetPeriod.DAY]))
        else:
            log.warning("ai.budget_reached", reason=reason)
        if self._on_change is not None:
            self._on_change(BudgetChange(reason, dict(self._spent), dict(self._limits), self._clock()))


def record_usage(
    decision: AIDecision, purpose: AIPurpose, budget: AIBudget | None, observer: AIUsageObserver | None
) -> None:
    """Charge one model call to the budget and the metrics."""
    if budget is not None:
        budget.charge(decision.cost_usd)
    if observer is not None:
        observer.on_ai_usage(purpose.value, decision.prompt_tokens, decision.completion_tokens, decision.cost_usd)
