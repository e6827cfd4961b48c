"""Order execution through ``IExchangeClient``, exactly once (see docs/TRADING_PIPELINE.md).

An order is a row before it is a request:
1. write the order (status ``pending``) with a fresh client ``identifier``;
2. send it with that identifier;
3. record the answer; when the order is final, write its trades from the fills and tell the
   position book (realised P&L of a sell goes into ``trades.realized_pnl``). The book applies an order
   once (its marker is written with the position change); ``reconcile`` applies filled orders a crash
   left out of the positions.

Before step 1 and again right before step 2 the ``OrderGuard`` (the scheduler's single-trader lock) must
confirm this process still holds the account; a refusal raises ``SchedulerLockLost`` and sends nothing (a
row written in between is marked ``failed``, never left ``pending``).

When the outcome of step 2 is unknown (``ExchangeUnavailable``: 5xx, timeout, dropped connection) the
row stays ``pending`` and nothing is re-sent. ``reconcile`` asks the exchange by identifier and settles:
found -> settle; ``OrderNotFound`` for a ``pending`` row older than ``not_found_grace`` -> ``failed``
(the request never arrived: Upbit lists an accepted order at once); business errors (insufficient funds,
under the minimum, invalid price...) -> ``failed`` with the error name.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from src.api.interfaces import ExchangeOrderState, IExchangeClient, Order, OrderRequest
from src.domain.events import EventKind, NotificationEvent, Notifier, NullNotifier
from src.domain.exits import ExitReason
from src.domain.market_rules import MIN_ORDER_KRW, truncate_volume
from src.domain.modes import TradingMode
from src.domain.money import ZERO, quantize_money, whole_krw
from src.domain.orders import OrderStatus, OrderType, Side, TradeStatus
from src.exceptions import (
    DuplicateOrderIdentifier,
    ExchangeError,
    ExchangeUnavailable,
    InvalidInput,
    OrderNotFound,
    SchedulerLockLost,
    TradingSystemError,
)
from src.trading.repository import ITradingRepository, OrderRecord, TradeRecord
from src.utils.logger import get_logger

log = get_logger(__name__)

Clock = Callable[[], datetime]
_FINAL = (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.FAILED)
_INSTANCE_CHARS = 24


def utc_now() -> datetime:
    return datetime.now(UTC)


class PositionBook(Protocol):
    """What execution needs from the position side (implemented over ``PositionService``)."""

    async def on_fill(
        self,
        order: OrderRecord,
        trades: list[TradeRecord],
        at: datetime,
        *,
        atr: Decimal | None,
        exit_reason: ExitReason | None,
    ) -> Decimal | None:
        """Apply a final order's fills to the position once; return the realised P&L of a sell (None otherwise).

        Applying an order again changes nothing and returns the same P&L.
        """

    async def needs_applying(self, order: OrderRecord, trades: list[TradeRecord]) -> bool:
        """True when the order's fills are not yet in the positions, or their P&L not yet on the trades."""


class OrderGuard(Protocol):
    """Whether this process may send orders for the account now (implemented by the scheduler's lock)."""

    async def ensure_held(self) -> None:
        """Return when the single-trader lock is held (re-taking it if it was lost and is free); raise
        ``SchedulerLockLost`` otherwise. Called before every order is written and right before it is sent."""


class ExecutionObserver(Protocol):
    """Metrics hook; the backend implements it with prometheus counters."""

    def on_trade(self, trade: TradeRecord) -> None: ...

    def on_exchange_error(self, operation: str, error: str) -> None: ...


class NullObserver:
    def on_trade(self, trade: TradeRecord) -> None:
        return None

    def on_exchange_error(self, operation: str, error: str) -> None:
        return None


@dataclass(slots=True)
class ExecutionResult:
    """What one order came to: ``status`` is ours (pending/open/filled/cancelled/failed)."""

    identifier: str
    symbol: str
    side: Side
    status: OrderStatus
    trades: list[TradeRecord] = field(default_factory=list)
    error: str | None = None

    @property
    def filled(self) -> bool:
        return self.status is OrderStatus.FILLED

    def to_dict(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "side": self.side.value,
            "status": self.status.value,
            "trades": len(self.trades),
            "volume": str(sum((t.amount for t in self.trades), ZERO)),
            "total": str(sum((t.total for t in self.trades), ZERO)),
            "error": self.error,
        }


