"""Our own async Upbit REST client (httpx), implementing ``IExchangeClient``.

- Quotation calls (candles, ticker, orderbook) need no keys; exchange calls sign a JWT
  (``access_key``, fresh ``nonce``, and ``query_hash``/``query_hash_alg`` when there are parameters).
  ``query_hash`` is the hex SHA-512 of the url-encoded parameters, with ``[]`` kept literal in array
  keys (``states[]=wait``); for POST it is built from the JSON body's key/value pairs.
- Errors are typed from Upbit's ``error.name`` (see ``_ERRORS_BY_PREFIX``).
- Retries never risk a second order: reads retry on 429/5xx/timeouts/connection errors; an order POST
  retries only when the request provably did not reach the matching engine (429 rejection, connection
  refused). A 5xx, a timeout or a dropped connection after an order POST raises
  ``ExchangeUnavailable`` carrying the ``identifier``; the caller reconciles with
  ``get_order(identifier=...)`` and never re-sends.
- Orders are normalised before sending (see ``normalize_order_request``): limit prices onto the tick
  grid (buys down, sells up), volumes truncated to 8 decimals, market-buy totals to whole KRW, and
  the 5,000 KRW minimum checked locally for limit orders and market buys.
"""

from __future__ import annotations

import hashlib
import json
import uuid as uuid_lib
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import jwt
import pandas as pd

from src.api.interfaces import (
    CANDLE_COLUMNS,
    MAX_CANDLES_PER_REQUEST,
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
)
from src.api.rate_limiter import UpbitRateLimiter
from src.domain.market_rules import MIN_ORDER_KRW, round_to_tick, truncate_volume
from src.domain.money import ZERO, whole_krw
from src.domain.orders import OrderType, Side
from src.domain.timeframes import Timeframe
from src.exceptions import (
    AuthError,
    Blocked,
    DataError,
    DuplicateOrderIdentifier,
    ExchangeError,
    ExchangeUnavailable,
    InsufficientFunds,
    InvalidOrder,
    InvalidPrice,
    OrderNotFound,
    RateLimited,
    UnderMinTotal,
)
from src.utils.logger import get_logger

if TYPE_CHECKING:
    from src.config.settings import Settings

log = get_logger(__name__)

OPEN_ORDERS_PAGE_LIMIT = 100

# Upbit error names, by prefix, to our error types. Any other 4xx becomes a plain ExchangeError.
_ERRORS_BY_PREFIX: tuple[tuple[str, type[ExchangeError]], ...] = (
    ("insufficient_funds", InsufficientFunds),
    ("under_min_total", UnderMinTotal),
    ("invalid_price", InvalidPrice),
    ("duplicate_identifier", DuplicateOrderIdentifier),  # name chosen by our fake; Upbit's is undocumented
    ("create_ask_error", InvalidOrder),
    ("create_bid_error", InvalidOrder),
    ("invalid_volume", InvalidOrder),
    ("validation_error", InvalidOrder),
    ("order_not_found", OrderNotFound),
    ("not_found", OrderNotFound),
    ("jwt_verification", AuthError),
    ("invalid_query_payload", AuthError),
    ("expired_access_key", AuthError),
    ("nonce_used", AuthError),
    ("no_authorization_i_p", AuthError),
    ("out_of_scope", AuthError),
    ("invalid_access_key", AuthError),
    ("too_many_requests", RateLimited),
)


def upbit_query_string(params: list[tuple[str, str]]) -> str:
    """The string Upbit hashes: ``urlencode`` of the parameters with literal ``[]`` in array keys."""
    return urlencode(params, doseq=True).replace("%5B%5D=", "[]=")


def query_hash(params: list[tuple[str, str]]) -> str:
    return hashlib.sha512(upbit_query_string(params).encode()).hexdigest()


def decimal_text(value: Decimal) -> str:
    """A plain (never exponent) string for a Decimal, as Upbit expects in order bodies."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def normalize_order_request(
    request: OrderRequest, *, at: datetime | None = None, min_order_krw: Decimal = MIN_ORDER_KRW
) -> OrderRequest:
    """Check an order's parameters for its type and put them on Upbit's grid.

    Limit prices go onto the tick grid in force at ``at`` (buys round down, sells up), volumes are
    truncated to 8 decimals, a market buy's KRW total is truncated to whole won. Raises
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
    price = round_to_tick(request.price, at, up=request.side is Side.SELL)
    volume = truncate_volume(request.volume)
    if price * volume < min_order_krw:
        raise UnderMinTotal(
            f"limit order total {price * volume} KRW is below the minimum {min_order_krw} KRW",
            identifier=request.identifier,
        )
    return replace(request, price=price, volume=volume)


