"""The AI budget: UTC periods on the given clock, 0 = no cap, limits settable at run time, one alert a change."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from src.ai.usage import AIBudget, BudgetChange, BudgetPeriod, period_start
from src.config.runtime import runtime_default, validate_runtime_value
from src.config.settings import load_settings
from src.exceptions import ConfigurationError, InvalidInput


class Ledger:
    """Recorded costs as (time, USD)."""

    def __init__(self) -> None:
        self.costs: list[tuple[datetime, Decimal]] = []

    async def ai_spend_usd(self, since: datetime) -> Decimal:
        return sum((usd for at, usd in self.costs if at >= since), Decimal("0"))


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_periods_are_the_utc_day_and_month() -> None:
    at = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_start(BudgetPeriod.DAY, at) == datetime(2026, 12, 31, tzinfo=UTC)
    assert period_start(BudgetPeriod.MONTH, at) == datetime(2026, 12, 1, tzinfo=UTC)


async def test_month_cap_holds_across_days_and_lifts_when_the_month_rolls_over() -> None:
    # Given $3 spent on 30 November and a monthly cap of $3 (no daily cap)
    ledger = Ledger()
    ledger.costs.append((datetime(2026, 11, 30, 12, tzinfo=UTC), Decimal("3")))
    clock = Clock(datetime(2026, 11, 30, 13, tzinfo=UTC))
    changes: list[BudgetChange] = []
    budget = AIBudget(ledger, daily_usd=Decimal("0"), monthly_usd=Decimal("3"), clock=clock, on_change=changes.append)
    # When checked the same month, then it blocks with the month named, and one change is heard
    reason = await budget.check()
    assert reason is not None
    assert "month limit $3" in reason
    assert "2026-11" in reason
    assert budget.remaining(BudgetPeriod.MONTH) == 0
    assert budget.remaining(BudgetPeriod.DAY) is None  # no daily cap
    # the next day of the same month it still blocks, without a second alert
    clock.now = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    assert await budget.check() is not None
    assert len(changes) == 1
    # When the UTC month rolls over, then the adviser may be asked again
    clock.now = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    assert await budget.check() is None
    assert [change.reason is None for change in changes] == [False, True]


async def test_charged_calls_count_before_their_rows_are_written_and_zero_means_no_cap() -> None:
    budget = AIBudget(
        Ledger(), daily_usd=Decimal("0.01"), monthly_usd=Decimal("0"), clock=Clock(datetime(2026, 12, 5, tzinfo=UTC))
    )
    assert await budget.check() is None
    budget.charge(Decimal("0.006"))
    assert await budget.check() is None
    budget.charge(Decimal("0.006"))
    assert await budget.check() is not None
    budget.set_limits(Decimal("0"), Decimal("0"))  # a run-time change: no caps at all
    assert await budget.check() is None


@pytest.mark.parametrize("value", [Decimal("-1"), Decimal("NaN"), Decimal("Infinity")])
def test_a_limit_must_be_finite_and_not_negative(value: Decimal) -> None:
    with pytest.raises(ConfigurationError, match="AI_DAILY_BUDGET_USD"):
        AIBudget(Ledger(), daily_usd=value, monthly_usd=Decimal("1"), clock=lambda: datetime.now(UTC))


def test_run_time_keys_share_the_rule_and_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_DAILY_BUDGET_USD", "2.5")
    settings = load_settings(env_file=None)
    assert runtime_default(settings, "ai.daily_budget_usd") == Decimal("2.5")
    assert runtime_default(settings, "ai.monthly_budget_usd") == Decimal("20")
    assert validate_runtime_value("ai.monthly_budget_usd", 0) == Decimal("0")
    for bad in (-1, "NaN", "Infinity", True):
        with pytest.raises(InvalidInput, match=r"ai\.daily_budget_usd"):
            validate_runtime_value("ai.daily_budget_usd", bad)
