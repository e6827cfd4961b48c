"""The account as the exchange reports it: KRW cash and coin holdings valued at the latest prices."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from src.api.interfaces import IExchangeClient
from src.domain.money import ZERO, report_krw
from src.exceptions import TradingSystemError
from src.utils.logger import get_logger

log = get_logger(__name__)

USD_MARKET = "KRW-USDT"  # Upbit's own dollar price: a portfolio's value in USD is its KRW value at this price


@dataclass(frozen=True, slots=True)
class Holding:
    symbol: str
    volume: Decimal  # balance + locked
    avg_buy_price: Decimal
    price: Decimal | None  # latest trade price; None when the exchange has no ticker for it

    @property
    def value_krw(self) -> Decimal:
        return self.volume * (self.price if self.price is not None else self.avg_buy_price)

    @property
    def profit_rate(self) -> Decimal | None:
        if self.price is None or self.avg_buy_price <= 0:
            return None
        return (self.price / self.avg_buy_price - 1).quantize(Decimal("0.00000001"))


@dataclass(frozen=True, slots=True)
class Portfolio:
    at: datetime
    cash_krw: Decimal  # available + locked KRW
    krw_available: Decimal
    holdings: dict[str, Holding] = field(default_factory=dict)

    @property
    def equity_krw(self) -> Decimal:
        return self.cash_krw + sum((h.value_krw for h in self.holdings.values()), ZERO)

    def holding(self, symbol: str) -> Holding | None:
        return self.holdings.get(symbol)

    def prices(self) -> dict[str, Decimal]:
        return {s: h.price for s, h in self.holdings.items() if h.price is not None}

    def positions_json(self) -> dict[str, Any]:
        """The ``portfolio_snapshots.positions`` shape: {symbol: {amount, value, profit_rate, ...}}."""
        return {
            symbol: {
                "amount": str(h.volume),
                "value": str(report_krw(h.value_krw)),
                "price": None if h.price is None else str(h.price),
                "avg_buy_price": str(h.avg_buy_price),
                "profit_rate": None if h.profit_rate is None else str(h.profit_rate),
            }
            for symbol, h in sorted(self.holdings.items())
        }


async def load_portfolio(exchange: IExchangeClient, now: datetime, *, dust_krw: Decimal = Decimal("1")) -> Portfolio:
    """Balances and tickers; coins worth less than ``dust_krw`` are left out (Upbit keeps tiny remainders)."""
    balances = await exchange.get_balances()
    krw_total = ZERO
    krw_available = ZERO
    coins: dict[str, tuple[Decimal, Decimal]] = {}
    for balance in balances:
        if balance.currency == "KRW":
            krw_total, krw_available = balance.total, balance.balance
        elif balance.total > 0:
            coins[f"KRW-{balance.currency}"] = (balance.total, balance.avg_buy_price)
    prices: dict[str, Decimal] = {}
    if coins:
        prices = {t.symbol: t.trade_price for t in await exchange.get_tickers(sorted(coins))}
    holdings = {}
    for symbol, (volume, avg) in coins.items():
        holding = Holding(symbol, volume, avg, prices.get(symbol))
        if holding.value_krw >= dust_krw:
            holdings[symbol] = holding
    return Portfolio(now, krw_total, krw_available, holdings)


async def krw_per_usd(exchange: IExchangeClient) -> Decimal | None:
    """Upbit's KRW-USDT trade price, or None when the exchange has none (a replay without those candles, a
    market data outage: the USD value is then left empty, never guessed)."""
    try:
        tickers = await exchange.get_tickers([USD_MARKET])
    except (TradingSystemError, KeyError) as exc:
        log.debug("portfolio.usd_price_unavailable", market=USD_MARKET, error=f"{type(exc).__name__}: {exc}")
        return None
    price = next((t.trade_price for t in tickers if t.symbol == USD_MARKET), None)
    return price if price is not None and price > 0 else None


def usd_value(krw: Decimal, rate: Decimal | None) -> Decimal | None:
    """``krw`` in USD at ``rate`` KRW per USDT, to the cent (None without a rate)."""
    return None if rate is None else (krw / rate).quantize(Decimal("0.01"))
