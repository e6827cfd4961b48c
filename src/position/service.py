"""Positions from fills: open, add at a weighted average price, reduce, close, and realise P&L net of fees.

The pipeline calls ``on_fill`` once per executed order (after the trades are written) and writes the
returned ``realized_pnl`` to ``trades.realized_pnl`` of a sell. Each order is applied exactly once: the
position change and the order's ``position_fills`` marker are one store transaction, and applying the
same ``order_identifier`` again changes nothing and returns the earlier outcome. Exit levels are set here:
``STOP_LOSS_PCT``/``TAKE_PROFIT_PCT`` below/above the average entry, or ``ATR_STOP_MULTIPLIER``/
``ATR_TARGET_MULTIPLIER`` x ATR when ``USE_ATR_EXITS`` and an ATR is given; ``TRAILING_STOP_PCT`` > 0
switches the trailing stop on. ``RiskManager.exits_due`` decides when they fire.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

from src.config.trading_groups import RiskConfig
from src.domain.exits import ExitReason
from src.domain.market_rules import MIN_ORDER_KRW
from src.domain.modes import TradingMode
from src.domain.money import quantize_money
from src.domain.orders import Side
from src.exceptions import InvalidInput
from src.risk.sizing import HUNDRED
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


class PositionService:
    """Positions of one trading mode, persisted in a ``RiskStore``.

    ``PositionService(store, risk_config, mode, *, min_order_krw=MIN_ORDER_KRW)``. A sale that leaves
    less than ``min_order_krw`` worth of the coin closes the position: such dust cannot be sold on
    its own, so it is no longer managed.
    """

    def __init__(
        self, store: RiskStore, risk_config: RiskConfig, mode: TradingMode, *, min_order_krw: Decimal = MIN_ORDER_KRW
    ) -> None:
        self.store = store
        self.config = risk_config
        self.mode = mode
        self.min_order_krw = min_order_krw

    def with_config(self, risk_config: RiskConfig) -> PositionService:
        return PositionService(self.store, risk_config, self.mode, min_order_krw=self.min_order_krw)

    async def apply_exit_levels(self) -> list[PositionRecord]:
        """Move the stop, target and trailing stop of open positions to this service's percentages (after a
        run-time change of ``STOP_LOSS_PCT``, ``TAKE_PROFIT_PCT`` or ``TRAILING_STOP_PCT``), from each average
        entry price. With ``USE_ATR_EXITS`` the ATR levels chosen at entry stay; only the trailing stop moves."""
        moved: list[PositionRecord] = []
        for position in await self.store.list_open_positions(self.mode):
            stop, target = position.stop_price, position.take_profit_price
            if not self.config.use_atr_exits:
                stop, target, _ = self._levels(position.avg_entry_price, None, previous=None)
            trailing = self.config.trailing_stop_pct or None
            current = (position.stop_price, position.take_profit_price, position.trailing_stop_pct)
            if (stop, target, trailing) == current:
                continue
            updated = replace(position, stop_price=stop, take_profit_price=target, trailing_stop_pct=trailing)
            moved.append(await self.store.update_position(updated))
            log.info("position.exit_levels_moved", symbol=position.symbol, stop=str(stop), target=str(target))
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
        ``fee`` the KRW fee paid, ``at`` the fill time (UTC). ``atr`` (KRW, same timeframe as the
        strategy) sets ATR-based levels when ``USE_ATR_EXITS``. ``reason`` is recorded as the exit
        reason when a sell closes the position (``ExitReason.SELL`` when none is given).
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
        if current is None:
            stop, target, note = self._levels(price, atr, previous=None)
            notes += [note] if note else []
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
                trailing_stop_pct=self.config.trailing_stop_pct or None,
            )
            applied = await self._write(order_identifier, at, position)
            if applied.replayed:
                return FillOutcome.earlier(applied)
            log.info("position.opened", symbol=symbol, mode=str(self.mode), price=str(price), volume=str(volume))
            return FillOutcome(position=applied.position, opened=True, notes=notes)
        amount = current.amount + volume
        average = quantize_money((current.amount * current.avg_entry_price + volume * price) / amount)
        stop, target, note = self._levels(average, atr, previous=current)
        notes += [note] if note else []
        grown = replace(
            current,
            amount=amount,
            avg_entry_price=average,
            entry_fee=current.entry_fee + fee,
            highest_price=max(current.highest_price, price),
            stop_price=stop,
            take_profit_price=target,
        )
        applied = await self._write(order_identifier, at, grown)
        if applied.replayed:
            return FillOutcome.earlier(applied)
        log.info("position.increased", symbol=symbol, mode=str(self.mode), avg_entry=str(average), amount=str(amount))
        return FillOutcome(position=applied.position, notes=notes)

    def _levels(
        self, entry: Decimal, atr: Decimal | None, previous: PositionRecord | None
    ) -> tuple[Decimal | None, Decimal | None, str]:
        """Stop and target for an average entry price, and a note when ATR exits could not be used."""
        config = self.config
        if config.use_atr_exits and atr is not None:
            stop = entry - config.atr_stop_multiplier * atr
            target = entry + config.atr_target_multiplier * atr
            return (quantize_money(stop) if stop > 0 else None), quantize_money(target), ""
        if config.use_atr_exits and previous is not None and previous.stop_price and previous.take_profit_price:
            # Keep the ATR distances chosen at entry when no new ATR came with the added volume.
            stop = entry - (previous.avg_entry_price - previous.stop_price)
            target = entry + (previous.take_profit_price - previous.avg_entry_price)
            note = "no ATR with this fill: kept the stop and target distances of the position"
            return (quantize_money(stop) if stop > 0 else None), quantize_money(target), note
        note = ""
        if config.use_atr_exits:
            note = "USE_ATR_EXITS is on but no ATR came with the fill: percent stop and target used"
            log.warning("position.atr_missing", note=note)
        stop = entry * (1 - config.stop_loss_pct / HUNDRED)
        target = entry * (1 + config.take_profit_pct / HUNDRED)
        return quantize_money(stop), quantize_money(target), note

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
