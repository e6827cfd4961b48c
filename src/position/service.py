"""Positions from fills: open, add at a weighted average price, reduce, close, and realise P&L net of fees.

The pipeline calls ``on_fill`` once per executed order (after the trades are written) and writes the
returned ``realized_pnl`` to ``trades.realized_pnl`` of a sell. Each order is applied exactly once: the
position change and the order's ``position_fills`` marker are one store transaction, and applying the
same ``order_identifier`` again changes nothing and returns the earlier outcome. Exit levels are set here
from the trading strategy's ``ExitPolicy`` by ``src.risk.exits.levels_for``, the very function the backtest
calls: stop and target from the fill price and the decision bar's ATR (percent and ATR rules both set: the
tighter level wins); ``trailing_stop_pct`` > 0 switches the trailing stop on. ``RiskManager.exits_due``
decides when they fire (``src.risk.exits.exit_reason_for``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

from src.domain.exits import ExitPolicy, ExitReason
from src.domain.market_rules import MIN_ORDER_KRW
from src.domain.modes import TradingMode
from src.domain.money import quantize_money
from src.domain.orders import Side
from src.exceptions import InvalidInput
from src.risk.exits import levels_for
from src.risk.store import AppliedFill, PositionChange, PositionRecord, PositionStatus, RiskStore
from src.utils.logger import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class FillOutcome:
    """What a fill did to the position.

    ``realized_pnl``: KRW realised by this sell, net of the sell fee and of the share of the buy fee
    that belongs to the sold volume (``None`` for buys and for sells of an untracked holding).
    ``position``: the position after the fill (closed positions included), ``None`` when untracked.
    ``already_applied``: the order had been applied before; nothing changed, the earlier P&L is returned.
    """

    position: PositionRecord | None
    realized_pnl: Decimal | None = None
    opened: bool = False
    closed: bool = False
    notes: list[str] = field(default_factory=list)
    already_applied: bool = False

    @classmethod
    def earlier(cls, applied: AppliedFill) -> FillOutcome:
        note = f"order {applied.order_identifier} was already applied to the positions: nothing changed"
        return cls(position=applied.position, realized_pnl=applied.realized_pnl, notes=[note], already_applied=True)


def _positive(value: Decimal, name: str) -> Decimal:
    if not isinstance(value, Decimal) or value <= 0:
        raise InvalidInput(f"{name} must be a positive Decimal, got {value!r}")
    return value


def _trailing_pct(policy: ExitPolicy) -> Decimal | None:
    return Decimal(str(policy.trailing_stop_pct)) if policy.trailing_stop_pct > 0 else None


class PositionService:
    """Positions of one trading mode, persisted in a ``RiskStore``, with exits by the strategy's ``ExitPolicy``.

    ``PositionService(store, policy, mode, *, min_order_krw=MIN_ORDER_KRW)``. A sale that leaves less than
    ``min_order_krw`` worth of the coin closes the position: such dust cannot be sold on its own, so it is
    no longer managed.
    """

    def __init__(
        self, store: RiskStore, policy: ExitPolicy, mode: TradingMode, *, min_order_krw: Decimal = MIN_ORDER_KRW
    ) -> None:
        if not isinstance(policy, ExitPolicy):
            raise InvalidInput(f"policy must be the strategy's ExitPolicy, got {type(policy).__name__}")
        self.store = store
        self.policy = policy
        self.mode = mode
        self.min_order_krw = min_order_krw

    def with_policy(self, policy: ExitPolicy) -> PositionService:
        """The same service (store, mode) under another strategy's exit policy."""
        return PositionService(self.store, policy, self.mode, min_order_krw=self.min_order_krw)

    def levels(self, fill: Decimal, atr: Decimal | None) -> tuple[Decimal | None, Decimal | None]:
        """(stop, target) of a position entered at ``fill`` when the decision bar's ATR was ``atr``."""
        stop, target = levels_for(fill, atr, self.policy)
        return (None if stop is None else quantize_money(stop)), (None if target is None else quantize_money(target))

    async def apply_exit_levels(self) -> list[PositionRecord]:
        """Move the stop, target and trailing stop of the open positions to this service's policy (after a
        run-time change of the strategy or its parameters): each from its average entry price and the ATR it
        was entered with, by the same ``levels_for`` as at entry. Returns the positions that moved."""
        moved: list[PositionRecord] = []
        for position in await self.store.list_open_positions(self.mode):
            stop, target = self.levels(position.avg_entry_price, position.entry_atr)
            trailing = _trailing_pct(self.policy)
            current = (position.stop_price, position.take_profit_price, position.trailing_stop_pct)
            if (stop, target, trailing) == current:
                continue
            updated = replace(position, stop_price=stop, take_profit_price=target, trailing_stop_pct=trailing)
            moved.append(await self.store.update_position(updated))
            log.info(
                "position.exit_levels_moved",
                symbol=position.symbol,
                stop=str(stop),
                target=str(target),
                trailing_pct=str(trailing),
                policy=self.policy.describe(),
            )
        return moved

    async def open_positions(self, mode: TradingMode | None = None) -> list[PositionRecord]:
        """Open positions of ``mode`` (this service's mode when omitted), oldest entry first."""
        return await self.store.list_open_positions(mode or self.mode)

    async def get(self, symbol: str) -> PositionRecord | None:
        """The open position in ``symbol``, if any."""
        return await self.store.get_open_position(self.mode, symbol)

    async def applied(self, order_identifier: str) -> AppliedFill | None:
        """How the order's fills were applied to the positions, or ``None`` if they were not yet."""
        return await self.store.applied_fill(order_identifier)

    async def on_fill(
        self,
        symbol: str,
        side: Side,
        price: Decimal,
        volume: Decimal,
        fee: Decimal,
        at: datetime,
        atr: Decimal | None = None,
        *,
        order_identifier: str,
        reason: ExitReason | None = None,
    ) -> FillOutcome:
        """Apply one executed order: ``price`` is its average fill price, ``volume`` the base volume,
        ``fee`` the KRW fee paid, ``at`` the fill time (UTC). ``atr`` (KRW, the strategy's ATR(14) of the
        decision bar) sets the ATR-based levels of the policy (``stop_atr``/``target_atr``). ``reason`` is
        recorded as the exit reason when a sell closes the position (``ExitReason.SELL`` when none is given).
        ``order_identifier`` (the order's client identifier) makes it exactly once: an order already
        applied changes nothing and its earlier outcome comes back (``already_applied``).
        """
        if not isinstance(order_identifier, str) or not order_identifier.strip():
            raise InvalidInput(f"order_identifier must be a non-empty string, got {order_identifier!r}")
        try:
            side = Side(side)
        except ValueError as exc:
            raise InvalidInput(f"side must be 'buy' or 'sell', got {side!r}") from exc
        _positive(price, "price")
        _positive(volume, "volume")
        if not isinstance(fee, Decimal) or fee < 0:
            raise InvalidInput(f"fee must be a non-negative Decimal, got {fee!r}")
        if at.tzinfo is None:
            raise InvalidInput(f"at must be a timezone-aware UTC datetime, got naive {at.isoformat()}")
        if atr is not None:
            _positive(atr, "atr")
        at = at.astimezone(UTC)
        earlier = await self.store.applied_fill(order_identifier)
        if earlier is not None:
            log.info("position.fill_already_applied", symbol=symbol, identifier=order_identifier)
            return FillOutcome.earlier(earlier)
        if side is Side.BUY:
            return await self._buy(order_identifier, symbol, price, volume, fee, at, atr)
        return await self._sell(order_identifier, symbol, price, volume, fee, at, reason or ExitReason.SELL)

    async def _write(
        self, order_identifier: str, at: datetime, position: PositionRecord | None, pnl: Decimal | None = None
    ) -> AppliedFill:
        return await self.store.apply_fill(PositionChange(order_identifier, self.mode, at, position, pnl))

    async def mark(self, symbol: str, price: Decimal) -> PositionRecord | None:
        """Raise the position's highest price to ``price`` if higher (the trailing stop ratchets up only).

        Pass the highest price seen since the last mark (e.g. the candle high). ``None`` if not held.
        """
        _positive(price, "price")
        position = await self.store.get_open_position(self.mode, symbol)
        if position is None or position.id is None:
            return None
        if price <= position.highest_price:
            return position
        return await self.store.raise_highest_price(position.id, price)

    async def raise_stop(self, symbol: str, stop: Decimal) -> tuple[PositionRecord, Decimal | None] | None:
        """Move the open position's stop up to ``stop`` (never down): ``(position, previous stop)``, the position
        unchanged when its stop already is at or above ``stop``; ``None`` when ``symbol`` is not held."""
        _positive(stop, "stop")
        position = await self.store.get_open_position(self.mode, symbol)
        if position is None:
            return None
        previous = position.stop_price
        if previous is not None and previous >= stop:
            return position, previous
        updated = await self.store.update_position(replace(position, stop_price=quantize_money(stop)))
        log.info("position.stop_raised", symbol=symbol, stop=str(updated.stop_price), previous=str(previous))
        return updated, previous

    # --- buys --------------------------------------------------------------------------------------
    async def _buy(
        self,
        order_identifier: str,
        symbol: str,
        price: Decimal,
        volume: Decimal,
        fee: Decimal,
        at: datetime,
        atr: Decimal | None,
    ) -> FillOutcome:
        current = await self.store.get_open_position(self.mode, symbol)
        notes: list[str] = []
        stored_atr = None if atr is None else quantize_money(atr)  # kept, so the levels can be set again from it
        if current is None:
            stop, target = self.levels(price, atr)  # the ATR as the backtest sees it
            if atr is None and self.policy.uses_atr:
                notes.append(self._no_atr_note(symbol))
            position = PositionRecord(
                symbol=symbol,
                mode=self.mode,
                amount=volume,
                avg_entry_price=quantize_money(price),
                entry_at=at,
                highest_price=price,
                entry_fee=fee,
                stop_price=stop,
                take_profit_price=target,
                trailing_stop_pct=_trailing_pct(self.policy),
                entry_atr=stored_atr,
            )
            applied = await self._write(order_identifier, at, position)
            if applied.replayed:
                return FillOutcome.earlier(applied)
            log.info("position.opened", symbol=symbol, mode=str(self.mode), price=str(price), volume=str(volume))
            return FillOutcome(position=applied.position, opened=True, notes=notes)
        amount = current.amount + volume
        average = quantize_money((current.amount * current.avg_entry_price + volume * price) / amount)
        entry_atr = stored_atr if stored_atr is not None else current.entry_atr
        if entry_atr is None and self.policy.uses_atr:
            stop, target = self._kept_distances(current, average)
            notes.append("no ATR with this fill or the entry: kept the stop and target distances of the position")
        else:
            stop, target = self.levels(average, atr if atr is not None else entry_atr)
            if atr is None and self.policy.uses_atr:
                notes.append("no ATR with this fill: the ATR of the entry keeps the ATR distances")
        grown = replace(
            current,
            amount=amount,
            avg_entry_price=average,
            entry_fee=current.entry_fee + fee,
            highest_price=max(current.highest_price, price),
            stop_price=stop,
            take_profit_price=target,
            entry_atr=entry_atr,
        )
        applied = await self._write(order_identifier, at, grown)
        if applied.replayed:
            return FillOutcome.earlier(applied)
        log.info("position.increased", symbol=symbol, mode=str(self.mode), avg_entry=str(average), amount=str(amount))
        return FillOutcome(position=applied.position, notes=notes)

    def _no_atr_note(self, symbol: str) -> str:
        note = f"the exit policy ({self.policy.describe()}) uses ATR but no ATR came with the fill: ATR levels off"
        log.warning("position.atr_missing", symbol=symbol, note=note)
        return note

    @staticmethod
    def _kept_distances(current: PositionRecord, average: Decimal) -> tuple[Decimal | None, Decimal | None]:
        """The stop and target at the distances from the average entry the position had before it grew."""
        stop = target = None
        if current.stop_price is not None:
            moved = average - (current.avg_entry_price - current.stop_price)
            stop = quantize_money(moved) if moved > 0 else None
        if current.take_profit_price is not None:
            target = quantize_money(average + (current.take_profit_price - current.avg_entry_price))
        return stop, target

    # --- sells -------------------------------------------------------------------------------------
    async def _sell(
        self,
        order_identifier: str,
        symbol: str,
        price: Decimal,
        volume: Decimal,
        fee: Decimal,
        at: datetime,
        reason: ExitReason,
    ) -> FillOutcome:
        current = await self.store.get_open_position(self.mode, symbol)
        if current is None or current.id is None:
            applied = await self._write(order_identifier, at, None)
            if applied.replayed:
                return FillOutcome.earlier(applied)
            note = f"sold {volume} {symbol} without an open position: nothing to realise"
            log.warning("position.sell_untracked", symbol=symbol, mode=str(self.mode), volume=str(volume))
            return FillOutcome(position=None, notes=[note])
        notes: list[str] = []
        sold = volume
        if volume > current.amount:
            notes.append(f"sold {volume} but the position held {current.amount}: P&L counts the held volume only")
            sold = current.amount
        share = sold / current.amount
        fee_share = current.entry_fee * share
        pnl = quantize_money(sold * price - fee - sold * current.avg_entry_price - fee_share)
        remaining = current.amount - sold
        total_pnl = current.realized_pnl + pnl
        if remaining * price < self.min_order_krw:
            if remaining > 0:
                notes.append(f"{remaining} {symbol} left is below the minimum order: position closed")
            closing = replace(
                current,
                status=PositionStatus.CLOSED,
                exit_price=price,
                exit_reason=reason,
                realized_pnl=total_pnl,
                closed_at=at,
            )
            applied = await self._write(order_identifier, at, closing, pnl)
            if applied.replayed:
                return FillOutcome.earlier(applied)
            log.info("position.closed", symbol=symbol, mode=str(self.mode), reason=reason, pnl=str(total_pnl))
            return FillOutcome(position=applied.position, realized_pnl=pnl, closed=True, notes=notes)
        reduced = replace(current, amount=remaining, entry_fee=current.entry_fee - fee_share, realized_pnl=total_pnl)
        applied = await self._write(order_identifier, at, reduced, pnl)
        if applied.replayed:
            return FillOutcome.earlier(applied)
        log.info("position.reduced", symbol=symbol, mode=str(self.mode), remaining=str(remaining), pnl=str(pnl))
        return FillOutcome(position=applied.position, realized_pnl=pnl, notes=notes)
