"""SQL implementation of the risk and positions port (``src.risk.store.RiskStore``).

Positions and safe mode live in ``positions`` and ``risk_state``; the trade-spacing rules read the
``trades`` table (the pipeline's record of executions) instead of keeping a second count.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.repositories._mapping import row_to_record
from backend.app.db.types import utcnow
from backend.app.models import PositionRow, RiskStateRow, TradeRow
from src.config.settings import TradingMode
from src.exceptions import PositionConflict
from src.risk.store import PositionRecord, PositionStatus, RiskState
from src.trading.orders import TradeStatus

_POSITION_STATE = (
    "amount",
    "avg_entry_price",
    "entry_fee",
    "highest_price",
    "stop_price",
    "take_profit_price",
    "trailing_stop_pct",
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


class SqlRiskStore:
    """``RiskStore`` over SQLAlchemy: ``SqlRiskStore(session_factory)``; one transaction per method."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    # --- positions ------------------------------------------------------------------------------
    async def open_position(self, position: PositionRecord) -> PositionRecord:
        row = PositionRow(
            symbol=position.symbol,
            mode=position.mode,
            status=PositionStatus.OPEN.value,
            entry_at=position.entry_at,
            **{name: getattr(position, name) for name in _POSITION_STATE},
        )
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
            PositionRow.mode == mode, PositionRow.symbol == symbol, PositionRow.status == PositionStatus.OPEN.value
        )
        async with self._sessions() as session:
            row = await session.scalar(query)
            return None if row is None else _position(row)

    async def list_open_positions(self, mode: TradingMode) -> list[PositionRecord]:
        query = (
            select(PositionRow)
            .where(PositionRow.mode == mode, PositionRow.status == PositionStatus.OPEN.value)
            .order_by(PositionRow.entry_at, PositionRow.id)
        )
        async with self._sessions() as session:
            return [_position(row) for row in await session.scalars(query)]

    @staticmethod
    async def _open_row(session: AsyncSession, position_id: int) -> PositionRow:
        row = await session.scalar(
            select(PositionRow)
            .where(PositionRow.id == position_id, PositionRow.status == PositionStatus.OPEN.value)
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
            for name in _POSITION_STATE:
                setattr(row, name, getattr(position, name))
            row.updated_at = utcnow()
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
            row.status = PositionStatus.CLOSED.value
            row.exit_price = exit_price
            row.exit_reason = reason
            row.realized_pnl = realized_pnl
            row.closed_at = closed_at
            row.updated_at = utcnow()
            await session.flush()
            return _position(row)

    async def list_closed_positions(self, mode: TradingMode, limit: int | None = None) -> list[PositionRecord]:
        query = (
            select(PositionRow)
            .where(PositionRow.mode == mode, PositionRow.status == PositionStatus.CLOSED.value)
            .order_by(PositionRow.closed_at.desc(), PositionRow.id.desc())
            .limit(limit)
        )
        async with self._sessions() as session:
            return [_position(row) for row in await session.scalars(query)]

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
            for name in _RISK_STATE:
                setattr(row, name, getattr(state, name))
            row.updated_at = utcnow()

    # --- trade history (read from trades) ---------------------------------------------------------
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
