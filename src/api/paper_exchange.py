"""The simulated exchange of paper and replay modes: Upbit's rules, fills against a real or replayed book.

Market data (tickers, orderbooks, candles) comes from an inner ``MarketDataSource`` (an ``UpbitClient``
for live paper trading, a ``ReplayMarketSource`` for replay). An order first goes through the live
client's own rules (``src.api.upbit.order_rules.normalize_order_request``, at the exchange's clock):
parameters per order type (``InvalidOrder``), limit prices onto the tick grid (the exchange's own tick
when the market data source reports one, i.e. ``UpbitClient`` in paper mode; the dated table in replay),
volumes truncated to 8
decimals, market-buy totals to whole KRW, the minimum for limit orders and market buys
(``UnderMinTotal``), each refused exactly as ``UpbitClient`` refuses it before sending. Then the
paper exchange checks what Upbit checks on its side, with Upbit's error names: a market sell's
minimum at the best bid (``under_min_total_ask``), balances (``InsufficientFunds``), identifiers
unique forever (``DuplicateOrderIdentifier``).

Fill model:
- A market buy (KRW total) walks the asks, buying at each level the volume its KRW allows
  (truncated to 8 decimals); an unspendable remainder ends the order ``cancel`` with executed volume
  (a fill), exactly as Upbit does. A market sell walks the bids. A market order larger than the first
  30 levels hold is refused (``InvalidOrder``, ``create_*_error``: ``check_sweep``), as Upbit refuses it.
- ``smp_type`` is accepted and recorded nowhere: the paper account never rests an order of its own in the
  book it trades against, so self-match prevention has nothing to prevent.
- A limit order first takes the levels it crosses, at their prices; the rest rests as ``wait`` with
  its funds locked. A resting order fills completely at its limit price once the market trades
  through it (best ask below a buy limit, best bid above a sell limit: the book is not consumed by
  paper fills, so touching the price is not enough). This is checked whenever orders or balances
  are read, and before each new order.
- Fees: ``fee_rate`` on the executed KRW, added on top of a buy and taken from a sell's proceeds.
- A cancel takes effect at once (Upbit confirms a cancel asynchronously; callers handle both).

Balances and orders persist through ``PaperAccountStore``, so ``get_order(identifier=...)`` still
answers after a restart and reconciliation works exactly as with Upbit. Identifiers of refused
requests are remembered only for the life of the process.
"""

from __future__ import annotations

import asyncio
import uuid as uuid_lib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import pandas as pd

from src.api.interfaces import (
    Balance,
    ExchangeOrderState,
    Fill,
    IExchangeClient,
    Order,
    Orderbook,
    OrderbookLevel,
    OrderChance,
    OrderRequest,
    Ticker,
    TickSizeSource,
)
from src.api.upbit.order_rules import check_market_sell_total, check_sweep, normalize_order_request
from src.domain.market_rules import MIN_ORDER_KRW, truncate_volume
from src.domain.money import ZERO
from src.domain.orders import OrderType, Side
from src.exceptions import (
    DuplicateOrderIdentifier,
    InsufficientFunds,
    InvalidOrder,
    OrderNotFound,
    UnderMinTotal,
)
from src.utils.logger import get_logger

if TYPE_CHECKING:
    from src.api.interfaces import MarketDataSource
    from src.api.paper_account import PaperAccountStore
    from src.config.settings import Settings

log = get_logger(__name__)

KRW = "KRW"


@dataclass(slots=True)
class _Execution:
    trades: list[Fill]
    volume: Decimal = ZERO
    funds: Decimal = ZERO


