"""Upbit's JSON and our types: answers parsed into ``Order``, ``Ticker``... and orders written as Upbit's JSON.

Upbit's numbers are strings on exchange endpoints and JSON numbers on quotation endpoints; both become
``Decimal`` (candles become floats in the backtester's DataFrame shape). A malformed answer raises
``DataError``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import pandas as pd

from src.api.interfaces import (
    CANDLE_COLUMNS,
    Balance,
    ExchangeOrderState,
    Fill,
    Order,
    Orderbook,
    OrderbookLevel,
    OrderChance,
    OrderRequest,
    Ticker,
)
from src.domain.market_stream import MarketStatus
from src.domain.money import ZERO
from src.domain.orders import OrderType, Side
from src.exceptions import DataError

# --- our types as Upbit's JSON -------------------------------------------------------------------------


def decimal_text(value: Decimal) -> str:
    """A plain (never exponent) string for a Decimal, as Upbit expects in order bodies."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def order_body(request: OrderRequest) -> dict[str, str]:
    """Upbit's order JSON; ``smp_type`` is sent whenever the request carries one (the client always sets it)."""
    body = {"market": request.symbol, "side": request.side.upbit}
    if request.volume is not None:
        body["volume"] = decimal_text(request.volume)
    # Upbit's ``price`` field carries a limit order's price, or a market buy's KRW total.
    wire_price = request.krw_total if request.order_type is OrderType.MARKET_BUY else request.price
    if wire_price is not None:
        body["price"] = decimal_text(wire_price)
    body["ord_type"] = request.order_type.value
    body["identifier"] = request.identifier
    if request.smp_type is not None:
        body["smp_type"] = request.smp_type.value
    return body


def order_to_payload(order: Order) -> dict[str, Any]:
    """An ``Order`` in Upbit's JSON form (numbers as strings); ``parse_order`` reads it back."""
    return {
        "uuid": order.uuid,
        "identifier": order.identifier,
        "market": order.symbol,
        "side": order.side.upbit,
        "ord_type": order.order_type.value,
        "state": order.state.value,
        "created_at": order.created_at.isoformat(),
        "price": None if order.price is None else decimal_text(order.price),
        "volume": None if order.volume is None else decimal_text(order.volume),
        "remaining_volume": decimal_text(order.remaining_volume),
        "executed_volume": decimal_text(order.executed_volume),
        "executed_funds": decimal_text(order.executed_funds),
        "paid_fee": decimal_text(order.paid_fee),
        "prevented_volume": decimal_text(order.prevented_volume),
        "trades_count": len(order.trades),
        "trades": [
            {
                "market": order.symbol,
                "uuid": t.uuid,
                "price": decimal_text(t.price),
                "volume": decimal_text(t.volume),
                "funds": decimal_text(t.funds),
                "side": order.side.upbit,
                "created_at": t.created_at.isoformat(),
            }
            for t in order.trades
        ],
    }


# --- Upbit's JSON as our types -------------------------------------------------------------------------


def _dec(value: Any) -> Decimal:
    """Upbit numbers: strings on exchange endpoints, JSON numbers on quotation endpoints."""
    if value is None:
        return ZERO
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise DataError(f"expected a number from Upbit, got {value!r}") from exc


def _opt_dec(value: Any) -> Decimal | None:
    return None if value is None else _dec(value)