def _normalize_market_buy(request: OrderRequest, min_order_krw: Decimal) -> OrderRequest:
    if request.side is not Side.BUY or request.volume is not None or request.price is None:
        raise InvalidOrder(
            "a market buy (ord_type=price) is a buy with price = KRW total and no volume",
            identifier=request.identifier,
        )
    total = whole_krw(request.price)
    if total < min_order_krw:
        raise UnderMinTotal(
            f"market buy total {total} KRW is below the minimum {min_order_krw} KRW", identifier=request.identifier
        )
    return replace(request, price=total)


def _normalize_market_sell(request: OrderRequest) -> OrderRequest:
    if request.side is not Side.SELL or request.price is not None or request.volume is None:
        raise InvalidOrder(
            "a market sell (ord_type=market) is a sell with a volume and no price", identifier=request.identifier
        )
    volume = truncate_volume(request.volume)
    if volume <= 0:
        raise InvalidOrder("a market sell needs a positive volume", identifier=request.identifier)
    return replace(request, volume=volume)


def order_body(request: OrderRequest) -> dict[str, str]:
    body = {"market": request.symbol, "side": request.side.upbit}
    if request.volume is not None:
        body["volume"] = decimal_text(request.volume)
    if request.price is not None:
        body["price"] = decimal_text(request.price)
    body["ord_type"] = request.order_type.value
    body["identifier"] = request.identifier
    return body


def candle_path(timeframe: Timeframe) -> str:
    """Upbit's candle path of a timeframe: ``minutes/60`` for 1h, ``days``, ``weeks``."""
    if timeframe is Timeframe.W1:
        return "weeks"
    if timeframe is Timeframe.D1:
        return "days"
    return f"minutes/{timeframe.minutes}"