def new_identifier(instance: str, now: datetime, symbol: str, side: Side) -> str:
    """``{instance}-{yyyymmddHHMM}-{symbol}-{side}-{rand6}``; unique forever on the exchange."""
    name = "".join(ch if ch.isalnum() or ch in "_." else "_" for ch in instance)[:_INSTANCE_CHARS]
    stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M")
    return f"{name}-{stamp}-{symbol}-{side.value}-{secrets.token_hex(3)}"


class TradingService:
    """Places market orders exactly once and settles them; the one writer of orders and trades."""

    def __init__(
        self,
        exchange: IExchangeClient,
        repository: ITradingRepository,
        *,
        mode: TradingMode,
        instance: str = "default",
        fee_rate: Decimal = Decimal("0.0005"),
        min_order_krw: Decimal = MIN_ORDER_KRW,
        clock: Clock = utc_now,
        positions: PositionBook | None = None,
        notifier: Notifier | None = None,
        observer: ExecutionObserver | None = None,
        not_found_grace: timedelta = timedelta(minutes=5),
        settle_polls: int = 3,
        poll_delay_seconds: float = 0.2,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        guard: OrderGuard | None = None,
    ) -> None:
        self.exchange = exchange
        self.repository = repository
        self.mode = mode
        self.instance = instance
        self.fee_rate = fee_rate
        self.min_order_krw = min_order_krw
        self.clock = clock
        self.positions = positions
        self.notifier = notifier or NullNotifier()
        self.observer = observer or NullObserver()
        self.not_found_grace = not_found_grace
        self.settle_polls = settle_polls
        self.poll_delay_seconds = poll_delay_seconds
        self._sleep = sleep
        self.guard = guard  # None: nothing else can trade this account (replay, backtests, unit tests)

    # --- sizing checks --------------------------------------------------------------------------
    def buy_total_for(self, krw_available: Decimal, krw_wanted: Decimal) -> Decimal:
        """The KRW total of a market buy: what is wanted, capped so total + fee fits the balance, whole KRW."""
        affordable = krw_available / (Decimal("1") + self.fee_rate)
        return whole_krw(min(krw_wanted, affordable))

    def check_min_total(self, total_krw: Decimal) -> str | None:
        if total_krw < self.min_order_krw:
            return f"order total {total_krw:,.0f} KRW is below the minimum {self.min_order_krw:,.0f} KRW"
        return None

    # --- placing ----------------------------------------------------------------------------------
    async def market_buy(
        self, symbol: str, krw_total: Decimal, *, reason: str, cycle_id: str | None, atr: Decimal | None = None
    ) -> ExecutionResult:
        """Buy for ``krw_total`` KRW (fee on top). ``atr`` sets ATR-based exit levels of the new position."""
        total = whole_krw(krw_total)
        if total <= 0:
            raise InvalidInput(f"a market buy needs a positive KRW total, got {krw_total}")
        return await self._submit(symbol, Side.BUY, OrderType.MARKET_BUY, None, total, reason, cycle_id, atr, None)

    async def market_sell(
        self, symbol: str, volume: Decimal, *, reason: str, cycle_id: str | None, exit_reason: ExitReason | None = None
    ) -> ExecutionResult:
        """Sell ``volume``; ``exit_reason`` (e.g. ``stop_loss``, ``signal``) is recorded on the closed position."""
        amount = truncate_volume(volume)
        if amount <= 0:
            raise InvalidInput(f"a market sell needs a positive volume, got {volume}")
        return await self._submit(
            symbol, Side.SELL, OrderType.MARKET_SELL, amount, None, reason, cycle_id, None, exit_reason
        )

    async def _submit(
        self,
        symbol: str,
        side: Side,
        order_type: OrderType,
        volume: Decimal | None,
        krw_total: Decimal | None,
        reason: str,
        cycle_id: str | None,
        atr: Decimal | None,
        exit_reason: ExitReason | None,
    ) -> ExecutionResult:
        if self.guard is not None:
            await self.guard.ensure_held()  # refused: nothing written, nothing sent
        now = self.clock()
        identifier = new_identifier(self.instance, now, symbol, side)
        record = OrderRecord(
            order_id=identifier,
            identifier=identifier,
            symbol=symbol,
            side=side,
            order_type=order_type,
            mode=self.mode,
            status=OrderStatus.PENDING,
            amount=volume,
            requested_total=krw_total,
            reason=reason[:1000],
            cycle_id=cycle_id,
            created_at=now,
            exit_reason=exit_reason,
        )
        record = await self.repository.create_order(record)
        log.info(
            "order.written",
            symbol=symbol,
            side=side.value,
            identifier=identifier,
            total=str(krw_total),
            volume=str(volume),
        )
        await self._ensure_still_held(record)
        request = OrderRequest(symbol, side, order_type, identifier, volume=volume, price=krw_total)
        try:
            answer = await self.exchange.place_order(request)
        except ExchangeUnavailable as exc:
            return await self._outcome_unknown(record, exc)
        except DuplicateOrderIdentifier:
            return await self._reconcile_one(record)
        except ExchangeError as exc:
            return await self._rejected(record, exc)
        await self.repository.update_order(identifier, exchange_uuid=answer.uuid, exchange_state=answer.state.value)
        log.info("order.accepted", symbol=symbol, identifier=identifier, uuid=answer.uuid, state=answer.state.value)
        final = await self._await_final(answer)
        return await self._settle(record, final, atr=atr, exit_reason=exit_reason)

    async def _ensure_still_held(self, record: OrderRecord) -> None:
        """The last check before the request: a refused order is marked failed (it was never sent)."""
        if self.guard is None:
            return
        try:
            await self.guard.ensure_held()
        except SchedulerLockLost as exc:
            error = f"SchedulerLockLost: not sent: {exc.message}"
            log.error("order.refused_lock_lost", symbol=record.symbol, identifier=record.identifier, error=error)
            try:
                await self.repository.update_order(
                    record.identifier, status=OrderStatus.FAILED, error_message=error[:2000]
                )
            except Exception as write_error:  # still pending: reconciliation finds nothing and fails it later
                log.warning("order.refused_not_marked", identifier=record.identifier, error=str(write_error))
            raise

    async def _await_final(self, order: Order) -> Order:
        current = order
        for attempt in range(self.settle_polls):
            if current.is_final:
                return current
            if attempt:
                await self._sleep(self.poll_delay_seconds * attempt)
            try:
                current = await self.exchange.get_order(uuid=order.uuid)
            except ExchangeError as exc:
                self.observer.on_exchange_error("get_order", type(exc).__name__)
                log.warning("order.poll_failed", identifier=order.identifier, error=str(exc))
                return current
        return current

    async def _outcome_unknown(self, record: OrderRecord, exc: ExchangeError) -> ExecutionResult:
        error = f"{type(exc).__name__}: {exc.message}"
        self.observer.on_exchange_error("place_order", type(exc).__name__)
        log.warning("order.outcome_unknown", symbol=record.symbol, identifier=record.identifier, error=error)
        await self.repository.log_event(
            "warning",
            "order outcome unknown; left pending for reconciliation",
            {"identifier": record.identifier, "symbol": record.symbol, "error": error},
        )
        return ExecutionResult(record.identifier, record.symbol, record.side, OrderStatus.PENDING, error=error)

    async def _rejected(self, record: OrderRecord, exc: ExchangeError) -> ExecutionResult:
        name = exc.name or type(exc).__name__
        error = f"{type(exc).__name__} ({name}): {exc.message}"
        self.observer.on_exchange_error("place_order", type(exc).__name__)
        await self.repository.update_order(record.identifier, status=OrderStatus.FAILED, error_message=error[:2000])
        log.warning("order.rejected", symbol=record.symbol, identifier=record.identifier, error=error)
        await self.repository.log_event(
            "warning", "order rejected by the exchange", {"identifier": record.identifier, "error": error}
        )
        return ExecutionResult(record.identifier, record.symbol, record.side, OrderStatus.FAILED, error=error)

    # --- settling ---------------------------------------------------------------------------------
    async def _settle(
        self, record: OrderRecord, order: Order, *, atr: Decimal | None = None, exit_reason: ExitReason | None = None
    ) -> ExecutionResult:
        status = status_from_exchange(order)
        changes: dict[str, Any] = {
            "exchange_uuid": order.uuid,
            "exchange_state": order.state.value,
            "status": status,
        }
        if status is OrderStatus.OPEN:
            updated = await self.repository.update_order(record.identifier, **changes)
            log.info("order.open", identifier=record.identifier, state=order.state.value)
            return ExecutionResult(updated.identifier, updated.symbol, updated.side, status)
        changes.update(
            filled_amount=order.executed_volume,
            executed_funds=order.executed_funds,
            avg_fill_price=order.average_price,
            paid_fee=order.paid_fee,
        )
        trades = self._trades_from(record, order) if status is OrderStatus.FILLED else []
        updated = await self.repository.settle_order(record.identifier, changes, trades)
        if trades:
            await self._apply_to_position(updated, trades, atr, exit_reason or _exit_reason_of(record))
        for trade in trades:
            self.observer.on_trade(trade)
        if trades:
            self._announce(updated, trades)
        log.info(
            "order.settled",
            identifier=record.identifier,
            status=status.value,
            volume=str(order.executed_volume),
            funds=str(order.executed_funds),
            fee=str(order.paid_fee),
        )
        return ExecutionResult(updated.identifier, updated.symbol, updated.side, status, trades)

    def _trades_from(self, record: OrderRecord, order: Order) -> list[TradeRecord]:
        """One trade per exchange fill (trade_id = fill uuid), or one ``{identifier}-fill`` when none are listed."""
        at = self.clock()
        if order.trades:
            parts = [(f.uuid, f.price, f.volume, f.funds) for f in order.trades]
        else:
            price = order.average_price or ZERO
            parts = [(f"{record.identifier}-fill", price, order.executed_volume, order.executed_funds)]
        shares = _shares([funds for *_, funds in parts])
        return [
            TradeRecord(
                trade_id=trade_id,
                symbol=record.symbol,
                side=record.side,
                price=price,
                amount=volume,
                total=funds,
                fee=quantize_money(order.paid_fee * share),
                mode=self.mode,
                status=TradeStatus.COMPLETED,
                order_identifier=record.identifier,
                created_at=at,
                exit_reason=record.exit_reason,
            )
            for (trade_id, price, volume, funds), share in zip(parts, shares, strict=True)
        ]

    async def _apply_to_position(
        self,
        order: OrderRecord,
        trades: list[TradeRecord],
        atr: Decimal | None,
        exit_reason: ExitReason | None,
        at: datetime | None = None,
    ) -> bool:
        """Positions follow the written trades; a sell's realised P&L is then written onto its trades.

        The trades and the order are one transaction; the position update (with its ``position_fills``
        marker) is the next one, and the P&L on the trades the one after. A failure or a crash in between
        is repaired by ``reconcile``: both later steps are idempotent. False when the update failed.
        """
        if self.positions is None:
            return True
        try:
            pnl = await self.positions.on_fill(order, trades, at or self.clock(), atr=atr, exit_reason=exit_reason)
        except Exception as exc:
            log.exception("position.update_failed", identifier=order.identifier)
            await self.repository.log_event(
                "error",
                "position update after a fill failed",
                {"identifier": order.identifier, "symbol": order.symbol, "error": f"{type(exc).__name__}: {exc}"},
            )
            return False
        if pnl is None:
            return True
        shares = _shares([t.total for t in trades])
        by_trade = {t.trade_id: quantize_money(pnl * share) for t, share in zip(trades, shares, strict=True)}
        await self.repository.record_realized_pnl(by_trade)
        for trade in trades:
            trade.realized_pnl = by_trade[trade.trade_id]
        return True

    def _announce(self, order: OrderRecord, trades: list[TradeRecord]) -> None:
        volume = sum((t.amount for t in trades), ZERO)
        total = sum((t.total for t in trades), ZERO)
        pnl = [t.realized_pnl for t in trades if t.realized_pnl is not None]
        self.notifier.notify(
            NotificationEvent(
                EventKind.TRADE_EXECUTED,
                f"{order.side.value.upper()} {order.symbol}",
                {
                    "symbol": order.symbol,
                    "side": order.side.value,
                    "price": order.avg_fill_price,
                    "volume": volume,
                    "total": total,
                    "fee": order.paid_fee,
                    "pnl": sum(pnl, ZERO) if pnl else None,
                    "mode": self.mode.value,
                    "reason": order.reason,
                    "identifier": order.identifier,
                },
                at=self.clock(),
            )
        )

    # --- reconciliation ---------------------------------------------------------------------------
    async def reconcile(self) -> list[ExecutionResult]:
        """Settle every ``pending``/``open`` order of this mode by asking the exchange; never re-send.

        Then apply to the positions every filled order whose fills are not in them yet (a crash after
        its trades were written); the results list only the orders settled here.
        """
        unsettled = await self.repository.list_orders([OrderStatus.PENDING, OrderStatus.OPEN], self.mode)
        results = []
        for record in unsettled:
            try:
                results.append(await self._reconcile_one(record))
            except Exception as exc:  # one bad answer must not stop the others nor the position repair
                results.append(await self._reconcile_failed(record, exc))
        if results:
            log.info("orders.reconciled", count=len(results), statuses=[r.status.value for r in results])
        await self._apply_missed_fills()
        return results

    async def _reconcile_failed(self, record: OrderRecord, exc: Exception) -> ExecutionResult:
        """An order whose answer could not be handled (e.g. valid JSON that is not an order): recorded on the
        row (which stays unsettled, so the risk rules still count it and the next reconciliation asks again),
        in ``system_logs``, and announced as an ERROR event."""
        answer = exc.context.get("order") if isinstance(exc, TradingSystemError) else None
        error = f"{type(exc).__name__}: {exc}" + ("" if answer is None else f"; answer: {answer!r}"[:1000])
        error = error[:2000]
        context = {"identifier": record.identifier, "symbol": record.symbol, "side": record.side.value, "error": error}
        log.error("order.reconcile_error", **context)
        self.observer.on_exchange_error("get_order", type(exc).__name__)
        try:
            await self.repository.update_order(record.identifier, error_message=error)
            await self.repository.log_event("error", "reconciling an order failed; it stays unsettled", context)
        except Exception:  # the database may be what failed; the alert below still goes out
            log.exception("order.reconcile_error_not_recorded", identifier=record.identifier)
        self.notifier.notify(
            NotificationEvent(
                EventKind.ERROR, f"Reconciling order {record.identifier} failed", context, at=self.clock()
            )
        )
        return ExecutionResult(record.identifier, record.symbol, record.side, record.status, error=error)

    async def _apply_missed_fills(self) -> None:
        if self.positions is None:
            return
        for order, trades in await self.repository.list_filled_orders_without_position(self.mode):
            if not await self.positions.needs_applying(order, trades):
                continue
            filled_at = max((t.created_at for t in trades if t.created_at is not None), default=None)
            if not await self._apply_to_position(order, trades, None, _exit_reason_of(order), filled_at):
                continue
            log.warning("position.fill_recovered", identifier=order.identifier, symbol=order.symbol)
            await self.repository.log_event(
                "warning",
                "filled order applied to positions by reconciliation",
                {"identifier": order.identifier, "symbol": order.symbol, "side": order.side.value},
            )

    async def _reconcile_one(self, record: OrderRecord) -> ExecutionResult:
        try:
            if record.exchange_uuid:
                order = await self.exchange.get_order(uuid=record.exchange_uuid)
            else:
                order = await self.exchange.get_order(identifier=record.identifier)
        except OrderNotFound:
            return await self._not_found(record)
        except ExchangeError as exc:
            self.observer.on_exchange_error("get_order", type(exc).__name__)
            log.warning("order.reconcile_failed", identifier=record.identifier, error=str(exc))
            return ExecutionResult(record.identifier, record.symbol, record.side, record.status, error=str(exc))
        log.info("order.reconciled", identifier=record.identifier, state=order.state.value)
        return await self._settle(record, order)

    async def _not_found(self, record: OrderRecord) -> ExecutionResult:
        age = self.clock() - (record.created_at or self.clock())
        if record.status is OrderStatus.PENDING and age >= self.not_found_grace:
            error = (
                f"OrderNotFound: the exchange has no order {record.identifier} after {age}; the request never arrived"
            )
            await self.repository.update_order(record.identifier, status=OrderStatus.FAILED, error_message=error)
            await self.repository.log_event(
                "warning", "pending order not found at the exchange; marked failed", {"identifier": record.identifier}
            )
            log.warning("order.not_found_failed", identifier=record.identifier, age_seconds=age.total_seconds())
            return ExecutionResult(record.identifier, record.symbol, record.side, OrderStatus.FAILED, error=error)
        log.info("order.not_found_yet", identifier=record.identifier, age_seconds=age.total_seconds())
        return ExecutionResult(record.identifier, record.symbol, record.side, record.status, error="not found yet")


def is_final(status: OrderStatus) -> bool:
    return status in _FINAL


def _shares(amounts: list[Decimal]) -> list[Decimal]:
    total = sum(amounts, ZERO)
    if total <= 0:
        return [Decimal("1") / len(amounts)] * len(amounts)
    return [amount / total for amount in amounts]


def status_from_exchange(order: Order) -> OrderStatus:
    """Map the exchange's state to ours. A cancel that executed something is a fill."""
    if order.is_filled:
        return OrderStatus.FILLED
    if order.state is ExchangeOrderState.CANCEL:
        return OrderStatus.CANCELLED
    return OrderStatus.OPEN


def _exit_reason_of(record: OrderRecord) -> ExitReason | None:
    """``exit: stop_loss`` -> ``STOP_LOSS`` (orders of the position job carry their exit reason)."""
    if record.side is not Side.SELL or not record.reason:
        return None
    return ExitReason.of_order_reason(record.reason)


__all__ = [
    "ExecutionObserver",
    "ExecutionResult",
    "NullObserver",
    "OrderGuard",
    "PositionBook",
    "TradingService",
    "is_final",
    "new_identifier",
]
