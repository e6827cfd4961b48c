"""The one statement of what a valid Upbit order is, and how an order is put on Upbit's grid.

Both implementations of the exchange port call ``normalize_order_request`` before an order goes
anywhere: ``UpbitClient`` before it sends it, ``PaperExchange`` before it simulates it. Limit prices go
onto the tick grid (buys down, sells up): the exchange's own tick size when the caller knows it (``GET
/v1/orderbook/instruments``, cached by ``UpbitClient``), else the dated table in force at ``at``
(``src.domain.market_rules``; backtests and replay always use the table). Volumes are truncated to 8
decimals, a market buy's KRW total to whole won, and the minimum order is checked for limit orders and
market buys. A market sell's total depends on the book, so the exchange (or the paper exchange's
simulation of it) checks that one, as it checks the 30-level rule (``check_sweep``): a market order may not
take more than the first ``MAX_SWEEP_LEVELS`` levels of the book hold.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from src.api.interfaces import Orderbook, OrderRequest
from src.domain.market_rules import (
    MAX_SWEEP_LEVELS,
    MIN_ORDER_KRW,
    krw_tick_size,
    round_to_grid,
    truncate_volume,
)
from src.domain.money import ZERO, whole_krw
from src.domain.orders import OrderType, Side
from src.exceptions import InvalidOrder, UnderMinTotal
from src.utils.logger import get_logger

log = get_logger(__name__)


def normalize_order_request(
    request: OrderRequest,
    *,
    at: datetime | None = None,
    min_order_krw: Decimal = MIN_ORDER_KRW,
    tick_size: Decimal | None = None,
) -> OrderRequest:
    """Check an order's parameters for its type and put them on Upbit's grid.

    Limit prices go onto ``tick_size`` (the exchange's tick of the market) when given, else onto the
    dated table's grid in force at ``at`` (now when omitted); buys round down, sells up. Volumes are
    truncated to 8 decimals, a market buy's KRW total is truncated to whole won. Raises ``InvalidOrder``
    for parameters that do not fit the order type and ``UnderMinTotal`` below the minimum (market sells
    are checked by the exchange: their total depends on the book).
    """
    if not request.identifier:
        raise InvalidOrder("an order needs a client identifier", symbol=request.symbol)
    if not request.symbol.startswith("KRW-"):
        raise InvalidOrder(f"expected a KRW market such as KRW-BTC, got {request.symbol!r}", symbol=request.symbol)
    if request.order_type is OrderType.LIMIT:
        return _normalize_limit(request, at, min_order_krw, tick_size)
    if request.order_type is OrderType.MARKET_BUY:
        return _normalize_market_buy(request, min_order_krw)
    return _normalize_market_sell(request)


def _normalize_limit(
    request: OrderRequest, at: datetime | None, min_order_krw: Decimal, exchange_tick: Decimal | None
) -> OrderRequest:
    if request.price is None or request.volume is None or request.price <= 0 or request.volume <= 0:
        raise InvalidOrder("a limit order needs a positive price and volume", identifier=request.identifier)
    if request.krw_total is not None:
        raise InvalidOrder("a limit order has a price and volume, not a KRW total", identifier=request.identifier)
    table_tick = krw_tick_size(request.price, at)
    if exchange_tick is not None and exchange_tick != table_tick:
        log.warning(
            "order.tick_differs_from_table",
            symbol=request.symbol,
            price=str(request.price),
            exchange_tick=str(exchange_tick),
            table_tick=str(table_tick),
        )
    price = round_to_grid(request.price, exchange_tick or table_tick, up=request.side is Side.SELL)
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


def sweep_depth(book: Orderbook, side: Side) -> Decimal:
    """What a market order may take from the first ``MAX_SWEEP_LEVELS`` levels: the asks' KRW for a buy
    (price x size), the bids' volume for a sell."""
    if side is Side.BUY:
        return sum((level.price * level.size for level in book.asks[:MAX_SWEEP_LEVELS]), ZERO)
    return sum((level.size for level in book.bids[:MAX_SWEEP_LEVELS]), ZERO)


def check_sweep(request: OrderRequest, book: Orderbook) -> None:
    """Upbit's 30-level rule (since 2025-05-07): a market buy's KRW total above the first 30 asks, or a market
    sell's volume above the first 30 bids, is refused. The error name is not published; Upbit's documented
    family for refused order parameters is ``create_bid_error``/``create_ask_error``, which we (and the fake)
    use."""
    if request.order_type is OrderType.LIMIT:
        return
    amount = (request.krw_total if request.order_type is OrderType.MARKET_BUY else request.volume) or ZERO
    depth = sweep_depth(book, request.side)
    if amount > depth:
        unit = "KRW" if request.side is Side.BUY else request.symbol.split("-", 1)[-1]
        raise InvalidOrder(
            f"market {request.side.value} of {amount} {unit} exceeds what the first {MAX_SWEEP_LEVELS} levels "
            f"of the {request.symbol} book hold ({depth} {unit})",
            name=f"create_{request.side.upbit}_error",
            identifier=request.identifier,
        )
