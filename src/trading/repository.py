"""The persistence port of the trading domain. ``src/`` never writes SQL; the backend implements this.

Records are plain dataclasses with ``Decimal`` money and UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from src.domain.modes import TradingMode
from src.domain.money import ZERO
from src.domain.orders import OrderStatus, OrderType, Side, TradeStatus


@dataclass(slots=True)
class OrderRecord:
    order_id: str
    identifier: str
    symbol: str
    side: Side
    order_type: OrderType
    mode: TradingMode
    status: OrderStatus = OrderStatus.PENDING
    price: Decimal | None = None
    amount: Decimal | None = None
    requested_total: Decimal | None = None
    exchange_uuid: str | None = None
    filled_amount: Decimal = ZERO
    executed_funds: Decimal = ZERO
    avg_fill_price: Decimal | None = None
    paid_fee: Decimal = ZERO
    exchange_state: str | None = None
    error_message: str | None = None
    reason: str | None = None
    cycle_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    exit_reason: str | None = None  # a sell: the exit that caused it (an ``ExitReason`` value)


@dataclass(slots=True)
class TradeRecord:
    trade_id: str
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    total: Decimal
    fee: Decimal
    mode: TradingMode
    status: TradeStatus = TradeStatus.COMPLETED
    realized_pnl: Decimal | None = None
    order_identifier: str | None = None
    created_at: datetime | None = None
    exit_reason: str | None = None  # a sell's: its order's


@dataclass(slots=True)
class AIDecisionRecord:
    symbol: str
    decision: str
    final_decision: str
    source: str
    confidence: Decimal | None = None
    reason: str | None = None
    market_data: dict[str, Any] | None = None
    overridden: bool = False
    override_reasons: list[str] | None = None
    model: str | None = None
    prompt_hash: str | None = None
    prompt: str | None = None
    raw_response: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = ZERO
    error: str | None = None
    cycle_id: str | None = None
    created_at: datetime | None = None
    purpose: str = "decision"  # decision (the trading cycle) | filter (the quick filter's AI backtest)
    candle_at: datetime | None = None  # open time (UTC) of the bar decided: with the symbol, the decision's key


@dataclass(slots=True)
class PortfolioSnapshotRecord:
    total_value_krw: Decimal
    positions: dict[str, Any]
    mode: TradingMode
    cash_krw: Decimal | None = None
    profit_rate: Decimal | None = None
    total_value_usd: Decimal | None = None
    created_at: datetime | None = None


@dataclass(slots=True)
class StageRecord:
    stage: str
    outcome: str
    duration_ms: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CycleRecord:
    cycle_id: str
    symbol: str
    mode: TradingMode
    started_at: datetime
    status: str
    finished_at: datetime | None = None
    outcome: str | None = None
    stages: list[StageRecord] = field(default_factory=list)
    error: str | None = None


class ITradingRepository(Protocol):
    """What the pipeline persists. Every method is one transaction."""

    async def create_order(self, order: OrderRecord) -> OrderRecord:
        """Insert a new order (normally ``pending``) before anything is sent to the exchange."""

    async def update_order(self, identifier: str, **changes: Any) -> OrderRecord:
        """Apply changes; a ``status`` change must be a legal transition."""

    async def settle_order(self, identifier: str, changes: dict[str, Any], trades: list[TradeRecord]) -> OrderRecord:
        """Update the order and insert its trades atomically; trades already present are skipped."""

    async def record_realized_pnl(self, pnl_by_trade_id: dict[str, Decimal]) -> None:
        """Set ``trades.realized_pnl`` of a sell's trades once the position has realised it."""

    async def get_order(self, identifier: str) -> OrderRecord | None: ...

    async def list_orders(self, statuses: list[OrderStatus], mode: TradingMode | None = None) -> list[OrderRecord]: ...

    async def list_filled_orders_without_position(
        self, mode: TradingMode
    ) -> list[tuple[OrderRecord, list[TradeRecord]]]:
        """Filled orders of the mode with their trades (oldest first) whose fills may not be in the positions.

        SQL: no ``position_fills`` marker, or a marker with realised P&L that is not yet on every trade.
        An implementation that cannot see the markers (in memory) returns every filled order with trades;
        ``TradingService.reconcile`` asks the position book which of them still need applying.
        """

    async def list_trades(
        self, *, mode: TradingMode | None = None, symbol: str | None = None, since: datetime | None = None
    ) -> list[TradeRecord]: ...

    async def save_ai_decision(self, decision: AIDecisionRecord) -> int: ...

    async def find_ai_decision_by_prompt_hash(self, prompt_hash: str) -> AIDecisionRecord | None: ...

    async def save_snapshot(self, snapshot: PortfolioSnapshotRecord) -> None: ...

    async def latest_snapshot(self, mode: TradingMode) -> PortfolioSnapshotRecord | None: ...

    async def save_cycle(self, cycle: CycleRecord) -> None: ...

    async def log_event(
        self, level: str, message: str, context: dict[str, Any] | None = None, source: str = "scheduler"
    ) -> None: ...

    async def record_announcement(self, message: str, context: dict[str, Any]) -> None:
        """An Upbit announcement: a ``system_logs`` line (source ``upbit``) and its ``announcement`` event."""
