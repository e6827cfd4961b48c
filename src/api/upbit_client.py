"""Our own async Upbit REST client (httpx), implementing ``IExchangeClient``: the endpoint calls.

The pieces it calls live in ``src/api/upbit/``:
- ``transport``: JWT signing, ``Remaining-Req`` pacing, retries that never risk a second order,
  429/418 handling, and Upbit's refusals as typed errors.
- ``order_rules``: every order is normalised before sending (``normalize_order_request``): limit
  prices onto the tick grid (buys down, sells up) of the exchange's own tick size when known, volumes
  truncated to 8 decimals, market-buy totals to whole KRW, and the minimum checked locally for limit
  orders and market buys. The paper exchange applies the same rules.
- ``instruments``: the tick sizes of ``GET /v1/orderbook/instruments``, cached per market and read again
  every ``INSTRUMENTS_REFRESH_HOURS`` (the dated table is the fallback when the endpoint fails).

Every order carries ``smp_type`` (``UPBIT_SMP_TYPE``, ``cancel_maker`` by default) explicitly; the ``order``
group is paced at Upbit's 12 requests per second (``src.api.rate_limiter.GROUP_BUDGETS``).
- ``parsing``: Upbit's JSON as our types, and orders as Upbit's JSON.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pandas as pd

from src.api.interfaces import (
    MAX_CANDLES_PER_REQUEST,
    Balance,
    IExchangeClient,
    Order,
    Orderbook,
    OrderChance,
    OrderRequest,
    Ticker,
)
from src.api.upbit.instruments import TickSizeCache
from src.api.upbit.order_rules import normalize_order_request
from src.api.upbit.parsing import (
    candles_to_frame,
    order_body,
    parse_balance,
    parse_market_status,
    parse_order,
    parse_order_chance,
    parse_orderbook,
    parse_tick_sizes,
    parse_ticker,
)
from src.api.upbit.transport import UpbitTransport
from src.domain.market_rules import MIN_ORDER_KRW
from src.domain.market_stream import MarketStatus
from src.domain.orders import OrderType, SmpType
from src.domain.timeframes import Timeframe
from src.exceptions import DataError, InvalidPrice
from src.utils.logger import get_logger

if TYPE_CHECKING:
    from src.config.settings import Settings

log = get_logger(__name__)

OPEN_ORDERS_PAGE_LIMIT = 100


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
        smp_type: SmpType = SmpType.CANCEL_MAKER,
        instruments_refresh_hours: float = 24,
    ) -> None:
        self.transport = UpbitTransport(
            base_url,
            access_key,
            secret_key,
            timeout,
            max_attempts=max_attempts,
            backoff_seconds=backoff_seconds,
            default_block_seconds=default_block_seconds,
            jwt_algorithm=jwt_algorithm,
        )
        self._min_order_krw = min_order_krw
        self.smp_type = SmpType(smp_type)
        self.instruments = TickSizeCache(self.get_tick_sizes, refresh_hours=instruments_refresh_hours)

    @classmethod
    def from_settings(cls, settings: Settings) -> UpbitClient:
        upbit = settings.upbit
        return cls(
            upbit.base_url,
            access_key=upbit.access_key.get_secret_value() if upbit.access_key else None,
            secret_key=upbit.secret_key.get_secret_value() if upbit.secret_key else None,
            timeout=upbit.timeout_seconds,
            min_order_krw=settings.trading.min_order_krw,
            smp_type=settings.realtime.smp_type,
            instruments_refresh_hours=settings.realtime.instruments_refresh_hours,
        )

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> UpbitClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # --- quotation ---------------------------------------------------------------------------------

    async def get_tickers(self, symbols: list[str]) -> list[Ticker]:
        rows = await self.transport.get("/v1/ticker", [("markets", ",".join(_nonempty(symbols)))], group="ticker")
        return [parse_ticker(row) for row in rows]

    async def get_orderbooks(self, symbols: list[str]) -> list[Orderbook]:
        params = [("markets", ",".join(_nonempty(symbols)))]
        rows = await self.transport.get("/v1/orderbook", params, group="orderbook")
        return [parse_orderbook(row) for row in rows]

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
        rows = await self.transport.get(f"/v1/candles/{candle_path(Timeframe(timeframe))}", params, group="candle")
        return candles_to_frame(rows)

    async def get_tick_sizes(self, symbols: list[str]) -> dict[str, Decimal]:
        """``/v1/orderbook/instruments``: the exchange's tick size of each market (one request)."""
        params = [("markets", ",".join(_nonempty(symbols)))]
        return parse_tick_sizes(await self.transport.get("/v1/orderbook/instruments", params, group="orderbook"))

    async def tick_size(self, symbol: str) -> Decimal | None:
        """The exchange's tick of ``symbol`` from the cache (read when stale); ``None`` when it cannot be read."""
        return await self.instruments.tick_size(symbol)

    async def get_markets(self) -> list[dict[str, Any]]:
        """``/v1/market/all``: every market with its names (raw rows)."""
        return await self.transport.get("/v1/market/all", [("is_details", "false")], group="market")

    async def get_market_statuses(self) -> list[MarketStatus]:
        """``/v1/market/all?is_details=true``: every market's ``market_event`` flags (warning, caution); public."""
        rows = await self.transport.get("/v1/market/all", [("is_details", "true")], group="market")
        if not isinstance(rows, list):
            raise DataError(f"expected a list of markets from /v1/market/all, got {type(rows).__name__}")
        return [parse_market_status(row) for row in rows]

    # --- exchange ----------------------------------------------------------------------------------

    async def get_balances(self) -> list[Balance]:
        rows = await self.transport.get("/v1/accounts", [], group="default", auth=True)
        return [parse_balance(row) for row in rows]

    async def get_order_chance(self, symbol: str) -> OrderChance:
        data = await self.transport.get("/v1/orders/chance", [("market", symbol)], group="default", auth=True)
        return parse_order_chance(symbol, data, default_min_total=self._min_order_krw)

    async def place_order(self, request: OrderRequest) -> Order:
        """Normalise (the exchange's tick for a limit price), send with ``smp_type``, parse the answer."""
        tick = await self.tick_size(request.symbol) if request.order_type is OrderType.LIMIT else None
        normalized = normalize_order_request(request, min_order_krw=self._min_order_krw, tick_size=tick)
        if normalized.smp_type is None:
            normalized = replace(normalized, smp_type=self.smp_type)
        body = order_body(normalized)
        try:
            data = await self.transport.request(
                "POST", "/v1/orders", body=body, group="order", auth=True, identifier=normalized.identifier
            )
        except InvalidPrice:
            self.instruments.invalidate(request.symbol)  # the tick we used is not the exchange's (any more)
            raise
        order = parse_order(data)
        log.info(
            "order.placed",
            symbol=order.symbol,
            identifier=order.identifier,
            uuid=order.uuid,
            side=order.side.value,
            ord_type=order.order_type.value,
            state=order.state.value,
            smp_type=normalized.smp_type.value if normalized.smp_type else None,
        )
        return order

    async def test_order(self, request: OrderRequest) -> None:
        """``POST /v1/orders/test``: Upbit validates the order without placing it (``order-test`` group, 8/s).
        Returns when Upbit would accept it; raises its refusal as our typed error (e.g. ``name="market_offline"``
        after maintenance). The identifier is not sent: it stays free for the real order."""
        normalized = normalize_order_request(request, min_order_krw=self._min_order_krw)
        body = {key: value for key, value in order_body(normalized).items() if key != "identifier"}
        await self.transport.request("POST", "/v1/orders/test", body=body, group="order-test", auth=True)

    async def get_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order:
        data = await self.transport.get("/v1/order", _order_key(uuid, identifier), group="default", auth=True)
        return parse_order(data)

    async def cancel_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order:
        params = _order_key(uuid, identifier)
        data = await self.transport.request("DELETE", "/v1/order", params=params, group="default", auth=True)
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
            rows = await self.transport.get("/v1/orders/open", params, group="default", auth=True)
            orders.extend(parse_order(row) for row in rows)
            if len(rows) < OPEN_ORDERS_PAGE_LIMIT:
                return orders
            page += 1


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
