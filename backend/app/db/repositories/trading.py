"""SQL implementation of the trading domain's persistence port (``src.trading.repository``)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.outbox import add_event
from backend.app.db.repositories._mapping import record_values, row_to_record
from backend.app.db.types import utcnow
from backend.app.models import (
    AIDecisionRow,
    OrderRow,
    PortfolioSnapshotRow,
    PositionFillRow,
    SystemLogRow,
    TradeRow,
    TradingCycleRow,
)
from src.domain.events import EventType
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, check_transition
from src.trading.repository import (
    AIDecisionRecord,
    CycleRecord,
    OrderRecord,
    PortfolioSnapshotRecord,
    TradeRecord,
)


class OrderNotRecorded(LookupError):
    """No order row with that identifier."""


_ORDER_EVENT = {
    OrderStatus.FILLED: EventType.ORDER_FILLED,
    OrderStatus.FAILED: EventType.ORDER_FAILED,
    OrderStatus.CANCELLED: EventType.ORDER_FAILED,
}
_ERROR_LEVELS = ("error", "critical")


def _order_data(row: OrderRow) -> dict[str, Any]:
    return {
        "identifier": row.identifier,
        "side": row.side,
        "order_type": row.order_type,
        "status": row.status,
        "price": row.price,
        "amount": row.amount,
        "requested_total": row.requested_total,
        "filled_amount": row.filled_amount,
        "avg_fill_price": row.avg_fill_price,
        "paid_fee": row.paid_fee,
        "reason": row.reason,
        "exit_reason": row.exit_reason,
        "error": row.error_message[:300] if row.error_message else None,
        "cycle_id": row.cycle_id,
    }


async def _order_event(session: AsyncSession, row: OrderRow, before: OrderStatus) -> None:
    """An order that reached filled, failed or cancelled in this transaction gets its event."""
    event_type = _ORDER_EVENT.get(OrderStatus(row.status))
    if event_type is not None and row.status != before:
        await add_event(session, event_type, mode=row.mode, symbol=row.symbol, data=_order_data(row))


class SqlTradingRepository:
    """``mode`` is the trading mode of the process (the engine's): the events of rows that carry none (AI
    decisions, log lines) are recorded under it."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], mode: TradingMode | None = None) -> None:
        self._sessions = sessions
        self.mode = mode

    # --- orders and trades -------------------------------------------------------------------
    async def create_order(self, order: OrderRecord) -> OrderRecord:
        async with self._sessions.begin() as session:
            row = OrderRow(**record_values(order, exclude={"created_at", "updated_at"}))
            if order.created_at is not None:  # a simulated clock (replay) dates its own orders
                row.created_at = order.created_at
                row.updated_at = order.created_at
            session.add(row)
            await session.flush()
            await add_event(session, EventType.ORDER_PLACED, mode=row.mode, symbol=row.symbol, data=_order_data(row))
            return row_to_record(row, OrderRecord)

    async def _order_row(self, session: AsyncSession, identifier: str) -> OrderRow:
        row = await session.scalar(select(OrderRow).where(OrderRow.identifier == identifier).with_for_update())
        if row is None:
            raise OrderNotRecorded(identifier)
        return row

    @staticmethod
    def _apply(row: OrderRow, changes: dict[str, Any]) -> None:
        if "status" in changes:
            check_transition(row.status, OrderStatus(changes["status"]))
        for name, value in changes.items():
            if not hasattr(OrderRow, name) or name in ("id", "identifier", "order_id", "created_at"):
                raise AttributeError(f"orders.{name} cannot be changed")
            setattr(row, name, value)
        row.updated_at = utcnow()

    async def update_order(self, identifier: str, **changes: Any) -> OrderRecord:
        async with self._sessions.begin() as session:
            row = await self._order_row(session, identifier)
            before = OrderStatus(row.status)
            self._apply(row, changes)
            await _order_event(session, row, before)
            return row_to_record(row, OrderRecord)

    async def settle_order(self, identifier: str, changes: dict[str, Any], trades: list[TradeRecord]) -> OrderRecord:
        async with self._sessions.begin() as session:
            row = await self._order_row(session, identifier)
            before = OrderStatus(row.status)
            self._apply(row, changes)
            known = set(
                await session.scalars(
                    select(TradeRow.trade_id).where(TradeRow.trade_id.in_([t.trade_id for t in trades]))
                )
            )
            new = [trade for trade in trades if trade.trade_id not in known]
            for trade in new:
                values = record_values(trade, exclude={"order_identifier", "created_at"})
                session.add(TradeRow(**values, order_id=row.id, created_at=trade.created_at or utcnow()))
            await _order_event(session, row, before)
            for trade in new:
                await add_event(session, EventType.TRADE, mode=trade.mode, symbol=trade.symbol, data=_trade_data(trade))
            return row_to_record(row, OrderRecord)

    async def record_realized_pnl(self, pnl_by_trade_id: dict[str, Decimal]) -> None:
        if not pnl_by_trade_id:
            return
        async with self._sessions.begin() as session:
            rows = await session.scalars(select(TradeRow).where(TradeRow.trade_id.in_(list(pnl_by_trade_id))))
            for row in rows:
                row.realized_pnl = pnl_by_trade_id[row.trade_id]
                row.updated_at = utcnow()

    async def get_order(self, identifier: str) -> OrderRecord | None:
        async with self._sessions() as session:
            row = await session.scalar(select(OrderRow).where(OrderRow.identifier == identifier))
            return None if row is None else row_to_record(row, OrderRecord)

    async def list_orders(self, statuses: list[OrderStatus], mode: TradingMode | None = None) -> list[OrderRecord]:
        query = select(OrderRow).where(OrderRow.status.in_(statuses)).order_by(OrderRow.id)
        if mode is not None:
            query = query.where(OrderRow.mode == mode)
        async with self._sessions() as session:
            return [row_to_record(row, OrderRecord) for row in await session.scalars(query)]

    async def list_filled_orders_without_position(
        self, mode: TradingMode
    ) -> list[tuple[OrderRecord, list[TradeRecord]]]:
        marker = PositionFillRow.order_identifier == OrderRow.identifier
        pnl_not_written = and_(
            exists().where(marker, PositionFillRow.realized_pnl.is_not(None)),
            exists().where(TradeRow.order_id == OrderRow.id, TradeRow.realized_pnl.is_(None)),
        )
        query = (
            select(OrderRow)
            .where(
                OrderRow.mode == mode,
                OrderRow.status == OrderStatus.FILLED,
                exists().where(TradeRow.order_id == OrderRow.id),
                or_(~exists().where(marker), pnl_not_written),
            )
            .order_by(OrderRow.id)
        )
        async with self._sessions() as session:
            orders = list(await session.scalars(query))
            if not orders:
                return []
            trades = await session.scalars(
                select(TradeRow).where(TradeRow.order_id.in_([o.id for o in orders])).order_by(TradeRow.id)
            )
            by_order: dict[int, list[TradeRecord]] = {}
            identifiers = {o.id: o.identifier for o in orders}
            for trade in trades:
                order_id = trade.order_id
                assert order_id is not None  # selected by order_id IN (...): never NULL here
                record = row_to_record(trade, TradeRecord, order_identifier=identifiers[order_id])
                by_order.setdefault(order_id, []).append(record)
            return [(row_to_record(o, OrderRecord), by_order[o.id]) for o in orders]

    async def list_trades(
        self, *, mode: TradingMode | None = None, symbol: str | None = None, since: datetime | None = None
    ) -> list[TradeRecord]:
        query = select(TradeRow, OrderRow.identifier).outerjoin(OrderRow, TradeRow.order_id == OrderRow.id)
        if mode is not None:
            query = query.where(TradeRow.mode == mode)
        if symbol is not None:
            query = query.where(TradeRow.symbol == symbol)
        if since is not None:
            query = query.where(TradeRow.created_at >= since)
        async with self._sessions() as session:
            result = await session.execute(query.order_by(TradeRow.created_at, TradeRow.id))
            return [row_to_record(row, TradeRecord, order_identifier=identifier) for row, identifier in result]

    # --- AI decisions ---------------------------------------------------------------------------
    async def save_ai_decision(self, decision: AIDecisionRecord) -> int:
        async with self._sessions.begin() as session:
            row = AIDecisionRow(**record_values(decision, exclude={"created_at"}))
            if decision.created_at is not None:
                row.created_at = decision.created_at
            session.add(row)
            await session.flush()
            if decision.purpose == "decision":  # the quick filter's model calls are no decision of the cycle
                data = {
                    "id": row.id,
                    "decision": decision.decision,
                    "final_decision": decision.final_decision,
                    "confidence": decision.confidence,
                    "reason": (decision.reason or "")[:500] or None,
                    "source": decision.source,
                    "overridden": decision.overridden,
                    "override_reasons": decision.override_reasons,
                    "cost_usd": decision.cost_usd,
                    "candle_at": decision.candle_at,
                    "cycle_id": decision.cycle_id,
                }
                await add_event(session, EventType.DECISION, mode=self.mode, symbol=decision.symbol, data=data)
            return row.id

    async def find_ai_decision_by_prompt_hash(self, prompt_hash: str) -> AIDecisionRecord | None:
        query = (
            select(AIDecisionRow)
            .where(AIDecisionRow.prompt_hash == prompt_hash, AIDecisionRow.source.in_(("ai", "cache")))
            .order_by(AIDecisionRow.id.desc())
            .limit(1)
        )
        async with self._sessions() as session:
            row = await session.scalar(query)
            return None if row is None else row_to_record(row, AIDecisionRecord)

    async def ai_spend_usd(self, since: datetime) -> Decimal:
        """USD recorded for model calls at or after ``since``, every purpose (``src.ai.usage.AISpendLedger``)."""
        spent_tokens = or_(AIDecisionRow.prompt_tokens > 0, AIDecisionRow.completion_tokens > 0)
        where = (AIDecisionRow.created_at >= since, spent_tokens)
        async with self._sessions() as session:
            if session.get_bind().dialect.name == "sqlite":  # money is text there: add it up exactly in Python
                costs = await session.scalars(select(AIDecisionRow.cost_usd).where(*where))
                return sum(costs, Decimal("0"))
            total = await session.scalar(select(func.sum(AIDecisionRow.cost_usd)).where(*where))
            return Decimal("0") if total is None else Decimal(total)

    # --- portfolio, cycles, logs ------------------------------------------------------------------
    async def save_snapshot(self, snapshot: PortfolioSnapshotRecord) -> None:
        async with self._sessions.begin() as session:
            row = PortfolioSnapshotRow(**record_values(snapshot, exclude={"created_at"}))
            if snapshot.created_at is not None:
                row.created_at = snapshot.created_at
            session.add(row)

    async def latest_snapshot(self, mode: TradingMode) -> PortfolioSnapshotRecord | None:
        query = (
            select(PortfolioSnapshotRow)
            .where(PortfolioSnapshotRow.mode == mode)
            .order_by(PortfolioSnapshotRow.created_at.desc(), PortfolioSnapshotRow.id.desc())
            .limit(1)
        )
        async with self._sessions() as session:
            row = await session.scalar(query)
            return None if row is None else row_to_record(row, PortfolioSnapshotRecord)

    async def save_cycle(self, cycle: CycleRecord) -> None:
        async with self._sessions.begin() as session:
            values = record_values(cycle, exclude={"stages"})
            session.add(TradingCycleRow(**values, stages=[asdict(stage) for stage in cycle.stages]))

    async def log_event(
        self, level: str, message: str, context: dict[str, Any] | None = None, source: str = "scheduler"
    ) -> None:
        async with self._sessions.begin() as session:
            session.add(SystemLogRow(level=level, message=message, context=context, source=source))
            if level in _ERROR_LEVELS:
                await session.flush()
                await add_event(
                    session,
                    EventType.ERROR,
                    mode=self.mode,
                    symbol=_symbol_of(context),
                    data=_error_data(level, message, context, source),
                )

    async def record_announcement(self, message: str, context: dict[str, Any]) -> None:
        async with self._sessions.begin() as session:
            session.add(SystemLogRow(level="warning", message=message, context=context, source="upbit"))
            await session.flush()
            markets = context.get("markets") or []
            symbol = markets[0] if len(markets) == 1 else None
            await add_event(session, EventType.ANNOUNCEMENT, mode=self.mode, symbol=symbol, data=context)


def _trade_data(trade: TradeRecord) -> dict[str, Any]:
    return {
        "trade_id": trade.trade_id,
        "order_identifier": trade.order_identifier,
        "side": trade.side,
        "price": trade.price,
        "amount": trade.amount,
        "total": trade.total,
        "fee": trade.fee,
        "exit_reason": trade.exit_reason,
        "created_at": trade.created_at,
    }


def _symbol_of(context: dict[str, Any] | None) -> str | None:
    symbol = (context or {}).get("symbol")
    return symbol if isinstance(symbol, str) else None


def _error_data(level: str, message: str, context: dict[str, Any] | None, source: str) -> dict[str, Any]:
    """The log line, its context cut to short scalar values (the full context stays in ``system_logs``)."""
    small = {
        key: value if not isinstance(value, str) else value[:300]
        for key, value in (context or {}).items()
        if isinstance(value, str | int | float | bool | Decimal)
    }
    return {"level": level, "message": message[:500], "source": source, "context": small}
