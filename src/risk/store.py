"""The persistence port of risk and positions: records, the ``RiskStore`` protocol, and an in-memory store.

``src/`` never writes SQL; ``backend/app/db/repositories/risk.py`` (``SqlRiskStore``) implements this
protocol over the ``positions``, ``position_fills``, ``risk_state`` and ``trades`` tables.
``InMemoryRiskStore`` keeps the same semantics in dictionaries, for unit tests and for runs without a
database.

Money is ``Decimal`` with at most 8 decimals (the database's NUMERIC(20, 8)); datetimes are UTC-aware.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from src.domain.modes import TradingMode
from src.domain.money import ZERO, quantize_money
from src.domain.orders import OrderStatus, Side
from src.exceptions import PositionConflict
from src.risk.exits import trailing_for


class PositionStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(slots=True)
class PositionRecord:
    """One position of a mode in one symbol. At most one is open per (mode, symbol).

    ``amount`` is the base volume still held (for a closed position: the volume held when the final
    exit began). ``entry_fee`` is the buy fee (KRW) not yet charged against a sale: each sale takes
    its share. ``realized_pnl`` accumulates over partial exits, net of buy and sell fees.
    ``stop_price``/``take_profit_price`` are set at entry by the strategy's exit policy from the fill and
    ``entry_atr`` (the ATR(14) of the decision bar; ``None`` when none came with the fill), recomputed when the
    position grows or the policy changes; the trailing stop follows ``highest_price`` at ``trailing_stop_pct``
    below it (``None`` = off).
    """

    symbol: str
    mode: TradingMode
    amount: Decimal
    avg_entry_price: Decimal
    entry_at: datetime
    highest_price: Decimal
    entry_fee: Decimal = ZERO
    stop_price: Decimal | None = None
    take_profit_price: Decimal | None = None
    trailing_stop_pct: Decimal | None = None
    entry_atr: Decimal | None = None
    status: PositionStatus = PositionStatus.OPEN
    realized_pnl: Decimal = ZERO
    closed_at: datetime | None = None
    exit_price: Decimal | None = None
    exit_reason: str | None = None
    id: int | None = None

    @property
    def is_open(self) -> bool:
        return self.status is PositionStatus.OPEN

    @property
    def trailing_stop_price(self) -> Decimal | None:
        """The trailing level implied by the highest price so far, or ``None`` when trailing is off."""
        if not self.trailing_stop_pct:
            return None
        return trailing_for(self.highest_price, float(self.trailing_stop_pct))


@dataclass(slots=True)
class RiskState:
    """Circuit breakers and safe mode of one trading mode, persisted so they survive restarts.

    ``safe_mode_until``: when safe mode ends by itself (``None`` while in safe mode = only the
    operator can end it). Day and week anchors are the first equity seen in the current UTC day and
    ISO week (Monday 00:00 UTC); a loss is measured from them.
    """

    mode: TradingMode
    safe_mode: bool = False
    safe_mode_reason: str | None = None
    safe_mode_since: datetime | None = None
    safe_mode_until: datetime | None = None
    peak_equity: Decimal | None = None
    day_anchor_at: datetime | None = None
    day_anchor_equity: Decimal | None = None
    week_anchor_at: datetime | None = None
    week_anchor_equity: Decimal | None = None

    def safe_mode_active(self, now: datetime) -> bool:
        """In safe mode and its time, if it has one, has not yet passed."""
        return self.safe_mode and (self.safe_mode_until is None or now < self.safe_mode_until)


@dataclass(frozen=True, slots=True)
class PositionChange:
    """What one executed order does to the positions, written together with its ``position_fills`` marker.

    ``position`` is the position after the fill: without an ``id`` it is opened; open with an ``id`` it
    is updated; closed it is closed (exit price, reason, total realised P&L and time from the record);
    ``None`` changes no position (a sell of an untracked holding) and only records the order as applied.
    ``realized_pnl`` is what this order realised (sells of a tracked position only).
    """

    order_identifier: str
    mode: TradingMode
    at: datetime
    position: PositionRecord | None
    realized_pnl: Decimal | None = None


@dataclass(frozen=True, slots=True)
class AppliedFill:
    """An order's fills were applied to the positions: the ``position_fills`` row, at most one per order.

    ``position`` is that position as it is now (``None`` when the order touched none); ``realized_pnl`` is
    what the order realised. ``replayed`` is true when the order had already been applied and nothing
    changed this time.
    """

    order_identifier: str
    mode: TradingMode
    applied_at: datetime
    position: PositionRecord | None = None
    realized_pnl: Decimal | None = None
    replayed: bool = False


UNSETTLED = (OrderStatus.PENDING, OrderStatus.OPEN)


@dataclass(frozen=True, slots=True)
class UnsettledOrder:
    """An order written but not settled (``pending``: its answer may be lost; ``open``: resting at the exchange).

    Until reconciliation settles it the risk rules count it as a trade (spacing, trades per day) and a
    buy as a position in ``symbol`` worth ``requested_total`` KRW (position count, exposure): it may
    well have filled.
    """

    identifier: str
    symbol: str
    side: Side
    status: OrderStatus
    created_at: datetime | None  # None: the time is unknown, counted as "now"
    requested_total: Decimal | None = None


class UnsettledOrderSource(Protocol):
    """Where the in-memory store finds unsettled orders: the trading repository (``list_orders``)."""

    async def list_orders(self, statuses: list[OrderStatus], mode: TradingMode | None = None) -> list[Any]: ...


class RiskStore(Protocol):
    """Positions, risk state and the trade history the spacing rules read. Every method is one transaction."""

    async def open_position(self, position: PositionRecord) -> PositionRecord:
        """Insert an open position and return it with its ``id``.

        Raises ``PositionConflict`` when the mode already has an open position in that symbol.
        """

    async def get_open_position(self, mode: TradingMode, symbol: str) -> PositionRecord | None: ...

    async def list_open_positions(self, mode: TradingMode) -> list[PositionRecord]:
        """Open positions of the mode, oldest entry first."""

    async def update_position(self, position: PositionRecord) -> PositionRecord:
        """Write amount, entry price and fee, highest price, levels and realised P&L of an open position.

        Raises ``PositionConflict`` when no open position has that ``id``.
        """

    async def raise_highest_price(self, position_id: int, price: Decimal) -> PositionRecord:
        """Set ``highest_price`` to ``price`` if that is higher (it never goes down); return the position."""

    async def close_position(
        self,
        position_id: int,
        *,
        exit_price: Decimal,
        reason: str,
        realized_pnl: Decimal,
        closed_at: datetime,
    ) -> PositionRecord:
        """Mark an open position closed with its exit price, reason and total realised P&L."""

    async def list_closed_positions(self, mode: TradingMode, limit: int | None = None) -> list[PositionRecord]:
        """Closed positions of the mode, most recently closed first."""

    async def apply_fill(self, change: PositionChange) -> AppliedFill:
        """Open, update or close the position AND mark the order applied, in one transaction.

        An order applied before changes nothing: its earlier outcome comes back (``replayed=True``).
        Raises ``PositionConflict`` as ``open_position``/``update_position``/``close_position`` do (then
        nothing is written, the marker neither).
        """

    async def applied_fill(self, order_identifier: str) -> AppliedFill | None:
        """The marker of an order already applied to the positions (``replayed=True``), or ``None``."""

    async def load_risk_state(self, mode: TradingMode) -> RiskState:
        """The stored state, or a fresh ``RiskState(mode)`` when none was saved yet."""

    async def save_risk_state(self, state: RiskState) -> None:
        """Insert or replace the state of ``state.mode``."""

    async def trade_executed(self, mode: TradingMode, at: datetime, order_identifier: str) -> None:
        """The execution side recorded an order's trades. A store that reads the trades table itself (SQL)
        has nothing to do; one without it (memory) remembers the trade for spacing and trades per day."""

    async def last_trade_at(self, mode: TradingMode) -> datetime | None:
        """Time of the most recent completed trade (any side) of the mode."""

    async def count_trades_since(self, mode: TradingMode, since: datetime) -> int:
        """Executed orders of the mode (any side) with a completed trade at or after ``since``.

        An order filled in several pieces counts once.
        """

    async def list_unsettled_orders(self, mode: TradingMode) -> list[UnsettledOrder]:
        """Orders of the mode still ``pending`` or ``open`` (not settled by the exchange's answer), oldest first."""


@dataclass(frozen=True, slots=True)
class _FillMark:
    mode: TradingMode
    applied_at: datetime
    position_id: int | None
    realized_pnl: Decimal | None


@dataclass(slots=True)
class _TradeMark:
    at: datetime
    order_key: str


@dataclass
class InMemoryRiskStore:
    """``RiskStore`` in dictionaries: same rules and precision as the SQL store, nothing persisted.

    Trades arrive through ``trade_executed`` (the execution side's fills); tests add them with ``record_trade``.
    Unsettled orders are read from ``orders`` (the trading repository the pipeline writes orders to);
    without one there are none.
    """

    orders: UnsettledOrderSource | None = None
    _positions: dict[int, PositionRecord] = field(default_factory=dict)
    _states: dict[TradingMode, RiskState] = field(default_factory=dict)
    _trades: dict[TradingMode, list[_TradeMark]] = field(default_factory=dict)
    _fills: dict[str, _FillMark] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def record_trade(self, mode: TradingMode, at: datetime, order_id: str | None = None) -> None:
        """Remember an executed trade (fills sharing an ``order_id`` count as one trade)."""
        key = order_id if order_id is not None else f"trade-{next(self._ids)}"
        self._trades.setdefault(mode, []).append(_TradeMark(at=at, order_key=key))

    async def trade_executed(self, mode: TradingMode, at: datetime, order_identifier: str) -> None:
        self.record_trade(mode, at, order_identifier)

    @staticmethod
    def _stored(position: PositionRecord) -> PositionRecord:
        return replace(
            position,
            amount=quantize_money(position.amount),
            avg_entry_price=quantize_money(position.avg_entry_price),
            highest_price=quantize_money(position.highest_price),
            entry_fee=quantize_money(position.entry_fee),
            stop_price=None if position.stop_price is None else quantize_money(position.stop_price),
            take_profit_price=(
                None if position.take_profit_price is None else quantize_money(position.take_profit_price)
            ),
            entry_atr=None if position.entry_atr is None else quantize_money(position.entry_atr),
            realized_pnl=quantize_money(position.realized_pnl),
        )

    def _open_by_id(self, position_id: int) -> PositionRecord:
        position = self._positions.get(position_id)
        if position is None or not position.is_open:
            raise PositionConflict(f"no open position with id {position_id}", position_id=position_id)
        return position

    async def open_position(self, position: PositionRecord) -> PositionRecord:
        if await self.get_open_position(position.mode, position.symbol) is not None:
            raise PositionConflict(
                f"{position.mode} already has an open position in {position.symbol}",
                symbol=position.symbol,
                mode=position.mode,
            )
        stored = self._stored(replace(position, id=next(self._ids), status=PositionStatus.OPEN))
        self._positions[stored.id] = stored  # type: ignore[index]
        return copy.copy(stored)

    async def get_open_position(self, mode: TradingMode, symbol: str) -> PositionRecord | None:
        for position in self._positions.values():
            if position.is_open and position.mode is mode and position.symbol == symbol:
                return copy.copy(position)
        return None

    async def list_open_positions(self, mode: TradingMode) -> list[PositionRecord]:
        found = [p for p in self._positions.values() if p.is_open and p.mode is mode]
        return [copy.copy(p) for p in sorted(found, key=lambda p: (p.entry_at, p.id or 0))]

    async def update_position(self, position: PositionRecord) -> PositionRecord:
        if position.id is None:
            raise PositionConflict("cannot update a position that was never stored (id is None)")
        current = self._open_by_id(position.id)
        updated = self._stored(replace(position, status=current.status, mode=current.mode, symbol=current.symbol))
        self._positions[position.id] = updated
        return copy.copy(updated)

    async def raise_highest_price(self, position_id: int, price: Decimal) -> PositionRecord:
        current = self._open_by_id(position_id)
        if price > current.highest_price:
            current.highest_price = quantize_money(price)
        return copy.copy(current)

    async def close_position(
        self,
        position_id: int,
        *,
        exit_price: Decimal,
        reason: str,
        realized_pnl: Decimal,
        closed_at: datetime,
    ) -> PositionRecord:
        current = self._open_by_id(position_id)
        current.status = PositionStatus.CLOSED
        current.exit_price = quantize_money(exit_price)
        current.exit_reason = reason
        current.realized_pnl = quantize_money(realized_pnl)
        current.closed_at = closed_at
        return copy.copy(current)

    async def list_closed_positions(self, mode: TradingMode, limit: int | None = None) -> list[PositionRecord]:
        closed = [p for p in self._positions.values() if not p.is_open and p.mode is mode]
        closed.sort(key=lambda p: (p.closed_at, p.id or 0), reverse=True)
        return [copy.copy(p) for p in closed[:limit]]

    async def apply_fill(self, change: PositionChange) -> AppliedFill:
        earlier = await self.applied_fill(change.order_identifier)
        if earlier is not None:
            return earlier
        position = change.position
        stored: PositionRecord | None
        if position is None:
            stored = None
        elif position.id is None:
            stored = await self.open_position(position)
        elif position.is_open:
            stored = await self.update_position(position)
        else:
            stored = await self.close_position(position.id, **close_arguments(position))
        pnl = None if change.realized_pnl is None else quantize_money(change.realized_pnl)
        position_id = None if stored is None else stored.id
        self._fills[change.order_identifier] = _FillMark(change.mode, change.at, position_id, pnl)
        return AppliedFill(change.order_identifier, change.mode, change.at, stored, pnl)

    async def applied_fill(self, order_identifier: str) -> AppliedFill | None:
        mark = self._fills.get(order_identifier)
        if mark is None:
            return None
        position = None if mark.position_id is None else copy.copy(self._positions[mark.position_id])
        return AppliedFill(order_identifier, mark.mode, mark.applied_at, position, mark.realized_pnl, replayed=True)

    async def load_risk_state(self, mode: TradingMode) -> RiskState:
        state = self._states.get(mode)
        return copy.copy(state) if state is not None else RiskState(mode=mode)

    async def save_risk_state(self, state: RiskState) -> None:
        self._states[state.mode] = copy.copy(state)

    async def last_trade_at(self, mode: TradingMode) -> datetime | None:
        return max((mark.at for mark in self._trades.get(mode, [])), default=None)

    async def count_trades_since(self, mode: TradingMode, since: datetime) -> int:
        return len({mark.order_key for mark in self._trades.get(mode, []) if mark.at >= since})

    async def list_unsettled_orders(self, mode: TradingMode) -> list[UnsettledOrder]:
        if self.orders is None:
            return []
        found = [unsettled_order_of(order) for order in await self.orders.list_orders(list(UNSETTLED), mode)]
        return sorted(found, key=lambda order: (order.created_at is None, order.created_at or datetime.min))


def unsettled_order_of(order: Any) -> UnsettledOrder:
    """An ``UnsettledOrder`` from an order record or row (identifier, symbol, side, status, created_at, total)."""
    return UnsettledOrder(
        identifier=order.identifier,
        symbol=order.symbol,
        side=Side(order.side),
        status=OrderStatus(order.status),
        created_at=order.created_at,
        requested_total=order.requested_total,
    )


def close_arguments(position: PositionRecord) -> dict[str, Any]:
    """``close_position`` keywords from a closed record; a closed record without them is refused."""
    if position.exit_price is None or position.exit_reason is None or position.closed_at is None:
        raise PositionConflict(
            f"a closed position needs exit_price, exit_reason and closed_at, got {position!r}",
            position_id=position.id,
        )
    return {
        "exit_price": position.exit_price,
        "reason": position.exit_reason,
        "realized_pnl": position.realized_pnl,
        "closed_at": position.closed_at,
    }