def _time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _ms(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def parse_balance(row: dict[str, Any]) -> Balance:
    return Balance(
        currency=row["currency"],
        balance=_dec(row["balance"]),
        locked=_dec(row.get("locked")),
        avg_buy_price=_dec(row.get("avg_buy_price")),
    )


def parse_ticker(row: dict[str, Any]) -> Ticker:
    return Ticker(
        symbol=row["market"],
        trade_price=_dec(row["trade_price"]),
        timestamp=_ms(row.get("trade_timestamp") or row["timestamp"]),
        change_rate=_dec(row.get("signed_change_rate", row.get("change_rate"))),
        acc_trade_price_24h=_dec(row.get("acc_trade_price_24h")),
    )


def parse_orderbook(row: dict[str, Any]) -> Orderbook:
    units = row.get("orderbook_units") or []
    return Orderbook(
        symbol=row["market"],
        timestamp=_ms(row["timestamp"]),
        asks=tuple(OrderbookLevel(_dec(u["ask_price"]), _dec(u["ask_size"])) for u in units if u.get("ask_size")),
        bids=tuple(OrderbookLevel(_dec(u["bid_price"]), _dec(u["bid_size"])) for u in units if u.get("bid_size")),
    )


def parse_order_chance(symbol: str, data: dict[str, Any], *, default_min_total: Decimal) -> OrderChance:
    """``/v1/orders/chance``: fees, the bid minimum (``default_min_total`` when absent) and what is available."""
    market = data.get("market") or {}
    bid = market.get("bid") or {}
    return OrderChance(
        symbol=symbol,
        bid_fee=_dec(data["bid_fee"]),
        ask_fee=_dec(data["ask_fee"]),
        min_total=_dec(bid.get("min_total", default_min_total)),
        krw_available=_dec((data.get("bid_account") or {}).get("balance", "0")),
        base_available=_dec((data.get("ask_account") or {}).get("balance", "0")),
    )


def parse_tick_sizes(rows: list[dict[str, Any]]) -> dict[str, Decimal]:
    """``/v1/orderbook/instruments``: each market's ``tick_size`` (a number string); malformed rows raise."""
    ticks: dict[str, Decimal] = {}
    for row in rows:
        try:
            tick = _dec(row["tick_size"])
            market = str(row["market"])
        except (KeyError, TypeError) as exc:
            raise DataError(f"unexpected Upbit instrument row: {row!r}") from exc
        if not tick.is_finite() or tick <= 0:
            raise DataError(f"Upbit reported a tick size of {tick} for {market}")
        ticks[market] = tick
    return ticks


def parse_market_status(row: dict[str, Any]) -> MarketStatus:
    """A ``/v1/market/all?is_details=true`` row as the market's flags. ``market_event.warning`` is a boolean;
    ``caution`` is a boolean or (the SDK's shape) an object of alert flags, flagged when any is true."""
    try:
        market = str(row["market"])
    except (KeyError, TypeError) as exc:
        raise DataError(f"unexpected Upbit market row: {row!r}"[:300]) from exc
    event = row.get("market_event") or {}
    if not isinstance(event, dict):
        raise DataError(f"unexpected market_event of {market}: {event!r}"[:300])
    caution = event.get("caution")
    flagged_caution = any(bool(v) for v in caution.values()) if isinstance(caution, dict) else bool(caution)
    return MarketStatus(market, warning=bool(event.get("warning")), caution=flagged_caution)


def parse_order(data: dict[str, Any]) -> Order:
    """An Upbit order object (POST answer, GET /v1/order, list rows) as our ``Order``."""
    try:
        trades = tuple(
            Fill(
                uuid=t["uuid"],
                price=_dec(t["price"]),
                volume=_dec(t["volume"]),
                funds=_dec(t["funds"]),
                created_at=_time(t["created_at"]),
            )
            for t in data.get("trades") or []
        )
        executed_funds = (
            _dec(data["executed_funds"])
            if data.get("executed_funds") is not None
            else sum((t.funds for t in trades), ZERO)
        )
        return Order(
            uuid=data["uuid"],
            identifier=data.get("identifier"),
            symbol=data["market"],
            side=Side.from_upbit(data["side"]),
            order_type=OrderType(data["ord_type"]),
            state=ExchangeOrderState(data["state"]),
            created_at=_time(data["created_at"]),
            price=_opt_dec(data.get("price")),
            volume=_opt_dec(data.get("volume")),
            remaining_volume=_dec(data.get("remaining_volume")),
            executed_volume=_dec(data.get("executed_volume")),
            executed_funds=executed_funds,
            paid_fee=_dec(data.get("paid_fee")),
            trades=trades,
            prevented_volume=_dec(data.get("prevented_volume")),
        )
    except (KeyError, ValueError) as exc:
        raise DataError(f"unexpected Upbit order object: {exc}", order=data) from exc


def _float_or_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def empty_candles() -> pd.DataFrame:
    index = pd.DatetimeIndex([], tz=UTC, name="timestamp")
    return pd.DataFrame({column: pd.Series(dtype=float) for column in CANDLE_COLUMNS}, index=index)


def candles_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Upbit candle rows (newest first, numbers as JSON numbers) as our oldest-first DataFrame."""
    if not rows:
        return empty_candles()
    frame = pd.DataFrame(
        {
            "open": [float(r["opening_price"]) for r in rows],
            "high": [float(r["high_price"]) for r in rows],
            "low": [float(r["low_price"]) for r in rows],
            "close": [float(r["trade_price"]) for r in rows],
            "volume": [float(r["candle_acc_trade_volume"]) for r in rows],
            "value": [_float_or_nan(r.get("candle_acc_trade_price")) for r in rows],
        },
        index=pd.DatetimeIndex(pd.to_datetime([r["candle_date_time_utc"] for r in rows], utc=True), name="timestamp"),
    )
    frame = frame[~frame.index.duplicated(keep="first")]
    return frame.sort_index()
