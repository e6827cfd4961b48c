"""The exchange port: one interface, two implementations (``UpbitClient`` and ``PaperExchange``).

Money and quantities are ``Decimal``. Candles are market data and come as a pandas DataFrame in
the same shape the backtester loads from CSV (UTC index, oldest first).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, runtime_checkable

import pandas as pd

from src.domain.money import ZERO
from src.domain.orders import OrderType, Side, SmpType

CANDLE_COLUMNS = ("open", "high", "low", "close", "volume", "value")
MAX_CANDLES_PER_REQUEST = 200  # Upbit serves at most 200 candles per request; longer ranges page with `to`


class ExchangeOrderState(StrEnum):
    """Upbit's order ``state`` values.

    ``prevented``: self-match prevention (``smp_type``) stopped the order; it is final. What executed before
    is a fill, the rest is cancelled (``Order.prevented_volume`` says how much).
    """

    WAIT = "wait"
    WATCH = "watch"
    DONE = "done"
    CANCEL = "cancel"
    PREVENTED = "prevented"


@dataclass(frozen=True, slots=True)
class Balance:
    currency: str
    balance: Decimal
    locked: Decimal = ZERO
    avg_buy_price: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return self.balance + self.locked


@dataclass(frozen=True, slots=True)
class Ticker:
    symbol: str
    trade_price: Decimal
    timestamp: datetime
    change_rate: Decimal = ZERO
    acc_trade_price_24h: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class OrderbookLevel:
    price: Decimal
    size: Decimal


@dataclass(frozen=True, slots=True)
class Orderbook:
    symbol: str
    timestamp: datetime
    asks: tuple[OrderbookLevel, ...]  # best (lowest) first
    bids: tuple[OrderbookLevel, ...]  # best (highest) first

    @property
    def best_ask(self) -> Decimal | None:
        return self.asks[0].price if self.asks else None

    @property
    def best_bid(self) -> Decimal | None:
        return self.bids[0].price if self.bids else None

    @property
    def total_ask_size(self) -> Decimal:
        return sum((level.size for level in self.asks), ZERO)

    @property
    def total_bid_size(self) -> Decimal:
        return sum((level.size for level in self.bids), ZERO)


@dataclass(frozen=True, slots=True)
class OrderChance:
    symbol: str
    bid_fee: Decimal
    ask_fee: Decimal
    min_total: Decimal
    krw_available: Decimal
    base_available: Decimal


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What to send. ``identifier`` is our client id; the exchange keeps it unique forever."""

    symbol: str
    side: Side
    order_type: OrderType
    identifier: str
    volume: Decimal | None = None  # limit and market sell
    price: Decimal | None = None  # limit only: KRW per unit of the base coin
    krw_total: Decimal | None = None  # market buy only: the KRW to spend (sent as Upbit's ``price``)
    smp_type: SmpType | None = None  # None: the client's configured ``UPBIT_SMP_TYPE`` (always sent)


@dataclass(frozen=True, slots=True)
class Fill:
    uuid: str
    price: Decimal
    volume: Decimal
    funds: Decimal
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Order:
    """The exchange's view of an order."""

    uuid: str
    identifier: str | None
    symbol: str
    side: Side
    order_type: OrderType
    state: ExchangeOrderState
    created_at: datetime
    price: Decimal | None = None
    volume: Decimal | None = None
    remaining_volume: Decimal = ZERO
    executed_volume: Decimal = ZERO
    executed_funds: Decimal = ZERO
    paid_fee: Decimal = ZERO
    trades: tuple[Fill, ...] = field(default_factory=tuple)
    prevented_volume: Decimal = ZERO  # cancelled by self-match prevention (Upbit's ``prevented_volume``)

    @property
    def is_final(self) -> bool:
        return self.state in (ExchangeOrderState.DONE, ExchangeOrderState.CANCEL, ExchangeOrderState.PREVENTED)

    @property
    def is_filled(self) -> bool:
        """Done, or a cancel or self-match prevention that still executed something (a market buy's unspendable
        remainder, the part executed before the prevention)."""
        return self.state is ExchangeOrderState.DONE or (
            self.state in (ExchangeOrderState.CANCEL, ExchangeOrderState.PREVENTED) and self.executed_volume > 0
        )

    @property
    def average_price(self) -> Decimal | None:
        if self.executed_volume <= 0:
            return None
        return self.executed_funds / self.executed_volume


@runtime_checkable
class MarketDataSource(Protocol):
    """The read side of an exchange: what the paper exchange and the collector need for market data.

    ``IExchangeClient`` implementations (``UpbitClient``) satisfy it as they are; the replay source
    implements only this part.
    """

    async def get_tickers(self, symbols: list[str]) -> list[Ticker]: ...

    async def get_orderbooks(self, symbols: list[str]) -> list[Orderbook]: ...

    async def get_candles(
        self, symbol: str, timeframe: str, count: int = 200, to: datetime | None = None
    ) -> pd.DataFrame: ...


@runtime_checkable
class TickSizeSource(Protocol):
    """The exchange's own tick size of a market (``GET /v1/orderbook/instruments``), or ``None`` when unknown.

    ``UpbitClient`` implements it (cached, refreshed every ``INSTRUMENTS_REFRESH_HOURS``); the paper exchange
    asks its market data source when that source implements it; replay and backtests use the dated table.
    """

    async def tick_size(self, symbol: str) -> Decimal | None: ...


class IExchangeClient(ABC):
    """Everything the trading pipeline asks of an exchange."""

    @abstractmethod
    async def get_balances(self) -> list[Balance]: ...

    @abstractmethod
    async def get_tickers(self, symbols: list[str]) -> list[Ticker]: ...

    @abstractmethod
    async def get_orderbooks(self, symbols: list[str]) -> list[Orderbook]: ...

    @abstractmethod
    async def get_candles(
        self, symbol: str, timeframe: str, count: int = 200, to: datetime | None = None
    ) -> pd.DataFrame:
        """Up to ``count`` candles strictly before ``to`` (or the newest), oldest first, UTC index."""

    @abstractmethod
    async def get_order_chance(self, symbol: str) -> OrderChance: ...

    @abstractmethod
    async def place_order(self, request: OrderRequest) -> Order: ...

    @abstractmethod
    async def get_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order:
        """Raises ``OrderNotFound`` when the exchange has no such order."""

    @abstractmethod
    async def cancel_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order: ...

    @abstractmethod
    async def get_open_orders(self, symbol: str | None = None) -> list[Order]: ...

    async def close(self) -> None:  # noqa: B027 - optional hook, most clients own a connection pool
        """Release network resources."""
