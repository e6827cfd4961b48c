"""``ITradingRepository`` in memory: the same rules as the SQL repository (state transitions, trades
written once), for unit tests and the benchmark of the pipeline's own overhead."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from src.domain.decisions import DecisionSource
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, check_transition
from src.trading.repository import (
    AIDecisionRecord,
    CycleRecord,
    OrderRecord,
    PortfolioSnapshotRecord,
    TradeRecord,
)


class InMemoryTradingRepository:
    def __init__(self) -> None:
        self.orders: dict[str, OrderRecord] = {}
        self.trades: dict[str, TradeRecord] = {}
        self.decisions: list[AIDecisionRecord] = []
        self.snapshots: list[PortfolioSnapshotRecord] = []
        self.cycles: list[CycleRecord] = []
        self.logs: list[tuple[str, str, dict[str, Any] | None]] = []

    async def create_order(self, order: OrderRecord) -> OrderRecord:
        if order.identifier in self.orders:
            raise ValueError(f"order {order.identifier} already recorded")
        now = order.created_at or datetime.now(UTC)
        stored = replace(order, created_at=now, updated_at=now)
        self.orders[order.identifier] = stored
        return copy.copy(stored)

    def _apply(self, identifier: str, changes: dict[str, Any]) -> OrderRecord:
        order = self.orders[identifier]
        if "status" in changes:
            check_transition(order.status, OrderStatus(changes["status"]))
        for name, value in changes.items():
            setattr(order, name, value)
        return order

    async def update_order(self, identifier: str, **changes: Any) -> OrderRecord:
        return copy.copy(self._apply(identifier, changes))

    async def settle_order(self, identifier: str, changes: dict[str, Any], trades: list[TradeRecord]) -> OrderRecord:
        order = self._apply(identifier, changes)
        for trade in trades:
            self.trades.setdefault(trade.trade_id, copy.copy(trade))
        return copy.copy(order)

    async def record_realized_pnl(self, pnl_by_trade_id: dict[str, Decimal]) -> None:
        for trade_id, pnl in pnl_by_trade_id.items():
            if trade_id in self.trades:
                self.trades[trade_id].realized_pnl = pnl

    async def get_order(self, identifier: str) -> OrderRecord | None:
        order = self.orders.get(identifier)
        return None if order is None else copy.copy(order)

    async def list_orders(self, statuses: list[OrderStatus], mode: TradingMode | None = None) -> list[OrderRecord]:
        return [copy.copy(o) for o in self.orders.values() if o.status in statuses and (mode is None or o.mode is mode)]

    async def list_filled_orders_without_position(
        self, mode: TradingMode
    ) -> list[tuple[OrderRecord, list[TradeRecord]]]:
        """Every filled order of the mode with trades: the markers are in the risk store, out of sight here."""
        by_order: dict[str, list[TradeRecord]] = {}
        for trade in self.trades.values():
            if trade.order_identifier is not None:
                by_order.setdefault(trade.order_identifier, []).append(copy.copy(trade))
        return [
            (copy.copy(order), by_order[order.identifier])
            for order in self.orders.values()
            if order.mode is mode and order.status is OrderStatus.FILLED and order.identifier in by_order
        ]

    async def list_trades(
        self, *, mode: TradingMode | None = None, symbol: str | None = None, since: datetime | None = None
    ) -> list[TradeRecord]:
        return [
            copy.copy(t)
            for t in self.trades.values()
            if (mode is None or t.mode is mode)
            and (symbol is None or t.symbol == symbol)
            and (since is None or (t.created_at is not None and t.created_at >= since))
        ]

    async def save_ai_decision(self, decision: AIDecisionRecord) -> int:
        self.decisions.append(copy.copy(decision))
        return len(self.decisions)

    async def find_ai_decision_by_prompt_hash(self, prompt_hash: str) -> AIDecisionRecord | None:
        for decision in reversed(self.decisions):
            if decision.prompt_hash == prompt_hash and decision.source in (DecisionSource.AI, DecisionSource.CACHE):
                return copy.copy(decision)
        return None

    async def save_snapshot(self, snapshot: PortfolioSnapshotRecord) -> None:
        self.snapshots.append(copy.copy(snapshot))

    async def latest_snapshot(self, mode: TradingMode) -> PortfolioSnapshotRecord | None:
        matching = [s for s in self.snapshots if s.mode is mode]
        return copy.copy(matching[-1]) if matching else None

    async def save_cycle(self, cycle: CycleRecord) -> None:
        self.cycles.append(copy.copy(cycle))

    async def log_event(
        self, level: str, message: str, context: dict[str, Any] | None = None, source: str = "scheduler"
    ) -> None:
        self.logs.append((level, message, context))

    async def record_announcement(self, message: str, context: dict[str, Any]) -> None:
        self.logs.append(("warning", message, context))
