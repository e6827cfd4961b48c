"""The one statement of what a valid Upbit order is, and how an order is put on Upbit's grid.

Both implementations of the exchange port call ``normalize_order_request`` before an order goes
anywhere: ``UpbitClient`` before it sends it, ``PaperExchange`` before it simulates it. Limit prices go
onto the tick grid in force at ``at`` (buys down, sells up; ``src.domain.market_rules``), volumes are
truncated to 8 decimals, a market buy's KRW total to whole won, and the minimum order is checked for
limit orders and market buys. A market sell's total depends on the book, so the exchange (or the paper
exchange's simulation of it) checks that one.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from src.api.interfaces import OrderRequest
from src.domain.market_rules import MIN_ORDER_KRW, round_to_tick, truncate_volume
from src.domain.money import ZERO, whole_krw
from src.domain.orders import OrderType, Side
from src.exceptions import InvalidOrder, UnderMinTotal


def normalize_order_request(
    request: OrderRequest, *, at: datetime | None = None, min_order_krw: Decimal = MIN_ORDER_KRW
) -> OrderRequest:
    """Check an order's parameters for its type and put them on Upbit's grid.

    Limit prices go onto the tick grid in force at ``at`` (now when omitted; buys round down, sells
    up), volumes are truncated to 8 decimals, a market buy's KRW total is truncated to whole won. Raises
    ``InvalidOrder`` for parameters that do not fit the order type and ``UnderMinTotal`` below the
    minimum (market sells are checked by the exchange: their total depends on the book).
    """
    if not request.identifier:
        raise InvalidOrder("an order needs a client identifier", symbol=request.symbol)
    if not request.symbol.startswith("KRW-"):
        raise InvalidOrder(f"expected a KRW market such as KRW-BTC, got {request.symbol!r}", symbol=request.symbol)
    if request.order_type is OrderType.LIMIT:
        return _normalize_limit(request, at, min_order_krw)
    if request.order_type is OrderType.MARKET_BUY:
        return _normalize_market_buy(request, min_order_krw)
    return _normalize_market_sell(request)


def _normalize_limit(request: OrderRequest, at: datetime | None, min_order_krw: Decimal) -> OrderRequest:
    if request.price is None or request.volume is None or request.price <= 0 or request.volume <= 0:
        raise InvalidOrder("a limit order needs a positive price and volume", identifier=request.identifier)
    if request.krw_total is not None:
        raise InvalidOrder("a limit order has a price and volume, not a KRW total", identifier=request.identifier)
    price = round_to_tick(request.price, at, up=request.side is Side.SELL)
    volume = truncate_volume(request.volume)
    if price * volume < min_order_krw:
        raise UnderMinTotal(
            f"limit order total {price * volume} KRW is below the minimum {min_order_krw} KRW",
            identifier=request.identifier,
        )
    return replace(request, price=price, volume=volume)


def _normalize_market_buy(request: OrderRequest, min_order_krw: Decimal) -> OrderRequest:
    if (
        request.side is not Side.BUY
        or request.volume is not None
        or request.price is not None
        or request.krw_total is None
    ):
        raise InvalidOrder(
            "a market buy (ord_type=price) is a buy with a KRW total and no volume or price",
            identifier=request.identifier,
        )
    total = whole_krw(request.krw_total)
    if total < min_order_krw:
        raise UnderMinTotal(
            f"market buy total {total} KRW is below the minimum {min_order_krw} KRW", identifier=request.identifier
        )
    return replace(request, krw_total=total)


def _normalize_market_sell(request: OrderRequest) -> OrderRequest:
    if (
        request.side is not Side.SELL
        or request.price is not None
        or request.krw_total is not None
        or request.volume is None
    ):
        raise InvalidOrder(
            "a market sell (ord_type=market) is a sell with a volume and no price or KRW total",
            identifier=request.identifier,
        )
    volume = truncate_volume(request.volume)
    if volume <= 0:
        raise InvalidOrder("a market sell needs a positive volume", identifier=request.identifier)
    return replace(request, volume=volume)


def check_market_sell_total(
    request: OrderRequest, best_bid: Decimal | None, *, min_order_krw: Decimal = MIN_ORDER_KRW
) -> None:
    """The exchange's minimum for a market sell: its volume at the best bid (Upbit's ``under_min_total_ask``)."""
    total = (request.volume or ZERO) * (best_bid or ZERO)
    if total < min_order_krw:
        raise UnderMinTotal(
            f"order total {total} KRW is below the minimum {min_order_krw} KRW",
            name=f"under_min_total_{request.side.upbit}",
            identifier=request.identifier,
        )
