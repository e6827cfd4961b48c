"""Order execution through ``IExchangeClient``, exactly once (see docs/TRADING_PIPELINE.md).

An order is a row before it is a request:
1. write the order (status ``pending``) with a fresh client ``identifier``;
2. send it with that identifier;
3. record the answer; when the order is final, write its trades from the fills and tell the
   position book (realised P&L of a sell goes into ``trades.realized_pnl``). The book applies an order
   once (its marker is written with the position change); ``reconcile`` applies filled orders a crash
   left out of the positions.

Between steps 1 and 2, the first order per market after start-up (and after a maintenance announcement) is first
sent to ``POST /v1/orders/test`` (``OrderPreflight``, live only): a refusal such as ``market_offline`` marks the
row ``failed`` with the reason and nothing is sent.

Before step 1 and again right before step 2 the ``OrderGuard`` (the scheduler's single-trader lock) must
confirm this process still holds the account; a refusal raises ``SchedulerLockLost`` and sends nothing (a
row written in between is marked ``failed``, never left ``pending``).

A market order larger than the first 30 book levels hold (Upbit refuses those since 2025-05-07) is split
before it is sent: the book is read, the order is capped to ``sweep_depth_share`` of what the 30 levels
absorb, and the remainder follows as further orders after ``part_delay_seconds`` (the book refreshes),
each capped the same way, up to ``max_sweep_parts``. Every part is an order of its own: its own row
written before its request, its own identifier, its trades and its position update (a sell's parts all
carry the exit reason). A part that does not fill stops the sequence; nothing is re-sent, and a sell's
unsold remainder stays an open position that the next exit check sells.

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
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from src.api.interfaces import IExchangeClient, Order, OrderRequest
from src.api.upbit.order_rules import sweep_depth
from src.domain.events import Notifier, NullNotifier
from src.domain.exits import ExitReason
from src.domain.market_rules import MAX_SWEEP_LEVELS, MIN_ORDER_KRW, truncate_volume
from src.domain.modes import TradingMode
from src.domain.money import ZERO, whole_krw
from src.domain.orders import OrderStatus, OrderType, Side
from src.exceptions import (
    DataError,
    DuplicateOrderIdentifier,
    ExchangeError,
    ExchangeUnavailable,
    InvalidInput,
    MarketDataUnavailable,
    SchedulerLockLost,
)
from src.trading.ports import ExecutionObserver, NullObserver, OrderGuard, PositionBook
from src.trading.preflight import OrderPreflight
from src.trading.reconciliation import OrderReconciliation
from src.trading.repository import ITradingRepository, OrderRecord
from src.trading.results import ExecutionResult
from src.utils.logger import get_logger

log = get_logger(__name__)

Clock = Callable[[], datetime]
_INSTANCE_CHARS = 24
_REST_MINIMUMS = Decimal("1.5")  # the smallest rest a split leaves for its next part, in minimum orders


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_identifier(instance: str, now: datetime, symbol: str, side: Side) -> str:
    """``{instance}-{yyyymmddHHMM}-{symbol}-{side}-{rand6}``; unique forever on the exchange."""
    name = "".join(ch if ch.isalnum() or ch in "_." else "_" for ch in instance)[:_INSTANCE_CHARS]
    stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M")
    return f"{name}-{stamp}-{symbol}-{side.value}-{secrets.token_hex(3)}"


class TradingService(OrderReconciliation):
    """Places market orders exactly once and settles them; the one writer of orders and trades.

    Settling lives in ``OrderSettlement`` (src/trading/settlement.py), reconciliation in
    ``OrderReconciliation`` (src/trading/reconciliation.py); this class places the orders.
    """

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
        sweep_depth_share: Decimal = Decimal("0.9"),
        max_sweep_parts: int = 10,
        part_delay_seconds: float = 1.0,
        preflight: OrderPreflight | None = None,
    ) -> None:
        if not Decimal("0") < sweep_depth_share <= Decimal("1"):
            raise InvalidInput(f"sweep_depth_share must be in (0, 1], got {sweep_depth_share}")
        if max_sweep_parts < 1:
            raise InvalidInput(f"max_sweep_parts must be at least 1, got {max_sweep_parts}")
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
        # A part takes at most this share of what the first 30 levels hold: the book may thin before it arrives
        self.sweep_depth_share = sweep_depth_share
        self.max_sweep_parts = max_sweep_parts
        self.part_delay_seconds = part_delay_seconds
        self.preflight = preflight  # None: no test orders (paper, replay: nothing reaches Upbit)
        self._in_hand: dict[str, asyncio.Event] = {}  # identifiers whose placing call is still running

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
        return await self._in_parts(symbol, Side.BUY, total, reason, cycle_id, atr, None)

    async def market_sell(
        self, symbol: str, volume: Decimal, *, reason: str, cycle_id: str | None, exit_reason: ExitReason | None = None
    ) -> ExecutionResult:
        """Sell ``volume``; ``exit_reason`` (e.g. ``stop_loss``, ``signal``) is recorded on the closed position."""
        amount = truncate_volume(volume)
        if amount <= 0:
            raise InvalidInput(f"a market sell needs a positive volume, got {volume}")
        return await self._in_parts(symbol, Side.SELL, amount, reason, cycle_id, None, exit_reason)

    # --- the 30-level rule ------------------------------------------------------------------------
    async def _in_parts(
        self,
        symbol: str,
        side: Side,
        amount: Decimal,
        reason: str,
        cycle_id: str | None,
        atr: Decimal | None,
        exit_reason: ExitReason | None,
    ) -> ExecutionResult:
        """A market order (``amount``: KRW for a buy, volume for a sell), in parts of what the book absorbs."""
        order_type = OrderType.MARKET_BUY if side is Side.BUY else OrderType.MARKET_SELL
        parts: list[ExecutionResult] = []
        remaining = amount
        for number in range(1, self.max_sweep_parts + 1):
            if number > 1:
                await self._sleep(self.part_delay_seconds)  # let the book refill before the next part
            size = await self._part_size(symbol, side, remaining, first=number == 1)
            if size is None:
                break
            volume, total = (None, size) if side is Side.BUY else (size, None)
            result = await self._submit(symbol, side, order_type, volume, total, reason, cycle_id, atr, exit_reason)
            parts.append(result)
            remaining -= size
            if size < amount or number > 1:
                log.info(
                    "order.part",
                    symbol=symbol,
                    side=side.value,
                    part=number,
                    identifier=result.identifier,
                    size=str(size),
                    remaining=str(remaining),
                    status=result.status.value,
                )
            if not result.filled or remaining <= 0:
                break
        else:
            if remaining > 0:
                log.warning(
                    "order.parts_exhausted", symbol=symbol, side=side.value, parts=len(parts), left=str(remaining)
                )
        return ExecutionResult.combined(parts)

    async def _part_size(self, symbol: str, side: Side, remaining: Decimal, *, first: bool) -> Decimal | None:
        """How much of ``remaining`` the next part sends: all of it when the first 30 levels absorb it, else the
        ``sweep_depth_share`` of what they hold. ``None`` ends a split whose remainder is below the minimum order
        (a sell's dust stays with the position, which the position book closes as dust). The first part is
        always sent (unsplit when the book cannot be read), so every order the caller asked for is a row."""
        try:
            books = await self.exchange.get_orderbooks([symbol])
        except (ExchangeError, DataError, MarketDataUnavailable) as exc:
            self.observer.on_exchange_error("get_orderbooks", type(exc).__name__)
            log.warning("order.book_unread", symbol=symbol, error=str(exc), sending=str(remaining))
            return remaining if first else None
        book = next((b for b in books if b.symbol == symbol), None)
        if book is None:
            return remaining if first else None
        if not first:
            price = book.best_bid if side is Side.SELL else Decimal("1")
            if remaining * (price or ZERO) < self.min_order_krw:
                log.info("order.split_remainder_below_minimum", symbol=symbol, side=side.value, left=str(remaining))
                return None
        depth = sweep_depth(book, side)
        if remaining <= depth * self.sweep_depth_share:
            return remaining
        cap = depth * self.sweep_depth_share
        size = whole_krw(cap) if side is Side.BUY else truncate_volume(cap)
        size = self._leave_a_sellable_rest(side, remaining, size, book.best_bid)
        log.warning(
            "order.capped_to_book",
            symbol=symbol,
            side=side.value,
            wanted=str(remaining),
            levels=MAX_SWEEP_LEVELS,
            depth=str(depth),
            part=str(size),
        )
        if size <= 0:
            return remaining if first else None
        return size

    def _leave_a_sellable_rest(
        self, side: Side, remaining: Decimal, size: Decimal, best_bid: Decimal | None
    ) -> Decimal:
        """A part smaller than ``size`` when ``size`` would leave a rest below the minimum order (which could not be
        sent on its own): the rest is then 1.5 minimum orders (the price may fall before it goes), as long as the
        part stays at least one minimum order itself."""
        price = Decimal("1") if side is Side.BUY else best_bid or ZERO
        if price <= 0 or (remaining - size) * price >= self.min_order_krw:
            return size
        rest = self.min_order_krw * _REST_MINIMUMS / price
        smaller = remaining - (whole_krw(rest) if side is Side.BUY else truncate_volume(rest))
        return smaller if smaller * price >= self.min_order_krw else size

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
        request = OrderRequest(symbol, side, order_type, identifier, volume=volume, krw_total=krw_total)
        handled = self._in_hand[identifier] = asyncio.Event()  # settle_reported and reconcile wait for it
        try:
            return await self._send(record, request, atr, exit_reason)
        finally:
            handled.set()
            del self._in_hand[identifier]

    async def _send(
        self, record: OrderRecord, request: OrderRequest, atr: Decimal | None, exit_reason: ExitReason | None
    ) -> ExecutionResult:
        """Steps 2-3 for a written row: the test order where due, the request, the answer, the settlement."""
        symbol, identifier = record.symbol, record.identifier
        if self.preflight is not None:
            refusal = await self.preflight.refusal(request)
            if refusal is not None:
                return await self._not_sent(record, refusal)
        await self._ensure_still_held(record)
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

    async def _not_sent(self, record: OrderRecord, refusal: ExchangeError) -> ExecutionResult:
        """Upbit refused the test order (``market_offline`` after maintenance, or another refusal): the order is
        skipped, its row ``failed`` with the reason (never left pending), and the skip is in ``system_logs``."""
        name = refusal.name or type(refusal).__name__
        error = f"not sent: Upbit refused the test order: {type(refusal).__name__} ({name}): {refusal.message}"
        await self.repository.update_order(record.identifier, status=OrderStatus.FAILED, error_message=error[:2000])
        log.warning("order.skipped", symbol=record.symbol, identifier=record.identifier, reason=name)
        await self.repository.log_event(
            "warning",
            f"order skipped: {record.symbol} refused by the test order ({name})",
            {"identifier": record.identifier, "symbol": record.symbol, "reason": name, "error": error},
        )
        return ExecutionResult(record.identifier, record.symbol, record.side, OrderStatus.FAILED, error=error)

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


__all__ = ["TradingService", "new_identifier"]
