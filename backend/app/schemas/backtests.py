"""Backtests through the API: the request of ``POST /api/v1/backtests`` and what a run reads as."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from backend.app.db.queries.paging import checked_time
from backend.app.schemas.common import ApiModel, PageInfo
from src.domain.backtest_runs import BacktestStatus
from src.domain.timeframes import Timeframe

BACKTEST_TIMEFRAMES = ("1m", "5m", "1h", "4h", "1d")
assert all(Timeframe.is_known(name) for name in BACKTEST_TIMEFRAMES)


def _moment(value: Any) -> datetime:
    """An ISO date or date-time such as ``2023-01-01`` or ``2023-01-01T09:00:00Z``; UTC when it names no zone."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and 10 <= len(value) <= 40:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expected an ISO date such as 2023-01-01, got {value!r}") from None
    else:
        raise ValueError("expected an ISO date such as 2023-01-01 or 2023-01-01T09:00:00Z")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


Moment = Annotated[datetime, BeforeValidator(_moment), AfterValidator(checked_time)]


class BacktestIn(ApiModel):
    """One run. Unset optional fields are the bot's settings (``PAPER_STARTING_KRW``, ``TRADING_FEE_RATE``,
    ``BACKTEST_SLIPPAGE_PCT``); the risk rules and the quick filter are the bot's, as in ``backtest.py``."""

    strategy: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,63}$", description="A strategy name, e.g. rule_breakout or volatility_breakout"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Strategy parameters, checked against the strategy's declared space"
    )
    symbol: str = Field(pattern=r"^[A-Z]{2,5}-[A-Z0-9]{1,15}$", description="Market, e.g. KRW-BTC")
    timeframe: Literal["1m", "5m", "1h", "4h", "1d"] = Field(description="Bar size")
    start: Moment = Field(description="First candle open time traded (UTC when no zone), e.g. 2023-01-01")
    end: Moment = Field(description="Candles before this time only (UTC when no zone)")
    capital: Annotated[float | None, AfterValidator(_finite)] = Field(
        default=None, gt=0, le=1e15, description="Starting KRW (default PAPER_STARTING_KRW)"
    )
    fee: Annotated[float | None, AfterValidator(_finite)] = Field(
        default=None, ge=0, lt=0.01, description="Fee rate per side, e.g. 0.0005 (default TRADING_FEE_RATE)"
    )
    slippage: Annotated[float | None, AfterValidator(_finite)] = Field(
        default=None, ge=0, lt=10, description="Slippage percent per fill, e.g. 0.05 (default BACKTEST_SLIPPAGE_PCT)"
    )

    @model_validator(mode="after")
    def _start_before_end(self) -> BacktestIn:
        if self.start >= self.end:
            raise ValueError("start: expected a time before end")
        return self

    def stored(self) -> dict[str, Any]:
        """The request as stored and shown (times as ISO text in UTC)."""
        data = self.model_dump(mode="json")
        data["start"], data["end"] = self.start.astimezone(UTC).isoformat(), self.end.astimezone(UTC).isoformat()
        return data


class BacktestCreated(ApiModel):
    id: str = Field(description="The run's id: poll GET /api/v1/backtests/{id}")


class BacktestSummary(ApiModel):
    id: str
    status: BacktestStatus
    progress: float = Field(description="0..1")
    request: dict[str, Any]
    requested_by: str
    metrics: dict[str, Any] | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class BacktestOut(BacktestSummary):
    trades: list[dict[str, Any]] | None = Field(description="Round trips: entry/exit time and price, P&L, exit reason")
    equity: list[list[Any]] | None = Field(description="[[iso time, equity KRW], ...], one point per bar traded")
    candles: list[list[Any]] | None = Field(description="[[iso time, open, high, low, close], ...], the bars traded")


class BacktestPage(PageInfo):
    items: list[BacktestSummary]