class PaperExchange(IExchangeClient):
    def __init__(
        self,
        market_data: MarketDataSource,
        store: PaperAccountStore,
        *,
        fee_rate: Decimal = Decimal("0.0005"),
        min_order_krw: Decimal = MIN_ORDER_KRW,
        starting_krw: Decimal = Decimal("10000000"),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._market_data = market_data
        self._store = store
        self._fee_rate = fee_rate
        self._min_order_krw = min_order_krw
        self._starting_krw = starting_krw
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = asyncio.Lock()
        self._balances: dict[str, Balance] | None = None
        self._refused_identifiers: set[str] = set()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        market_data: MarketDataSource,
        store: PaperAccountStore,
        clock: Callable[[], datetime] | None = None,
    ) -> PaperExchange:
        """Fee, minimum and starting KRW from ``TRADING_*``; pass ``clock=replay.now`` in replay mode."""
        return cls(
            market_data,
            store,
            fee_rate=settings.trading.fee_rate,
            min_order_krw=settings.trading.min_order_krw,
            starting_krw=settings.trading.paper_starting_krw,
            clock=clock,
        )

    # --- market data (delegated) -------------------------------------------------------------------

    async def get_tickers(self, symbols: list[str]) -> list[Ticker]:
        return await self._market_data.get_tickers(symbols)

    async def get_orderbooks(self, symbols: list[str]) -> list[Orderbook]:
        return await self._market_data.get_orderbooks(symbols)

    async def get_candles(
        self, symbol: str, timeframe: str, count: int = 200, to: datetime | None = None
    ) -> pd.DataFrame:
        return await self._market_data.get_candles(symbol, timeframe, count, to)

    # --- account -----------------------------------------------------------------------------------

    async def get_balances(self) -> list[Balance]:
        async with self._lock:
            await self._match_resting(None)
            balances = await self._load()
            return [b for b in balances.values() if b.currency == KRW or b.total > 0]

    async def get_order_chance(self, symbol: str) -> OrderChance:
        async with self._lock:
            balances = await self._load()
            return OrderChance(
                symbol=symbol,
                bid_fee=self._fee_rate,
                ask_fee=self._fee_rate,
                min_total=self._min_order_krw,
                krw_available=_get(balances, KRW).balance,
                base_available=_get(balances, _base(symbol)).balance,
            )

    # --- orders ------------------------------------------------------------------------------------

    async def place_order(self, request: OrderRequest) -> Order:
        async with self._lock:
            try:
                await self._check_identifier(request.identifier)
                normalized = normalize_order_request(
                    request,
                    at=self._clock(),
                    min_order_krw=self._min_order_krw,
                    tick_size=await self._exchange_tick(request),
                )
                await self._match_resting(normalized.symbol)
                book = await self._book(normalized.symbol)
                if normalized.order_type is OrderType.MARKET_SELL:
                    check_market_sell_total(normalized, book.best_bid, min_order_krw=self._min_order_krw)
                balances = await self._load()
                self._check_funds(normalized, balances, book)
            except (InvalidOrder, UnderMinTotal, InsufficientFunds):
                self._refused_identifiers.add(request.identifier)
                raise
            order = self._execute(normalized, book, balances)
            await self._store.save_order(order)
            await self._store.save_balances(balances)
            log.info(
                "paper.order",
                symbol=order.symbol,
                identifier=order.identifier,
                side=order.side.value,
                ord_type=order.order_type.value,
                state=order.state.value,
                executed_volume=str(order.executed_volume),
                executed_funds=str(order.executed_funds),
            )
            return order

    async def get_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order:
        async with self._lock:
            order = await self._find(uuid, identifier)
            if order.state is ExchangeOrderState.WAIT:
                await self._match_resting(order.symbol)
                order = await self._find(order.uuid, None)
            return order

    async def cancel_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order:
        async with self._lock:
            order = await self._find(uuid, identifier)
            if order.state is not ExchangeOrderState.WAIT:
                raise InvalidOrder(
                    f"order {order.uuid} is already {order.state.value}; only a waiting order can be cancelled",
                    name="validation_error",
                    identifier=order.identifier,
                )
            balances = await self._load()
            self._unlock(order, balances)
            cancelled = replace(order, state=ExchangeOrderState.CANCEL)
            await self._store.save_order(cancelled)
            await self._store.save_balances(balances)
            return cancelled

    async def get_open_orders(self, symbol: str | None = None) -> list[Order]:
        async with self._lock:
            await self._match_resting(symbol)
            return await self._store.list_open_orders(symbol)

    # --- checks ------------------------------------------------------------------------------------

    async def _exchange_tick(self, request: OrderRequest) -> Decimal | None:
        """The exchange's tick of a limit order's market when the market data source knows it (live quotes)."""
        if request.order_type is not OrderType.LIMIT or not isinstance(self._market_data, TickSizeSource):
            return None
        return await self._market_data.tick_size(request.symbol)

    async def _check_identifier(self, identifier: str) -> None:
        if identifier and (
            identifier in self._refused_identifiers or await self._store.get_order(identifier=identifier)
        ):
            raise DuplicateOrderIdentifier(
                f"identifier {identifier!r} was used before", name="duplicate_identifier", identifier=identifier
            )

    def _check_funds(self, request: OrderRequest, balances: dict[str, Balance], book: Orderbook) -> None:
        if request.side is Side.BUY:
            needed = self._reserve_krw(request)
            available, currency = _get(balances, KRW).balance, KRW
        else:
            needed = request.volume or ZERO
            available, currency = _get(balances, _base(request.symbol)).balance, _base(request.symbol)
        if needed > available:
            raise InsufficientFunds(
                f"needs {needed} {currency}, {available} available",
                name=f"insufficient_funds_{request.side.upbit}",
                identifier=request.identifier,
            )
        check_sweep(request, book)

    def _reserve_krw(self, request: OrderRequest) -> Decimal:
        gross = (
            (request.price or ZERO) * (request.volume or ZERO)
            if request.order_type is OrderType.LIMIT
            else request.krw_total or ZERO
        )
        return gross * (1 + self._fee_rate)

    # --- execution ---------------------------------------------------------------------------------

    def _execute(self, request: OrderRequest, book: Orderbook, balances: dict[str, Balance]) -> Order:
        now = self._clock()
        execution = self._walk(request, book, now)
        fee = execution.funds * self._fee_rate
        if request.order_type is OrderType.MARKET_BUY:
            state = ExchangeOrderState.DONE if execution.funds == request.krw_total else ExchangeOrderState.CANCEL
            remaining = ZERO
        elif request.order_type is OrderType.MARKET_SELL:
            state, remaining = ExchangeOrderState.DONE, ZERO
        else:
            remaining = (request.volume or ZERO) - execution.volume
            state = ExchangeOrderState.DONE if remaining == 0 else ExchangeOrderState.WAIT
        order = Order(
            uuid=str(uuid_lib.uuid4()),
            identifier=request.identifier,
            symbol=request.symbol,
            side=request.side,
            order_type=request.order_type,
            state=state,
            created_at=now,
            # the exchange's view, as Upbit reports it: a market buy's ``price`` is its KRW total
            price=request.krw_total if request.order_type is OrderType.MARKET_BUY else request.price,
            volume=request.volume,
            remaining_volume=remaining,
            executed_volume=execution.volume,
            executed_funds=execution.funds,
            paid_fee=fee,
            trades=tuple(execution.trades),
        )
        self._settle(order, execution.volume, execution.funds, fee, balances)
        if state is ExchangeOrderState.WAIT:
            self._lock_funds(order, balances)
        return order

    def _walk(self, request: OrderRequest, book: Orderbook, now: datetime) -> _Execution:
        execution = _Execution(trades=[])
        levels = book.asks if request.side is Side.BUY else book.bids
        for level in levels:
            size = self._take(request, level, execution)
            if size <= 0:
                break
            funds = level.price * size
            execution.volume += size
            execution.funds += funds
            execution.trades.append(Fill(str(uuid_lib.uuid4()), level.price, size, funds, now))
        return execution

    @staticmethod
    def _take(request: OrderRequest, level: OrderbookLevel, execution: _Execution) -> Decimal:
        if request.order_type is OrderType.MARKET_BUY:
            budget = (request.krw_total or ZERO) - execution.funds
            return min(level.size, truncate_volume(budget / level.price))
        if request.order_type is OrderType.LIMIT:
            limit_price = request.price or ZERO
            crosses = level.price <= limit_price if request.side is Side.BUY else level.price >= limit_price
            if not crosses:
                return ZERO
        return min(level.size, (request.volume or ZERO) - execution.volume)

    def _settle(
        self, order: Order, volume: Decimal, funds: Decimal, fee: Decimal, balances: dict[str, Balance]
    ) -> None:
        """Move executed KRW and coins between the account's balances."""
        if volume <= 0:
            return
        krw, base = _get(balances, KRW), _get(balances, _base(order.symbol))
        if order.side is Side.BUY:
            held = base.total
            average = (base.avg_buy_price * held + funds) / (held + volume)
            balances[KRW] = replace(krw, balance=krw.balance - funds - fee)
            balances[base.currency] = replace(base, balance=base.balance + volume, avg_buy_price=average)
        else:
            balances[KRW] = replace(krw, balance=krw.balance + funds - fee)
            remaining = base.total - volume
            balances[base.currency] = replace(
                base, balance=base.balance - volume, avg_buy_price=base.avg_buy_price if remaining > 0 else ZERO
            )

    def _locked_by(self, order: Order) -> tuple[str, Decimal]:
        if order.side is Side.BUY:
            return KRW, (order.price or ZERO) * order.remaining_volume * (1 + self._fee_rate)
        return _base(order.symbol), order.remaining_volume

    def _lock_funds(self, order: Order, balances: dict[str, Balance]) -> None:
        currency, amount = self._locked_by(order)
        account = _get(balances, currency)
        balances[currency] = replace(account, balance=account.balance - amount, locked=account.locked + amount)

    def _unlock(self, order: Order, balances: dict[str, Balance]) -> None:
        currency, amount = self._locked_by(order)
        account = _get(balances, currency)
        balances[currency] = replace(account, balance=account.balance + amount, locked=account.locked - amount)

    async def _match_resting(self, symbol: str | None) -> None:
        """Fill waiting limit orders the market traded through, at their limit price."""
        waiting = await self._store.list_open_orders(symbol)
        if not waiting:
            return
        books = {b.symbol: b for b in await self._market_data.get_orderbooks(sorted({o.symbol for o in waiting}))}
        balances = await self._load()
        changed = False
        for order in waiting:
            book = books.get(order.symbol)
            if book is None or not _crossed(order, book):
                continue
            self._unlock(order, balances)
            volume, price = order.remaining_volume, order.price or ZERO
            funds = price * volume
            fee = funds * self._fee_rate
            self._settle(order, volume, funds, fee, balances)
            filled = replace(
                order,
                state=ExchangeOrderState.DONE,
                remaining_volume=ZERO,
                executed_volume=order.executed_volume + volume,
                executed_funds=order.executed_funds + funds,
                paid_fee=order.paid_fee + fee,
                trades=(*order.trades, Fill(str(uuid_lib.uuid4()), price, volume, funds, self._clock())),
            )
            await self._store.save_order(filled)
            changed = True
            log.info("paper.order.filled", symbol=order.symbol, identifier=order.identifier, price=str(price))
        if changed:
            await self._store.save_balances(balances)

    # --- helpers -----------------------------------------------------------------------------------

    async def _load(self) -> dict[str, Balance]:
        if self._balances is None:
            self._balances = await self._store.load_balances()
            if not self._balances:
                self._balances = {KRW: Balance(KRW, self._starting_krw)}
                await self._store.save_balances(self._balances)
        return self._balances

    async def _book(self, symbol: str) -> Orderbook:
        books = await self._market_data.get_orderbooks([symbol])
        if not books:
            raise InvalidOrder(f"no orderbook for {symbol}", name="validation_error")
        return books[0]

    async def _find(self, uuid: str | None, identifier: str | None) -> Order:
        if not uuid and not identifier:
            raise ValueError("pass uuid or identifier")
        order = await self._store.get_order(uuid=uuid, identifier=identifier)
        if order is None:
            raise OrderNotFound(
                f"no paper order with uuid={uuid} identifier={identifier}",
                name="order_not_found",
                status=404,
                identifier=identifier,
            )
        return order


def _base(symbol: str) -> str:
    return symbol.split("-", 1)[1]


def _get(balances: dict[str, Balance], currency: str) -> Balance:
    return balances.get(currency) or Balance(currency, ZERO)


def _crossed(order: Order, book: Orderbook) -> bool:
    price = order.price or ZERO
    if order.side is Side.BUY:
        return book.best_ask is not None and book.best_ask < price
    return book.best_bid is not None and book.best_bid > price