class UpbitClient(IExchangeClient):
    """Upbit REST over httpx. ``base_url`` is the host without ``/v1`` (tests pass a fake's URL)."""

    def __init__(
        self,
        base_url: str,
        access_key: str | None = None,
        secret_key: str | None = None,
        timeout: float = 10.0,
        *,
        max_attempts: int = 3,
        backoff_seconds: float = 0.25,
        default_block_seconds: float = 60.0,
        jwt_algorithm: str = "HS256",
        min_order_krw: Decimal = MIN_ORDER_KRW,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if jwt_algorithm not in ("HS256", "HS512"):
            raise ValueError("jwt_algorithm must be HS256 or HS512")
        self._base_url = base_url.rstrip("/")
        self._access_key = access_key or None
        self._secret_key = secret_key or None
        self._max_attempts = max_attempts
        self._jwt_algorithm = jwt_algorithm
        self._min_order_krw = min_order_krw
        self.rate_limiter = UpbitRateLimiter(
            backoff_seconds=backoff_seconds, default_block_seconds=default_block_seconds
        )
        self._http = httpx.AsyncClient(base_url=self._base_url, timeout=httpx.Timeout(timeout))

    @classmethod
    def from_settings(cls, settings: Settings) -> UpbitClient:
        upbit = settings.upbit
        return cls(
            upbit.base_url,
            access_key=upbit.access_key.get_secret_value() if upbit.access_key else None,
            secret_key=upbit.secret_key.get_secret_value() if upbit.secret_key else None,
            timeout=upbit.timeout_seconds,
            min_order_krw=settings.trading.min_order_krw,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> UpbitClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # --- quotation ---------------------------------------------------------------------------------

    async def get_tickers(self, symbols: list[str]) -> list[Ticker]:
        rows = await self._get("/v1/ticker", [("markets", ",".join(_nonempty(symbols)))], group="ticker")
        return [_parse_ticker(row) for row in rows]

    async def get_orderbooks(self, symbols: list[str]) -> list[Orderbook]:
        rows = await self._get("/v1/orderbook", [("markets", ",".join(_nonempty(symbols)))], group="orderbook")
        return [_parse_orderbook(row) for row in rows]

    async def get_candles(
        self, symbol: str, timeframe: str, count: int = 200, to: datetime | None = None
    ) -> pd.DataFrame:
        if not Timeframe.is_known(timeframe):
            raise ValueError(f"unknown timeframe {timeframe!r}; expected one of {Timeframe.names()}")
        if not 1 <= count <= MAX_CANDLES_PER_REQUEST:
            raise ValueError(f"count must be 1..{MAX_CANDLES_PER_REQUEST} (page with to=...), got {count}")
        params = [("market", symbol), ("count", str(count))]
        if to is not None:
            if to.tzinfo is None:
                raise ValueError("to must be timezone-aware (UTC)")
            params.append(("to", to.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")))
        rows = await self._get(f"/v1/candles/{candle_path(Timeframe(timeframe))}", params, group="candle")
        return candles_to_frame(rows)

    async def get_markets(self) -> list[dict[str, Any]]:
        """``/v1/market/all``: every market with its names (raw rows)."""
        return await self._get("/v1/market/all", [("is_details", "false")], group="market")

    # --- exchange ----------------------------------------------------------------------------------

    async def get_balances(self) -> list[Balance]:
        rows = await self._get("/v1/accounts", [], group="default", auth=True)
        return [_parse_balance(row) for row in rows]

    async def get_order_chance(self, symbol: str) -> OrderChance:
        data = await self._get("/v1/orders/chance", [("market", symbol)], group="default", auth=True)
        market = data.get("market") or {}
        bid = market.get("bid") or {}
        return OrderChance(
            symbol=symbol,
            bid_fee=_dec(data["bid_fee"]),
            ask_fee=_dec(data["ask_fee"]),
            min_total=_dec(bid.get("min_total", self._min_order_krw)),
            krw_available=_dec((data.get("bid_account") or {}).get("balance", "0")),
            base_available=_dec((data.get("ask_account") or {}).get("balance", "0")),
        )

    async def place_order(self, request: OrderRequest) -> Order:
        normalized = normalize_order_request(request, min_order_krw=self._min_order_krw)
        body = order_body(normalized)
        data = await self._request(
            "POST", "/v1/orders", body=body, group="order", auth=True, identifier=normalized.identifier
        )
        order = parse_order(data)
        log.info(
            "order.placed",
            symbol=order.symbol,
            identifier=order.identifier,
            uuid=order.uuid,
            side=order.side.value,
            ord_type=order.order_type.value,
            state=order.state.value,
        )
        return order

    async def get_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order:
        data = await self._get("/v1/order", _order_key(uuid, identifier), group="default", auth=True)
        return parse_order(data)

    async def cancel_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order:
        params = _order_key(uuid, identifier)
        data = await self._request("DELETE", "/v1/order", params=params, group="default", auth=True)
        return parse_order(data)

    async def get_open_orders(self, symbol: str | None = None) -> list[Order]:
        orders: list[Order] = []
        page = 1
        while True:
            params = [("market", symbol)] if symbol else []
            params += [
                ("states[]", "wait"),
                ("states[]", "watch"),
                ("page", str(page)),
                ("limit", str(OPEN_ORDERS_PAGE_LIMIT)),
            ]
            rows = await self._get("/v1/orders/open", params, group="default", auth=True)
            orders.extend(parse_order(row) for row in rows)
            if len(rows) < OPEN_ORDERS_PAGE_LIMIT:
                return orders
            page += 1

    # --- transport ---------------------------------------------------------------------------------

    async def _get(self, path: str, params: list[tuple[str, str]], *, group: str, auth: bool = False) -> Any:
        return await self._request("GET", path, params=params, group=group, auth=auth)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        body: dict[str, str] | None = None,
        group: str,
        auth: bool,
        identifier: str | None = None,
    ) -> Any:
        is_order = method == "POST"
        for attempt in range(self._max_attempts):
            last = attempt == self._max_attempts - 1
            await self.rate_limiter.acquire(group)
            headers = self._auth_headers(params or list((body or {}).items())) if auth else {}
            try:
                response = await self._send(method, path, params, body, headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Nothing reached the exchange: safe to retry even for an order.
                if last:
                    raise _unavailable(method, path, exc, identifier) from exc
                await self.rate_limiter.wait_backoff(attempt)
                continue
            except httpx.TransportError as exc:
                if is_order or method == "DELETE" or last:
                    raise _unavailable(method, path, exc, identifier) from exc
                await self.rate_limiter.wait_backoff(attempt)
                continue
            self.rate_limiter.record(response.headers.get("remaining-req"))
            status = response.status_code
            if status == 429:
                if last:
                    raise _error_from(response, identifier)
                log.warning("upbit.rate_limited", path=path, attempt=attempt + 1)
                await self.rate_limiter.wait_backoff(attempt, _retry_after(response))
                continue
            if status == 418:
                blocked = self.rate_limiter.block(_retry_after(response))
                log.error("upbit.blocked", path=path, seconds=blocked)
                raise _error_from(response, identifier)
            if status >= 500:
                if is_order or method == "DELETE" or last:
                    raise _error_from(response, identifier)
                await self.rate_limiter.wait_backoff(attempt)
                continue
            if status >= 400:
                raise _error_from(response, identifier)
            return _json(response, identifier)
        raise AssertionError("unreachable: the last attempt always returns or raises")

    async def _send(
        self,
        method: str,
        path: str,
        params: list[tuple[str, str]] | None,
        body: dict[str, str] | None,
        headers: dict[str, str],
    ) -> httpx.Response:
        if body is not None:
            headers = {**headers, "Content-Type": "application/json; charset=utf-8"}
            return await self._http.request(method, path, content=json.dumps(body).encode(), headers=headers)
        return await self._http.request(method, path, params=params or None, headers=headers)

    def _auth_headers(self, params: list[tuple[str, str]]) -> dict[str, str]:
        if not (self._access_key and self._secret_key):
            raise AuthError("this Upbit call needs keys: set UPBIT_ACCESS_KEY and UPBIT_SECRET_KEY", name="no_keys")
        claims: dict[str, str] = {"access_key": self._access_key, "nonce": str(uuid_lib.uuid4())}
        if params:
            claims["query_hash"] = query_hash(params)
            claims["query_hash_alg"] = "SHA512"
        token = jwt.encode(claims, self._secret_key, algorithm=self._jwt_algorithm)
        return {"Authorization": f"Bearer {token}"}


# --- parsing -----------------------------------------------------------------------------------------


def _nonempty(symbols: list[str]) -> list[str]:
    if not symbols:
        raise ValueError("expected at least one market, e.g. ['KRW-BTC']")
    return symbols


def _order_key(uuid: str | None, identifier: str | None) -> list[tuple[str, str]]:
    if uuid:
        return [("uuid", uuid)]
    if identifier:
        return [("identifier", identifier)]
    raise ValueError("pass uuid or identifier")


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


def _parse_balance(row: dict[str, Any]) -> Balance:
    return Balance(
        currency=row["currency"],
        balance=_dec(row["balance"]),
        locked=_dec(row.get("locked")),
        avg_buy_price=_dec(row.get("avg_buy_price")),
    )


def _parse_ticker(row: dict[str, Any]) -> Ticker:
    return Ticker(
        symbol=row["market"],
        trade_price=_dec(row["trade_price"]),
        timestamp=_ms(row.get("trade_timestamp") or row["timestamp"]),
        change_rate=_dec(row.get("signed_change_rate", row.get("change_rate"))),
        acc_trade_price_24h=_dec(row.get("acc_trade_price_24h")),
    )


def _parse_orderbook(row: dict[str, Any]) -> Orderbook:
    units = row.get("orderbook_units") or []
    return Orderbook(
        symbol=row["market"],
        timestamp=_ms(row["timestamp"]),
        asks=tuple(OrderbookLevel(_dec(u["ask_price"]), _dec(u["ask_size"])) for u in units if u.get("ask_size")),
        bids=tuple(OrderbookLevel(_dec(u["bid_price"]), _dec(u["bid_size"])) for u in units if u.get("bid_size")),
    )


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


# --- errors ------------------------------------------------------------------------------------------


def _json(response: httpx.Response, identifier: str | None) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        context = {"identifier": identifier} if identifier else {}
        raise ExchangeUnavailable(
            f"Upbit answered {response.status_code} with a body that is not JSON",
            status=response.status_code,
            **context,
        ) from exc


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _unavailable(method: str, path: str, exc: Exception, identifier: str | None) -> ExchangeUnavailable:
    what = f"{method} {path}"
    if identifier:
        what += f" (order {identifier}: outcome unknown, reconcile by identifier)"
    return ExchangeUnavailable(f"{what} failed: {type(exc).__name__}: {exc}", identifier=identifier)


def _error_from(response: httpx.Response, identifier: str | None) -> ExchangeError:
    status = response.status_code
    name, message = _error_name_and_message(response)
    context: dict[str, Any] = {"identifier": identifier} if identifier else {}
    if status == 418:
        return Blocked(f"Upbit blocked this client (418): {message}", name=name, status=status, **context)
    if status == 429:
        return RateLimited(f"Upbit rate limit (429): {message}", name=name, status=status, **context)
    if status >= 500:
        return ExchangeUnavailable(
            f"Upbit server error {status}: {message}; outcome unknown", name=name, status=status, **context
        )
    error_type = next((cls for prefix, cls in _ERRORS_BY_PREFIX if name and name.startswith(prefix)), None)
    if error_type is None:
        error_type = AuthError if status in (401, 403) else OrderNotFound if status == 404 else ExchangeError
    return error_type(f"Upbit {status} {name}: {message}", name=name, status=status, **context)


def _error_name_and_message(response: httpx.Response) -> tuple[str | None, str]:
    try:
        error = response.json().get("error") or {}
        return error.get("name"), str(error.get("message", ""))
    except (ValueError, AttributeError):
        return None, response.text[:200]
