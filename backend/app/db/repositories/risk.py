"""SQL implementation of the risk and positions port (``src.risk.store.RiskStore``).

Positions and safe mode live in ``positions`` and ``risk_state``; the trade-spacing rules read the
``trades`` table (the pipeline's record of executions) and the unsettled rows of ``orders`` (pending or
open: sent, answer not settled) instead of keeping a second count. An order's
position change and its ``position_fills`` marker are one transaction (``apply_fill``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.outbox import add_event
from backend.app.db.repositories._mapping import row_to_record
from backend.app.db.types import utcnow
from backend.app.models import OrderRow, PositionFillRow, PositionRow, RiskStateRow, TradeRow
from src.domain.events import EventType
from src.domain.exits import ExitReason
from src.domain.modes import TradingMode
from src.domain.money import quantize_money
from src.domain.orders import TradeStatus
from src.exceptions import PositionConflict
from src.risk.store import (
    UNSETTLED,
    AppliedFill,
    PositionChange,
    PositionRecord,
    PositionStatus,
    RiskState,
    UnsettledOrder,
    close_arguments,
    unsettled_order_of,
)

_POSITION_STATE = (
    "amount",
    "avg_entry_price",
    "entry_fee",
    "highest_price",
    "stop_price",
    "take_profit_price",
    "trailing_stop_pct",
    "entry_atr",
    "realized_pnl",
)
_RISK_STATE = (
    "safe_mode",
    "safe_mode_reason",
    "safe_mode_since",
    "safe_mode_until",
    "peak_equity",
    "day_anchor_at",
    "day_anchor_equity",
    "week_anchor_at",
    "week_anchor_equity",
)


def _position(row: PositionRow) -> PositionRecord:
    return row_to_record(
        row, PositionRecord, status=PositionStatus(row.status), realized_pnl=row.realized_pnl or Decimal("0")
    )


def _open_row_of(position: PositionRecord) -> PositionRow:
    return PositionRow(
        symbol=position.symbol,
        mode=position.mode,
        status=PositionStatus.OPEN,
        entry_at=position.entry_at,
        **{name: getattr(position, name) for name in _POSITION_STATE},
    )


def _write_state(row: PositionRow, position: PositionRecord) -> None:
    for name in _POSITION_STATE:
        setattr(row, name, getattr(position, name))
    row.updated_at = utcnow()


async def _exit_event(session: AsyncSession, row: PositionRow, order_identifier: str | None = None) -> None:
    """The ``exit`` event of a position closed in this transaction."""
    data = {
        "position_id": row.id,
        "order_identifier": order_identifier,
        "reason": row.exit_reason,
        "amount": row.amount,
        "entry_price": row.avg_entry_price,
        "exit_price": row.exit_price,
        "realized_pnl": row.realized_pnl,
        "entry_at": row.entry_at,
        "closed_at": row.closed_at,
    }
    await add_event(session, EventType.EXIT, mode=row.mode, symbol=row.symbol, data=data)


def _write_close(
    row: PositionRow, *, exit_price: Decimal, reason: str, realized_pnl: Decimal, closed_at: datetime
) -> None:
    row.status = PositionStatus.CLOSED
    row.exit_price = exit_price
    row.exit_reason = ExitReason(reason)  # the column is the enum; an unknown reason fails here, not at flush
    row.realized_pnl = realized_pnl
    row.closed_at = closed_at
    row.updated_at = utcnow()


class SqlRiskStore:
    """``RiskStore`` over SQLAlchemy: ``SqlRiskStore(session_factory)``; one transaction per method."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    # --- positions ------------------------------------------------------------------------------
    async def open_position(self, position: PositionRecord) -> PositionRecord:
        row = _open_row_of(position)
        try:
            async with self._sessions.begin() as session:
                session.add(row)
                await session.flush()
                return _position(row)
        except IntegrityError as exc:
            raise PositionConflict(
                f"{position.mode} already has an open position in {position.symbol}",
                symbol=position.symbol,
                mode=position.mode,
            ) from exc

    async def get_open_position(self, mode: TradingMode, symbol: str) -> PositionRecord | None:
        query = select(PositionRow).where(
            PositionRow.mode == mode, PositionRow.symbol == symbol, PositionRow.status == PositionStatus.OPEN
        )
        async with self._sessions() as session:
            row = await session.scalar(query)
            return None if row is None else _position(row)

    async def list_open_positions(self, mode: TradingMode) -> list[PositionRecord]:
        query = (
            select(PositionRow)
            .where(PositionRow.mode == mode, PositionRow.status == PositionStatus.OPEN)
            .order_by(PositionRow.entry_at, PositionRow.id)
        )
        async with self._sessions() as session:
            return [_position(row) for row in await session.scalars(query)]

    @staticmethod
    async def _open_row(session: AsyncSession, position_id: int) -> PositionRow:
        row = await session.scalar(
            select(PositionRow)
            .where(PositionRow.id == position_id, PositionRow.status == PositionStatus.OPEN)
            .with_for_update()
        )
        if row is None:
            raise PositionConflict(f"no open position with id {position_id}", position_id=position_id)
        return row

    async def update_position(self, position: PositionRecord) -> PositionRecord:
        if position.id is None:
            raise PositionConflict("cannot update a position that was never stored (id is None)")
        async with self._sessions.begin() as session:
            row = await self._open_row(session, position.id)
            _write_state(row, position)
            await session.flush()
            return _position(row)

    async def raise_highest_price(self, position_id: int, price: Decimal) -> PositionRecord:
        async with self._sessions.begin() as session:
            row = await self._open_row(session, position_id)
            if price > row.highest_price:
                row.highest_price = price
                row.updated_at = utcnow()
                await session.flush()
            return _position(row)

    async def close_position(
        self,
        position_id: int,
        *,
        exit_price: Decimal,
        reason: str,
        realized_pnl: Decimal,
        closed_at: datetime,
    ) -> PositionRecord:
        async with self._sessions.begin() as session:
            row = await self._open_row(session, position_id)
            _write_close(row, exit_price=exit_price, reason=reason, realized_pnl=realized_pnl, closed_at=closed_at)
            await session.flush()
            await _exit_event(session, row)
            return _position(row)

    async def list_closed_positions(self, mode: TradingMode, limit: int | None = None) -> list[PositionRecord]:
        query = (
            select(PositionRow)
            .where(PositionRow.mode == mode, PositionRow.status == PositionStatus.CLOSED)
            .order_by(PositionRow.closed_at.desc(), PositionRow.id.desc())
            .limit(limit)
        )
        async with self._sessions() as session:
            return [_position(row) for row in await session.scalars(query)]

    # --- fills applied exactly once -------------------------------------------------------------
    async def apply_fill(self, change: PositionChange) -> AppliedFill:
        try:
            async with self._sessions.begin() as session:
                earlier = await self._applied(session, change.order_identifier)
                if earlier is not None:
                    return earlier
                row = await self._change_position(session, change.position)
                session.add(
                    PositionFillRow(
                        order_identifier=change.order_identifier,
                        position_id=None if row is None else row.id,
                        mode=change.mode,
                        realized_pnl=change.realized_pnl,
                        applied_at=change.at,
                    )
                )
                await session.flush()
                if row is not None and row.status == PositionStatus.CLOSED:
                    await _exit_event(session, row, change.order_identifier)
                position = None if row is None else _position(row)
                pnl = None if change.realized_pnl is None else quantize_money(change.realized_pnl)
                return AppliedFill(change.order_identifier, change.mode, change.at, position, pnl)
        except IntegrityError as exc:
            # Applied concurrently (the marker is unique) or a second open position: nothing was written.
            earlier = await self.applied_fill(change.order_identifier)
            if earlier is not None:
                return earlier
            position = change.position
            raise PositionConflict(
                f"{change.mode} already has an open position in {position.symbol if position else '?'}",
                order_identifier=change.order_identifier,
            ) from exc

    async def applied_fill(self, order_identifier: str) -> AppliedFill | None:
        async with self._sessions() as session:
            return await self._applied(session, order_identifier)

    @staticmethod
    async def _applied(session: AsyncSession, order_identifier: str) -> AppliedFill | None:
        fill = await session.scalar(select(PositionFillRow).where(PositionFillRow.order_identifier == order_identifier))
        if fill is None:
            return None
        position = None
        if fill.position_id is not None:
            position = _position(await session.get_one(PositionRow, fill.position_id))
        return AppliedFill(order_identifier, fill.mode, fill.applied_at, position, fill.realized_pnl, replayed=True)

    async def _change_position(self, session: AsyncSession, position: PositionRecord | None) -> PositionRow | None:
        if position is None:
            return None
        if position.id is None:
            row = _open_row_of(position)
            session.add(row)
            await session.flush()
            return row
        row = await self._open_row(session, position.id)
        if position.is_open:
            _write_state(row, position)
        else:
            _write_close(row, **close_arguments(position))
        await session.flush()
        return row

    # --- risk state -----------------------------------------------------------------------------
    async def load_risk_state(self, mode: TradingMode) -> RiskState:
        async with self._sessions() as session:
            row = await session.scalar(select(RiskStateRow).where(RiskStateRow.mode == mode))
            return RiskState(mode=mode) if row is None else row_to_record(row, RiskState)

    async def save_risk_state(self, state: RiskState) -> None:
        async with self._sessions.begin() as session:
            row = await session.scalar(select(RiskStateRow).where(RiskStateRow.mode == state.mode).with_for_update())
            if row is None:
                row = RiskStateRow(mode=state.mode)
                session.add(row)
            was_safe = bool(row.safe_mode)
            for name in _RISK_STATE:
                setattr(row, name, getattr(state, name))
            row.updated_at = utcnow()
            if bool(state.safe_mode) != was_safe:
                event_type = EventType.SAFE_MODE_ON if state.safe_mode else EventType.SAFE_MODE_OFF
                data = {
                    "reason": state.safe_mode_reason,
                    "since": state.safe_mode_since,
                    "until": state.safe_mode_until,
                }
                await add_event(session, event_type, mode=state.mode, data=data)

    # --- trade history (read from trades) ---------------------------------------------------------
    async def trade_executed(self, mode: TradingMode, at: datetime, order_identifier: str) -> None:
        """Nothing to do: the trades table is the history, written with the order."""

    async def last_trade_at(self, mode: TradingMode) -> datetime | None:
        query = select(func.max(TradeRow.created_at)).where(
            TradeRow.mode == mode, TradeRow.status == TradeStatus.COMPLETED
        )
        async with self._sessions() as session:
            return await session.scalar(query)

    async def count_trades_since(self, mode: TradingMode, since: datetime) -> int:
        # Fills of one order count once; a trade without an order counts on its own.
        order_key = func.coalesce(TradeRow.order_id, -TradeRow.id)
        query = select(func.count(func.distinct(order_key))).where(
            TradeRow.mode == mode, TradeRow.status == TradeStatus.COMPLETED, TradeRow.created_at >= since
        )
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    async def list_unsettled_orders(self, mode: TradingMode) -> list[UnsettledOrder]:
        query = (
            select(OrderRow)
            .where(OrderRow.mode == mode, OrderRow.status.in_(UNSETTLED))
            .order_by(OrderRow.created_at, OrderRow.id)
        )
        async with self._sessions() as session:
            return [unsettled_order_of(row) for row in await session.scalars(query)]
