"""The A/B comparison of instances (``GET /api/v1/instances``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from backend.app.schemas.common import ApiModel, Money
from src.domain.modes import TradingMode


class InstanceOut(ApiModel):
    """One instance's account, read from its own database."""

    name: str
    strategy: str = Field(description="TRADING_STRATEGY of the instance")
    params: dict[str, Any] = Field(description="STRATEGY_PARAMS of the instance (empty: the strategy's defaults)")
    symbols: list[str]
    mode: TradingMode = Field(description="paper (the instance's account) or replay (its last replay)")
    available: bool = Field(description="false when the instance's database cannot be read; see reason")
    reason: str | None = Field(description="Why the instance is unavailable")
    starting_krw: Money = Field(description="PAPER_STARTING_KRW of the instance")
    equity_krw: Money | None = Field(description="The newest snapshot's total value (the start without one)")
    return_pct: Money | None = Field(description="equity / starting - 1, in percent")
    max_drawdown_pct: Money | None = Field(description="Deepest fall from a running peak of the snapshots, percent")
    trades: int
    buys: int
    sells: int
    realized_pnl_krw: Money
    fees_krw: Money
    open_positions: list[str]
    state: str | None = Field(description="The instance scheduler's heartbeat state; null without a heartbeat")
    last_heartbeat: datetime | None


class InstancesOut(ApiModel):
    file: str | None = Field(description="INSTANCES_FILE; null when none is set")
    error: str | None = Field(description="Why the instances file cannot be used (then instances is empty)")
    instances: list[InstanceOut]
