"""A fake Upbit REST server on loopback that speaks the real wire format (docs/external-apis.md §1).

Quotation: ``/v1/market/all`` (``is_details=true``: ``market_event`` flags set by ``set_market_event``),
``/v1/candles/minutes/{unit}|days|weeks|months`` (newest first, count 1..200, ``to`` exclusive in all three
formats, gaps where no candle was scripted), ``/v1/ticker``, ``/v1/orderbook`` (at most 30 levels, as Upbit
serves since 2025-05-07), ``/v1/orderbook/instruments`` (``tick_size`` per market: ``set_tick_size`` or the
dated table). Numbers are JSON numbers.

Exchange (JWT checked: HS256 or HS512, ``query_hash`` recomputed from what arrived, nonces never
reused): ``/v1/accounts``, ``/v1/orders/chance``, ``POST /v1/orders`` (201), ``GET /v1/order``,
``DELETE /v1/order`` (answers ``wait``; ``cancel`` from the next request on), ``/v1/orders/open``,
``/v1/orders`` (legacy list), ``POST /v1/orders/test`` (below; ``market_offline`` for a market
``set_market_offline``). Numbers are strings. Orders fill against the scripted book: a market
buy walks the asks and ends ``cancel`` with ``executed_volume > 0`` when a KRW remainder cannot buy
another 1e-8 unit; limits fill when they cross, else rest as ``wait`` and fill when a later
``set_orderbook`` crosses them (at their own limit price, as makers). Enforced: per-ord_type
parameters (``create_*_error``), tick size (``invalid_price_*``, the market's instrument tick), 5,000 KRW
minimum (``under_min_total_*``), balances (``insufficient_funds_*``), unique identifiers forever, even
for rejected requests (``duplicate_identifier``, a name we chose: Upbit's is undocumented), the 30-level
rule (a market order larger than the first 30 levels hold: ``create_bid_error``/``create_ask_error``, the
documented family for refused order parameters; Upbit's exact name is not published), ``smp_type``
(``cancel_maker``, ``cancel_taker``, ``reduce``, ``none``; anything else is ``validation_error``; echoed
on the order with ``prevented_volume``/``prevented_locked``). ``inject_prevented`` makes the next order end
``prevented`` after executing a share of it (self-match prevention).

Every answer carries ``Remaining-Req``; per-group budgets per second give 429 when exceeded, and 418
(a timed block) when the client keeps sending in the same second. Faults can be injected (see
``inject_*``). Every request is recorded with its decoded JWT claims (``requests``).

Routes the official SDK (upbit-sdk 1.1.0) uses besides: ``POST /v1/orders/test`` (every check of an order,
nothing placed, the identifier stays free), ``GET /v1/orders/closed`` and the public ``GET /v1/trades/ticks``
(tests/test_upbit_sdk_conformance.py). ``add_order_listener`` sees every order change (wait, each execution,
done/cancel): FakeUpbitWebSocket turns them into ``myOrder`` events.

Run standalone: ``python -m tests.fakes.upbit_server --port 0`` prints the base URL on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import signal
import threading
import time
import uuid as uuid_lib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import jwt
import pandas as pd

from src.domain.market_rules import MIN_ORDER_KRW, krw_tick_size
from tests.fakes.loopback_http import HttpRequest, HttpResponse, LoopbackHttpServer
from tests.support.candles import make_candles

KST = timezone(timedelta(hours=9))
EIGHT_DECIMALS = Decimal("0.00000001")
ZERO = Decimal("0")
DEFAULT_ACCESS_KEY = "fake-access-key"
DEFAULT_SECRET_KEY = "fake-secret-key-for-tests-only-0123456789-abcdefghijklmnopqrstuvwxyz"

# Budgets by group per window (docs §1.6 and §6: ``order`` raised from 8 to 12 per second on 2026-08-21).
DEFAULT_RATE_LIMITS: dict[str, int] = {
    "market": 10,
    "candle": 10,
    "ticker": 10,
    "trade": 10,
    "orderbook": 10,
    "default": 30,
    "order": 12,
    "order-test": 8,
    "order-cancel-all": 1,
}
# Window of a group's budget in seconds when it is not one second (batch cancel: 1 request per 2 s).
RATE_WINDOW_SECONDS: dict[str, int] = {"order-cancel-all": 2}
SMP_TYPES = ("cancel_maker", "cancel_taker", "reduce", "none")
BOOK_LEVELS = 30
_TIMEFRAME_PATHS: dict[str, str] = {
    "1m": "minutes/1",
    "3m": "minutes/3",
    "5m": "minutes/5",
    "10m": "minutes/10",
    "15m": "minutes/15",
    "30m": "minutes/30",
    "1h": "minutes/60",
    "4h": "minutes/240",
    "1d": "days",
    "1w": "weeks",
    "1M": "months",
}
_MINUTE_UNITS = (1, 3, 5, 10, 15, 30, 60, 240)
# market_event.caution's alert flags (GET /v1/market/all?is_details=true)
CAUTION_FLAGS = (
    "PRICE_FLUCTUATIONS",
    "TRADING_VOLUME_SOARING",
    "DEPOSIT_AMOUNT_SOARING",
    "GLOBAL_PRICE_DIFFERENCES",
    "CONCENTRATION_OF_SMALL_ACCOUNTS",
)
ORDER_TEST_PATH = "/v1/orders/test"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """What crossed the wire, as the fake saw it."""

    method: str
    path: str
    query: list[tuple[str, str]]
    json: Any
    headers: dict[str, str]
    jwt_claims: dict[str, Any] | None
    jwt_alg: str | None
    status: int
    at: float = 0.0  # time.monotonic() when the request arrived (rate-limit checks)

    @property
    def params(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        pairs = self.query if self.json is None else [(k, str(v)) for k, v in self.json.items()]
        for key, value in pairs:
            grouped.setdefault(key, []).append(value)
        return grouped


@dataclass(slots=True)
class Fault:
    """An injected failure for the next ``times`` matching requests.

    kinds: ``rate_limit`` (429, ``json_body`` picks the JSON or the plain-text body), ``block`` (418 for
    ``seconds``), ``server_error`` (``status``; with ``after_processing`` an order is created first),
    ``slow`` (answer after ``seconds``; the request is processed), ``drop`` (process, then close the
    connection without answering), ``insufficient_funds`` (an order POST is refused).
    ``POST /v1/orders/test`` (a probe before an order, answering nothing about the order itself) gets only the
    faults that name that path: a fault scripted for ``/v1/orders`` or for any request waits for the order.
    """

    kind: str
    times: int = 1
    method: str | None = None
    path: str | None = None
    status: int = 500
    seconds: float = 0.0
    json_body: bool = False
    after_processing: bool = False
    share: Decimal = ZERO  # ``prevented``: the share of the order executed before self-match prevention

    def matches(self, method: str, path: str) -> bool:
        if self.times <= 0:
            return False
        if path == ORDER_TEST_PATH and self.path != ORDER_TEST_PATH:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or path == self.path or path.startswith(self.path.rstrip("/") + "/")


@dataclass(slots=True)
class _Account:
    balance: Decimal = ZERO
    locked: Decimal = ZERO
    avg_buy_price: Decimal = ZERO


@dataclass(slots=True)
class _Order:
    uuid: str
    identifier: str | None
    market: str
    side: str  # bid | ask
    ord_type: str  # limit | price | market
    price: Decimal | None
    volume: Decimal | None
    created_at: datetime
    state: str = "wait"
    remaining_volume: Decimal = ZERO
    executed_volume: Decimal = ZERO
    executed_funds: Decimal = ZERO
    paid_fee: Decimal = ZERO
    reserved_fee: Decimal = ZERO
    locked: Decimal = ZERO
    trades: list[dict[str, Any]] = field(default_factory=list)
    cancel_pending: bool = False
    smp_type: str | None = None
    prevented_volume: Decimal = ZERO
    prevented_locked: Decimal = ZERO


class _Reply(Exception):
    """Raised inside a handler to answer with an Upbit error body."""

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message


def _s(value: Decimal | None) -> str | None:
    if value is None:
        return None
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _dec(value: Any, name: str) -> Decimal:
    try:
        result = Decimal(str(value))
    except InvalidOperation as exc:
        raise _Reply(400, "validation_error", f"{name} does not have a valid value") from exc
    if not result.is_finite():
        raise _Reply(400, "validation_error", f"{name} does not have a valid value")
    return result


def _kst(moment: datetime) -> str:
    return moment.astimezone(KST).isoformat(timespec="seconds")


def _group_of(method: str, path: str) -> str:
    if path.startswith("/v1/candles"):
        return "candle"
    if path.startswith("/v1/trades"):
        return "trade"
    if method == "POST" and path == "/v1/orders/test":
        return "order-test"
    if path.startswith("/v1/ticker"):
        return "ticker"
    if path.startswith("/v1/orderbook"):
        return "orderbook"
    if path.startswith("/v1/market"):
        return "market"
    if method == "POST" and path == "/v1/orders":
        return "order"
    if method == "DELETE" and path == "/v1/orders/open":
        return "order-cancel-all"
    return "default"


def _parse_to(text: str) -> datetime:
    """Upbit's three ``to`` formats: ``...Z``, ``YYYY-MM-DD HH:MM:SS`` (UTC) and ``...+09:00``."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "T"))
    except ValueError as exc:
        raise _Reply(400, "validation_error", "Invalid parameter. Check the given value!") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _parse_time(text: str) -> datetime:
    """``start_time``/``end_time`` of the order lists: ISO 8601 with a zone, or milliseconds."""
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _Reply(400, "validation_error", "Invalid parameter. Check the given value!") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _candle_span(path: str) -> timedelta:
    if path.startswith("minutes/"):
        return timedelta(minutes=int(path.split("/")[1]))
    return {"days": timedelta(days=1), "weeks": timedelta(weeks=1), "months": timedelta(days=31)}[path]


class FakeUpbit:
    """The fake exchange. Start it (``start()``, ``with``, ``async with``), point a client at ``base_url``."""

    def __init__(
        self,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        *,
        port: int = 0,
        fee_rate: Decimal = Decimal("0.0005"),
        min_total: Decimal = MIN_ORDER_KRW,
        post_answer: str = "wait",
        rate_limits: dict[str, int] | None = None,
        block_after_excess: int = 3,
        auto_block_seconds: float = 1.0,
    ) -> None:
        if post_answer not in ("wait", "final"):
            raise ValueError("post_answer must be 'wait' (Upbit-like) or 'final'")
        self.access_key = access_key
        self.secret_key = secret_key
        self.fee_rate = fee_rate
        self.min_total = min_total
        self.post_answer = post_answer
        self.rate_limits = dict(DEFAULT_RATE_LIMITS if rate_limits is None else rate_limits)
        self.enforce_rate_limits = True
        self.block_after_excess = block_after_excess
        self.auto_block_seconds = auto_block_seconds
        self.tick_time: datetime | None = None  # tick table date; None means now
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._server = LoopbackHttpServer(self._handle, port=port)
        self._markets: dict[str, dict[str, str]] = {}
        self._accounts: dict[str, _Account] = {}
        self._books: dict[str, dict[str, list[list[Decimal]]]] = {}
        self._tickers: dict[str, Decimal] = {}
        self._candles: dict[tuple[str, str], list[tuple[datetime, dict[str, float]]]] = {}
        self._orders: dict[str, _Order] = {}
        self._tick_sizes: dict[str, Decimal] = {}
        self._by_identifier: dict[str, str] = {}
        self._used_identifiers: set[str] = set()
        self._nonces: set[str] = set()
        self._faults: list[Fault] = []
        self._order_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._windows: dict[str, tuple[int, int, int]] = {}  # group -> (second, count, sent_after_429)
        self._blocked_until = 0.0
        self._market_events: dict[str, tuple[bool, str | None]] = {}  # market -> (warning, the caution flag raised)
        self._offline_markets: set[str] = set()

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._server.base_url

    def start(self) -> FakeUpbit:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeUpbit:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeUpbit:
        return self.start()

    async def __aexit__(self, *_exc: object) -> None:
        self.stop()

    # --- scripting ---------------------------------------------------------------------------------

    def add_market(self, market: str, korean_name: str = "", english_name: str = "") -> None:
        with self._lock:
            base = market.split("-", 1)[1]
            self._markets[market] = {"korean_name": korean_name or base, "english_name": english_name or base}

    def set_balance(
        self, currency: str, balance: Decimal | str | int, locked: Decimal | str | int = 0, avg_buy_price: Any = 0
    ) -> None:
        with self._lock:
            self._accounts[currency] = _Account(
                Decimal(str(balance)), Decimal(str(locked)), Decimal(str(avg_buy_price))
            )

    def balance(self, currency: str) -> Decimal:
        with self._lock:
            account = self._accounts.get(currency)
            return account.balance if account else ZERO

    def locked(self, currency: str) -> Decimal:
        with self._lock:
            account = self._accounts.get(currency)
            return account.locked if account else ZERO

    def set_orderbook(self, market: str, asks: Iterable[tuple[Any, Any]], bids: Iterable[tuple[Any, Any]]) -> None:
        """Levels as (price, size), best first. Resting limit orders that now cross are filled."""
        with self._lock:
            self._ensure_market(market)
            self._books[market] = {
                "asks": [[Decimal(str(p)), Decimal(str(s))] for p, s in asks],
                "bids": [[Decimal(str(p)), Decimal(str(s))] for p, s in bids],
            }
            for order in list(self._orders.values()):
                if order.market == market and order.state == "wait" and not order.cancel_pending:
                    self._match_limit(order, resting=True)
                    if order.state != "wait":
                        self._notify(order)

    def set_tick_size(self, market: str, tick: Decimal | str | int | None) -> None:
        """The market's ``tick_size`` in ``/v1/orderbook/instruments`` and in price validation (None: the table)."""
        with self._lock:
            self._ensure_market(market)
            if tick is None:
                self._tick_sizes.pop(market, None)
            else:
                self._tick_sizes[market] = Decimal(str(tick))

    def tick_size(self, market: str, price: Decimal) -> Decimal:
        """The tick the fake enforces for ``price`` on ``market``."""
        return self._tick_sizes.get(market) or krw_tick_size(price, self.tick_time)

    def set_market_event(self, market: str, *, warning: bool = False, caution: bool | str = False) -> None:
        """Upbit's flags of ``market`` in ``/v1/market/all?is_details=true``: ``market_event.warning``, and
        ``market_event.caution``, an object of alert flags as Upbit (and its SDK) has it; ``caution=True`` raises
        ``PRICE_FLUCTUATIONS``, a string raises that flag."""
        if isinstance(caution, str) and caution not in CAUTION_FLAGS:
            raise ValueError(f"unknown caution flag {caution!r}; one of {CAUTION_FLAGS}")
        raised = caution if isinstance(caution, str) else ("PRICE_FLUCTUATIONS" if caution else None)
        with self._lock:
            self._ensure_market(market)
            self._market_events[market] = (warning, raised)

    def set_market_offline(self, market: str, offline: bool = True) -> None:
        """``POST /v1/orders/test`` for ``market`` answers Upbit's ``market_offline`` error (as after maintenance)."""
        with self._lock:
            self._ensure_market(market)
            if offline:
                self._offline_markets.add(market)
            else:
                self._offline_markets.discard(market)

    def set_ticker(self, market: str, trade_price: Any) -> None:
        with self._lock:
            self._ensure_market(market)
            self._tickers[market] = Decimal(str(trade_price))

    def set_candles(self, market: str, timeframe: str, candles: pd.DataFrame) -> None:
        """Candles in our DataFrame shape (UTC open-time index); gaps are simply missing rows."""
        path = _TIMEFRAME_PATHS.get(timeframe, timeframe)
        rows = [
            (ts.to_pydatetime().astimezone(UTC), _candle_values(row)) for ts, row in candles.sort_index().iterrows()
        ]
        with self._lock:
            self._ensure_market(market)
            self._candles[(market, path)] = rows

    def order(self, *, uuid: str | None = None, identifier: str | None = None) -> dict[str, Any] | None:
        """The fake's own view of an order (as the JSON it would answer), or None."""
        with self._lock:
            found = self._find_order(uuid, identifier)
            return self._order_json(found, with_trades=True) if found else None

    @property
    def orders(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._order_json(order, with_trades=True) for order in self._orders.values()]

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path and (method is None or r.method == method.upper())]

    def seed_demo(self, krw: Decimal = Decimal("10000000")) -> None:
        """Markets, books, balances and 200 candles per timeframe for KRW-BTC and KRW-ETH."""
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        self.set_balance("KRW", krw)
        for market, price, tick in (("KRW-BTC", 95_000_000, 1000), ("KRW-ETH", 4_500_000, 1000)):
            self.set_orderbook(
                market,
                asks=[(price + tick * (i + 1), "0.5") for i in range(15)],
                bids=[(price - tick * i, "0.5") for i in range(15)],
            )
            for timeframe, span in (("1m", 1), ("5m", 5), ("15m", 15), ("1h", 60), ("4h", 240), ("1d", 1440)):
                aligned = now - timedelta(minutes=(now.hour * 60 + now.minute) % span)
                start = aligned - timedelta(minutes=span * 200)
                self.set_candles(market, timeframe, make_candles(start, 200, timeframe, start_price=price, seed=7))

    # --- order events (the private WebSocket's myOrder feed) ----------------------------------------

    def add_order_listener(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(order_json)`` on every state change of every order: ``wait`` when placed, ``trade``
        for each execution (the order JSON with ``state: "trade"`` and the execution under ``trade``), then
        ``done``/``cancel``. Called on the server thread under the fake's lock: the callback must not block."""
        with self._lock:
            self._order_listeners.append(callback)

    def remove_order_listener(self, callback: Callable[[dict[str, Any]], None]) -> None:
        with self._lock:
            if callback in self._order_listeners:
                self._order_listeners.remove(callback)

    def _notify(self, order: _Order, trade: dict[str, Any] | None = None) -> None:
        if not self._order_listeners:
            return
        event = self._order_json(order, with_trades=False)
        if trade is not None:
            event["state"] = "trade"
            event["trade"] = {**trade, "fee": _s(Decimal(trade["funds"]) * self.fee_rate)}
        for listener in list(self._order_listeners):
            with contextlib.suppress(Exception):  # a test's listener must not break the exchange
                listener(event)

    # --- fault injection ---------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def inject_rate_limit(
        self, times: int = 1, *, json_body: bool = False, method: str | None = None, path: str | None = None
    ) -> None:
        self.inject(Fault("rate_limit", times=times, json_body=json_body, method=method, path=path))

    def inject_block(self, seconds: float, *, method: str | None = None, path: str | None = None) -> None:
        self.inject(Fault("block", seconds=seconds, method=method, path=path))

    def inject_server_error(
        self,
        status: int = 500,
        times: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        after_processing: bool = False,
    ) -> None:
        self.inject(
            Fault(
                "server_error", times=times, status=status, method=method, path=path, after_processing=after_processing
            )
        )

    def inject_slow(
        self, seconds: float, times: int = 1, *, method: str | None = None, path: str | None = None
    ) -> None:
        self.inject(Fault("slow", times=times, seconds=seconds, method=method, path=path))

    def inject_insufficient_funds(self, times: int = 1) -> None:
        self.inject(Fault("insufficient_funds", times=times, method="POST", path="/v1/orders"))

    def inject_prevented(self, times: int = 1, *, executed_share: Decimal | str = "0") -> None:
        """The next order POSTs execute ``executed_share`` of the order, then self-match prevention cancels the
        rest: the order ends ``prevented`` with ``prevented_volume``/``prevented_locked``."""
        share = Decimal(str(executed_share))
        if not ZERO <= share < 1:
            raise ValueError("executed_share must be in [0, 1)")
        self.inject(Fault("prevented", times=times, method="POST", path="/v1/orders", share=share))

    def inject_drop_after_accept(self, times: int = 1) -> None:
        """The next order POST is executed, then the connection closes without an answer."""
        self.inject(Fault("drop", times=times, method="POST", path="/v1/orders"))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._blocked_until = 0.0

    @property
    def blocked(self) -> bool:
        return time.monotonic() < self._blocked_until

    # --- request handling --------------------------------------------------------------------------

    def _handle(self, request: HttpRequest) -> HttpResponse:
        arrived = time.monotonic()
        with self._lock:
            self._settle_pending_cancels()
            group = _group_of(request.method, request.path)
            fault = self._take_fault(request.method, request.path)
            response = self._answer(request, group, fault)
            response.headers.setdefault("Remaining-Req", self._remaining_req(group))
            self._record(request, response.status if not response.drop_connection else 0)
            self.requests[-1] = replace(self.requests[-1], at=arrived)
            return response

    def _answer(self, request: HttpRequest, group: str, fault: Fault | None) -> HttpResponse:
        if self.blocked:
            return self._blocked_reply()
        limited = self._count_request(group)
        if limited is not None:
            return limited
        if fault is not None and fault.kind == "rate_limit":
            return self._too_many(fault.json_body)
        if fault is not None and fault.kind == "block":
            self._blocked_until = time.monotonic() + fault.seconds
            return self._blocked_reply()
        if fault is not None and fault.kind == "server_error" and not fault.after_processing:
            return _error_response(fault.status, "server_error", "Internal Server Error")
        try:
            status, payload = self._route(request, fault)
            response = HttpResponse(status=status, body=_json_bytes(payload), headers=_json_headers())
        except _Reply as reply:
            response = _error_response(reply.status, reply.name, reply.message)
        if fault is not None and fault.kind == "server_error":
            return _error_response(fault.status, "server_error", "Internal Server Error")
        if fault is not None and fault.kind == "slow":
            response.delay_seconds = fault.seconds
        if fault is not None and fault.kind == "drop":
            response.drop_connection = True
        return response

    def _route(self, request: HttpRequest, fault: Fault | None) -> tuple[int, Any]:
        method, path = request.method, request.path
        params = dict(request.query)
        if method == "GET" and path == "/v1/market/all":
            return 200, self._market_list(details=params.get("is_details") == "true")
        if method == "GET" and path.startswith("/v1/candles/"):
            return 200, self._candles_reply(path.removeprefix("/v1/candles/"), params)
        if method == "GET" and path == "/v1/ticker":
            return 200, [self._ticker_json(m) for m in self._markets_param(params)]
        if method == "GET" and path == "/v1/orderbook":
            return 200, [self._orderbook_json(m) for m in self._markets_param(params)]
        if method == "GET" and path == "/v1/orderbook/instruments":
            return 200, [self._instrument_json(m) for m in self._markets_param(params)]
        if method == "GET" and path == "/v1/trades/ticks":
            return 200, self._trade_ticks(params)
        if not path.startswith("/v1/"):
            raise _Reply(404, "not_found", f"no route {method} {path}")
        self._authenticate(request)
        return self._exchange_route(method, path, request, params, fault)

    def _exchange_route(
        self, method: str, path: str, request: HttpRequest, params: dict[str, str], fault: Fault | None
    ) -> tuple[int, Any]:
        if method == "GET" and path == "/v1/accounts":
            return 200, [self._account_json(c, a) for c, a in self._accounts.items()]
        if method == "GET" and path == "/v1/orders/chance":
            return 200, self._chance_json(params.get("market", ""))
        if method == "POST" and path == "/v1/orders":
            return 201, self._create_order(_body_json(request), fault)
        if method == "GET" and path == "/v1/order":
            return 200, self._order_json(self._require_order(params), with_trades=True)
        if method == "DELETE" and path == "/v1/order":
            return 200, self._cancel(self._require_order(params))
        if method == "GET" and path in ("/v1/orders/open", "/v1/orders"):
            return 200, self._list_orders(request.query, open_only=path.endswith("/open"))
        if method == "POST" and path == "/v1/orders/test":
            return 201, self._test_order(_body_json(request))
        if method == "GET" and path == "/v1/orders/closed":
            return 200, self._closed_orders(request.query)
        raise _Reply(404, "not_found", f"no route {method} {path}")

    # --- rate limiting -----------------------------------------------------------------------------

    def _count_request(self, group: str) -> HttpResponse | None:
        if not self.enforce_rate_limits or group not in self.rate_limits:
            return None
        second = int(time.monotonic() / RATE_WINDOW_SECONDS.get(group, 1))
        window_second, count, after_429 = self._windows.get(group, (second, 0, 0))
        if window_second != second:
            count, after_429 = 0, 0
        count += 1
        if count > self.rate_limits[group]:
            after_429 += 1
            self._windows[group] = (second, count, after_429)
            if after_429 > self.block_after_excess:
                self._blocked_until = time.monotonic() + self.auto_block_seconds
                return self._blocked_reply()
            return self._too_many(json_body=True)
        self._windows[group] = (second, count, after_429)
        return None

    def _remaining_req(self, group: str) -> str:
        limit = self.rate_limits.get(group, 30)
        second = int(time.monotonic() / RATE_WINDOW_SECONDS.get(group, 1))
        window_second, count, _ = self._windows.get(group, (second, 0, 0))
        used = count if window_second == second else 0
        return f"group={group}; min={limit * 60}; sec={max(0, limit - used)}"

    def _too_many(self, json_body: bool) -> HttpResponse:
        if json_body:
            return _error_response(429, "too_many_requests", "Too many API requests.")
        return HttpResponse(429, b"Too many API requests.", {"Content-Type": "text/plain; charset=utf-8"})

    def _blocked_reply(self) -> HttpResponse:
        left = max(0.0, self._blocked_until - time.monotonic())
        response = _error_response(
            418, "too_many_requests_blocked", f"요청 수 제한 초과로 {left:.1f}초 동안 차단되었습니다."
        )
        response.headers["Retry-After"] = f"{left:.3f}"
        return response

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    # --- auth --------------------------------------------------------------------------------------

    def _authenticate(self, request: HttpRequest) -> None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise _Reply(401, "jwt_verification", "Authorization header is missing")
        token = header.removeprefix("Bearer ")
        try:
            claims = jwt.decode(token, self.secret_key, algorithms=["HS256", "HS512"])
        except jwt.PyJWTError as exc:
            raise _Reply(401, "jwt_verification", f"Failed to verify Jwt token: {exc}") from exc
        if claims.get("access_key") != self.access_key:
            raise _Reply(401, "invalid_access_key", "잘못된 엑세스 키입니다.")
        nonce = claims.get("nonce")
        if not nonce or nonce in self._nonces:
            raise _Reply(401, "nonce_used", "이미 요청한 nonce값이 다시 전송되었습니다.")
        self._nonces.add(nonce)
        pairs = request.query if request.method != "POST" else [(k, str(v)) for k, v in _body_json(request).items()]
        if pairs or "query_hash" in claims:
            expected = hashlib.sha512(urlencode(pairs).replace("%5B%5D=", "[]=").encode()).hexdigest()
            if claims.get("query_hash") != expected or claims.get("query_hash_alg", "SHA512") != "SHA512":
                raise _Reply(401, "invalid_query_payload", "JWT 헤더의 페이로드가 올바르지 않습니다.")

    # --- order test, closed orders, trade ticks (routes the official SDK uses) ----------------------

    def _test_order(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/orders/test``: every check of ``POST /v1/orders`` (parameters, tick, minimum, funds, an
        identifier already used), then the order-shaped answer Upbit gives; nothing is placed or reserved and
        the identifier stays free."""
        side, ord_type, market = body.get("side"), body.get("ord_type"), body.get("market")
        identifier = body.get("identifier")
        if market in self._offline_markets:  # set_market_offline: as right after maintenance
            raise _Reply(400, "market_offline", "점검 중인 마켓입니다. 잠시 후 다시 시도해주세요.")
        if identifier is not None and identifier in self._used_identifiers:
            raise _Reply(400, "duplicate_identifier", "identifier는 중복될 수 없습니다.")
        if side not in ("bid", "ask"):
            raise _Reply(400, "validation_error", "side does not have a valid value")
        if market not in self._markets:
            raise _Reply(400, "validation_error", "market does not have a valid value")
        smp_type = body.get("smp_type")
        if smp_type is not None and smp_type not in SMP_TYPES:
            raise _Reply(400, "validation_error", "smp_type does not have a valid value")
        price, volume = self._order_params(side, ord_type, body)
        self._check_tick(market, side, ord_type, price)
        self._check_min_total(market, side, ord_type, price, volume)
        order = _Order(
            uuid=str(uuid_lib.uuid4()),
            identifier=identifier,
            market=market,
            side=side,
            ord_type=ord_type,
            price=price,
            volume=volume,
            created_at=datetime.now(UTC),
            remaining_volume=volume or ZERO,
            smp_type=smp_type,
        )
        accounts = {currency: _Account(a.balance, a.locked, a.avg_buy_price) for currency, a in self._accounts.items()}
        try:
            self._reserve(order)  # the funds check of a real order, on a copy of the balances
        finally:
            self._accounts = accounts
        return self._order_json(order, with_trades=False)

    def _closed_orders(self, query: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """``GET /v1/orders/closed``: ``done``/``cancel`` orders created in [start_time, end_time] (at most 7
        days; the past 7 days by default), newest first (``order_by=asc`` for oldest first), ``limit`` <= 1000."""
        params = dict(query)
        states = [v for k, v in query if k == "states[]"] or ([params["state"]] if "state" in params else [])
        if not set(states) <= {"done", "cancel"}:
            raise _Reply(400, "validation_error", "states does not have a valid value")
        week = timedelta(days=7)
        start = _parse_time(params["start_time"]) if params.get("start_time") else None
        end = _parse_time(params["end_time"]) if params.get("end_time") else None
        if start is None:
            end = end or datetime.now(UTC)
            start = end - week
        end = end or start + week
        if end - start > week or end < start:
            raise _Reply(400, "validation_error", "the range between start_time and end_time must be 7 days or less")
        limit_text = params.get("limit", "100")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
            raise _Reply(400, "validation_error", "limit does not have a valid value")
        if params.get("order_by", "desc") not in ("asc", "desc"):
            raise _Reply(400, "validation_error", "order_by does not have a valid value")
        market = params.get("market")
        chosen = [
            o
            for o in self._orders.values()
            if o.state in (states or ("done", "cancel"))
            and (market is None or o.market == market)
            and start <= o.created_at <= end
        ]
        chosen.sort(key=lambda o: o.created_at, reverse=params.get("order_by", "desc") == "desc")
        return [self._order_json(o, with_trades=False) for o in chosen[: int(limit_text)]]

    def _trade_ticks(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """``GET /v1/trades/ticks`` (public, no JWT): the executions of ``market`` on this fake, newest first."""
        market = params.get("market", "")
        if market not in self._markets:
            raise _Reply(404, "not_found_market", "Code not found")
        count_text = params.get("count", "1")
        if not count_text.isdigit() or not 1 <= int(count_text) <= 500:
            raise _Reply(400, "validation_error", "count does not have a valid value")
        ticks: list[dict[str, Any]] = []
        for order in self._orders.values():
            if order.market != market:
                continue
            for trade in order.trades:
                moment = datetime.fromisoformat(trade["created_at"]).astimezone(UTC)
                millis = int(moment.timestamp() * 1000)
                price = float(Decimal(trade["price"]))
                ticks.append(
                    {
                        "market": market,
                        "trade_date_utc": moment.strftime("%Y-%m-%d"),
                        "trade_time_utc": moment.strftime("%H:%M:%S"),
                        "timestamp": millis,
                        "trade_price": price,
                        "trade_volume": float(Decimal(trade["volume"])),
                        "prev_closing_price": price,
                        "change_price": 0.0,
                        "ask_bid": "BID" if trade["side"] == "bid" else "ASK",
                        "sequential_id": millis * 1000 + len(ticks) % 1000,
                    }
                )
        ticks.sort(key=lambda t: (t["timestamp"], t["sequential_id"]), reverse=True)
        if params.get("cursor"):
            ticks = [t for t in ticks if t["sequential_id"] < int(params["cursor"])]
        return ticks[: int(count_text)]

    # --- quotation ---------------------------------------------------------------------------------

    def _market_list(self, *, details: bool) -> list[dict[str, Any]]:
        """``/v1/market/all``; with ``is_details=true`` each row carries ``market_event`` (warning, caution)."""
        rows: list[dict[str, Any]] = []
        for market, names in sorted(self._markets.items()):
            row: dict[str, Any] = {"market": market, **names}
            if details:
                warning, raised = self._market_events.get(market, (False, None))
                caution = {flag: flag == raised for flag in CAUTION_FLAGS}
                row["market_event"] = {"warning": warning, "caution": caution}
            rows.append(row)
        return rows

    def _ensure_market(self, market: str) -> None:
        if market not in self._markets:
            self.add_market(market)

    def _markets_param(self, params: dict[str, str]) -> list[str]:
        markets = [m for m in params.get("markets", "").split(",") if m]
        if not markets or any(m not in self._markets for m in markets):
            raise _Reply(404, "not_found_market", "Code not found")
        return markets

    def _candles_reply(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        if path.startswith("minutes/"):
            unit = path.split("/", 1)[1]
            if not unit.isdigit() or int(unit) not in _MINUTE_UNITS:
                raise _Reply(400, "validation_error", "unit does not have a valid value")
        elif path not in ("days", "weeks", "months"):
            raise _Reply(404, "not_found", f"no candles {path}")
        market = params.get("market", "")
        if market not in self._markets:
            raise _Reply(400, "validation_error", "market does not have a valid value")
        count_text = params.get("count", "1")
        if not count_text.isdigit() or not 1 <= int(count_text) <= 200:
            raise _Reply(400, "validation_error", "count does not have a valid value")
        rows = self._candles.get((market, path), [])
        if params.get("to"):
            to = _parse_to(params["to"])
            rows = [row for row in rows if row[0] < to]
        chosen = rows[-int(count_text) :]
        return [self._candle_json(market, path, ts, values) for ts, values in reversed(chosen)]

    def _candle_json(self, market: str, path: str, ts: datetime, v: dict[str, float]) -> dict[str, Any]:
        last_tick = ts + _candle_span(path) - timedelta(milliseconds=1)
        row: dict[str, Any] = {
            "market": market,
            "candle_date_time_utc": ts.strftime("%Y-%m-%dT%H:%M:%S"),
            "candle_date_time_kst": ts.astimezone(KST).strftime("%Y-%m-%dT%H:%M:%S"),
            "opening_price": v["open"],
            "high_price": v["high"],
            "low_price": v["low"],
            "trade_price": v["close"],
            "timestamp": int(min(last_tick, datetime.now(UTC)).timestamp() * 1000),
            "candle_acc_trade_price": v["value"],
            "candle_acc_trade_volume": v["volume"],
        }
        if path.startswith("minutes/"):
            row["unit"] = int(path.split("/")[1])
        elif path == "days":
            row.update(prev_closing_price=v["open"], change_price=v["close"] - v["open"], change_rate=0.0)
        else:
            row["first_day_of_period"] = ts.strftime("%Y-%m-%d")
        return row

    def _last_price(self, market: str) -> Decimal | None:
        if market in self._tickers:
            return self._tickers[market]
        finest = sorted(
            ((_candle_span(path), rows) for (m, path), rows in self._candles.items() if m == market and rows),
            key=lambda item: item[0],
        )
        if finest:
            return Decimal(str(finest[0][1][-1][1]["close"]))
        book = self._books.get(market)
        if book and book["asks"] and book["bids"]:
            return (book["asks"][0][0] + book["bids"][0][0]) / 2
        return None

    def _ticker_json(self, market: str) -> dict[str, Any]:
        price = self._last_price(market)
        if price is None:
            raise _Reply(404, "not_found_market", "Code not found")
        now = datetime.now(UTC)
        p = float(price)
        return {
            "market": market,
            "trade_date": now.strftime("%Y%m%d"),
            "trade_time": now.strftime("%H%M%S"),
            "trade_date_kst": now.astimezone(KST).strftime("%Y%m%d"),
            "trade_time_kst": now.astimezone(KST).strftime("%H%M%S"),
            "trade_timestamp": int(now.timestamp() * 1000),
            "opening_price": p,
            "high_price": p,
            "low_price": p,
            "trade_price": p,
            "prev_closing_price": p,
            "change": "EVEN",
            "change_price": 0.0,
            "change_rate": 0.0,
            "signed_change_price": 0.0,
            "signed_change_rate": 0.0,
            "trade_volume": 0.0,
            "acc_trade_price": 0.0,
            "acc_trade_price_24h": 0.0,
            "acc_trade_volume": 0.0,
            "acc_trade_volume_24h": 0.0,
            "highest_52_week_price": p,
            "highest_52_week_date": now.strftime("%Y-%m-%d"),
            "lowest_52_week_price": p,
            "lowest_52_week_date": now.strftime("%Y-%m-%d"),
            "timestamp": int(now.timestamp() * 1000),
        }

    def _orderbook_json(self, market: str) -> dict[str, Any]:
        full = self._books.get(market, {"asks": [], "bids": []})
        book = {side: full[side][:BOOK_LEVELS] for side in ("asks", "bids")}
        depth = max(len(book["asks"]), len(book["bids"]))
        units = []
        for i in range(depth):
            ask = book["asks"][i] if i < len(book["asks"]) else [ZERO, ZERO]
            bid = book["bids"][i] if i < len(book["bids"]) else [ZERO, ZERO]
            units.append(
                {
                    "ask_price": float(ask[0]),
                    "bid_price": float(bid[0]),
                    "ask_size": float(ask[1]),
                    "bid_size": float(bid[1]),
                }
            )
        return {
            "market": market,
            "timestamp": int(time.time() * 1000),
            "total_ask_size": float(sum((a[1] for a in book["asks"]), ZERO)),
            "total_bid_size": float(sum((b[1] for b in book["bids"]), ZERO)),
            "orderbook_units": units,
            "level": 0.0,
        }

    def _instrument_json(self, market: str) -> dict[str, Any]:
        price = self._last_price(market) or Decimal("1")
        return {
            "market": market,
            "quote_currency": "KRW",
            "tick_size": _s(self.tick_size(market, price)),
            "supported_levels": ["0"],
        }

    # --- accounts ----------------------------------------------------------------------------------

    def _account(self, currency: str) -> _Account:
        return self._accounts.setdefault(currency, _Account())

    def _account_json(self, currency: str, account: _Account) -> dict[str, Any]:
        return {
            "currency": currency,
            "balance": _s(account.balance),
            "locked": _s(account.locked),
            "avg_buy_price": _s(account.avg_buy_price),
            "avg_buy_price_modified": False,
            "unit_currency": "KRW",
        }

    def _chance_json(self, market: str) -> dict[str, Any]:
        if market not in self._markets:
            raise _Reply(400, "validation_error", "market does not have a valid value")
        base = market.split("-", 1)[1]
        fee = _s(self.fee_rate)
        return {
            "bid_fee": fee,
            "ask_fee": fee,
            "maker_bid_fee": fee,
            "maker_ask_fee": fee,
            "market": {
                "id": market,
                "name": f"{base}/KRW",
                "order_sides": ["ask", "bid"],
                "bid_types": ["limit", "price"],
                "ask_types": ["limit", "market"],
                "bid": {"currency": "KRW", "min_total": _s(self.min_total)},
                "ask": {"currency": base, "min_total": _s(self.min_total)},
                "max_total": "1000000000",
                "state": "active",
            },
            "bid_account": self._account_json("KRW", self._accounts.get("KRW", _Account())),
            "ask_account": self._account_json(base, self._accounts.get(base, _Account())),
        }

    # --- orders ------------------------------------------------------------------------------------

    def _create_order(self, body: dict[str, Any], fault: Fault | None) -> dict[str, Any]:
        side, ord_type, market = body.get("side"), body.get("ord_type"), body.get("market")
        identifier = body.get("identifier")
        if identifier is not None:
            if identifier in self._used_identifiers:
                raise _Reply(400, "duplicate_identifier", "identifier는 중복될 수 없습니다.")
            self._used_identifiers.add(str(identifier))
        if side not in ("bid", "ask"):
            raise _Reply(400, "validation_error", "side does not have a valid value")
        if market not in self._markets:
            raise _Reply(400, "validation_error", "market does not have a valid value")
        smp_type = body.get("smp_type")
        if smp_type is not None and smp_type not in SMP_TYPES:
            raise _Reply(400, "validation_error", "smp_type does not have a valid value")
        price, volume = self._order_params(side, ord_type, body)
        self._check_tick(market, side, ord_type, price)
        self._check_min_total(market, side, ord_type, price, volume)
        if fault is not None and fault.kind == "insufficient_funds":
            raise _Reply(400, f"insufficient_funds_{side}", "주문가능한 금액이 부족합니다.")
        order = _Order(
            uuid=str(uuid_lib.uuid4()),
            identifier=identifier,
            market=market,
            side=side,
            ord_type=ord_type,
            price=price,
            volume=volume,
            created_at=datetime.now(UTC),
            remaining_volume=volume or ZERO,
            smp_type=smp_type,
        )
        self._reserve(order)
        answer = self._order_json(order, with_trades=False)
        self._orders[order.uuid] = order
        if identifier is not None:
            self._by_identifier[identifier] = order.uuid
        self._notify(order)
        if fault is not None and fault.kind == "prevented":
            self._match_prevented(order, fault.share)
        elif self._self_match(order):
            pass  # the taker was stopped by self-match prevention
        elif ord_type == "limit":
            self._match_limit(order)
        else:
            self._match_market(order)
        return answer if self.post_answer == "wait" else self._order_json(order, with_trades=False)

    def _order_params(self, side: str, ord_type: Any, body: dict[str, Any]) -> tuple[Decimal | None, Decimal | None]:
        error = f"create_{side}_error"
        has_price, has_volume = body.get("price") is not None, body.get("volume") is not None
        if ord_type == "limit" and not (has_price and has_volume):
            raise _Reply(400, error, "지정가 주문에는 price와 volume이 필요합니다.")
        if ord_type == "price" and (side != "bid" or not has_price or has_volume):
            raise _Reply(400, error, "시장가 매수는 price만 입력해야 합니다.")
        if ord_type == "market" and (side != "ask" or not has_volume or has_price):
            raise _Reply(400, error, "시장가 매도는 volume만 입력해야 합니다.")
        if ord_type not in ("limit", "price", "market"):
            raise _Reply(400, "validation_error", "ord_type does not have a valid value")
        price = _dec(body["price"], "price") if has_price else None
        volume = _dec(body["volume"], "volume") if has_volume else None
        if (price is not None and price <= 0) or (volume is not None and volume <= 0):
            raise _Reply(400, error, "price and volume must be positive")
        if volume is not None and volume != volume.quantize(EIGHT_DECIMALS, rounding=ROUND_DOWN):
            raise _Reply(400, "invalid_volume", "volume has more than 8 decimals")
        return price, volume

    def _check_tick(self, market: str, side: str, ord_type: str, price: Decimal | None) -> None:
        if ord_type != "limit" or price is None:
            return
        tick = self.tick_size(market, price)
        if (price / tick) != (price / tick).to_integral_value():
            raise _Reply(400, f"invalid_price_{side}", "주문가격 단위를 잘못 입력하셨습니다. 확인 후 시도해주세요.")

    def _check_min_total(
        self, market: str, side: str, ord_type: str, price: Decimal | None, volume: Decimal | None
    ) -> None:
        if ord_type == "limit":
            total = (price or ZERO) * (volume or ZERO)
        elif ord_type == "price":
            total = price or ZERO
        else:
            bids = self._books.get(market, {}).get("bids") or []
            reference = bids[0][0] if bids else (self._last_price(market) or ZERO)
            total = (volume or ZERO) * reference
        if total < self.min_total:
            raise _Reply(400, f"under_min_total_{side}", "최소주문금액 이상으로 주문해주세요")

    def _reserve(self, order: _Order) -> None:
        if order.side == "bid":
            gross = (order.price or ZERO) * (order.volume or ZERO) if order.ord_type == "limit" else order.price or ZERO
            fee = gross * self.fee_rate
            account = self._account("KRW")
            if account.balance < gross + fee:
                raise _Reply(400, "insufficient_funds_bid", "주문가능한 금액(KRW)이 부족합니다.")
            if order.ord_type == "price":
                self._check_depth(order, "asks", gross)
            account.balance -= gross + fee
            account.locked += gross + fee
            order.reserved_fee, order.locked = fee, gross + fee
        else:
            account = self._account(order.market.split("-", 1)[1])
            if account.balance < (order.volume or ZERO):
                raise _Reply(400, "insufficient_funds_ask", "주문가능한 수량이 부족합니다.")
            if order.ord_type == "market":
                self._check_depth(order, "bids", order.volume or ZERO)
            account.balance -= order.volume or ZERO
            account.locked += order.volume or ZERO
            order.locked = order.volume or ZERO

    def _check_depth(self, order: _Order, side: str, amount: Decimal) -> None:
        """The 30-level rule: a market order may take at most what the first 30 levels hold."""
        levels = (self._books.get(order.market, {}).get(side) or [])[:BOOK_LEVELS]
        depth = sum((p * s for p, s in levels), ZERO) if side == "asks" else sum((s for _, s in levels), ZERO)
        if amount > depth:
            raise _Reply(
                400,
                f"create_{order.side}_error",
                f"시장가 주문이 {BOOK_LEVELS}호가 잔량을 초과합니다 "
                f"(market order exceeds the first {BOOK_LEVELS} levels).",
            )

    def _match_market(self, order: _Order) -> None:
        if order.side == "bid":
            budget = order.price or ZERO
            for level in self._books[order.market]["asks"]:
                spendable = budget - order.executed_funds
                size = min(level[1], (spendable / level[0]).quantize(EIGHT_DECIMALS, rounding=ROUND_DOWN))
                if size <= 0:
                    break
                self._fill(order, level, size)
            self._release(order)
            order.state = "done" if order.executed_funds == budget else "cancel"
            self._notify(order)
        else:
            for level in self._books[order.market]["bids"]:
                size = min(level[1], order.remaining_volume)
                if size <= 0:
                    break
                self._fill(order, level, size)
            order.state = "done"
            self._notify(order)
        self._drop_empty_levels(order.market)

    def _self_match(self, order: _Order) -> bool:
        """Self-match prevention by the taker's ``smp_type`` (``cancel_maker`` when absent, Upbit's default) against
        our own resting limit orders the taker would meet; True when the taker itself was stopped.

        ``cancel_maker``: our resting orders are cancelled (``prevented_volume``), the taker trades on;
        ``cancel_taker``: the taker ends ``prevented`` with nothing executed; ``reduce``: both lose the overlap
        (the taker executes the rest against the book, then ends ``prevented``); ``none``: nothing is prevented
        (the fake's scripted book does not hold our resting orders, so no self-trade is simulated).
        """
        smp = order.smp_type or "cancel_maker"
        makers = [o for o in self._orders.values() if self._meets(order, o)]
        if smp == "none" or not makers:
            return False
        if smp == "cancel_taker":
            self._match_prevented(order, ZERO)
            return True
        if smp == "cancel_maker":
            for maker in makers:
                self._prevent_maker(maker, maker.remaining_volume)
            return False
        # reduce: take the overlap off both sides
        wanted = order.volume if order.ord_type != "price" else None
        overlap_volume = sum((m.remaining_volume for m in makers), ZERO)
        if wanted is not None:
            overlap = min(overlap_volume, wanted)
            share = (wanted - overlap) / wanted
        else:
            overlap_krw = min(sum(((m.price or ZERO) * m.remaining_volume for m in makers), ZERO), order.price or ZERO)
            share = ((order.price or ZERO) - overlap_krw) / (order.price or Decimal(1))
            overlap = overlap_volume
        left = overlap
        for maker in makers:
            cut = min(left, maker.remaining_volume)
            self._prevent_maker(maker, cut)
            left -= cut
        self._match_prevented(order, share)
        return True

    def _meets(self, taker: _Order, maker: _Order) -> bool:
        """Would ``taker`` trade with our own resting ``maker``? (A market order reaches the 30 visible levels.)"""
        if maker is taker or maker.market != taker.market or maker.side == taker.side:
            return False
        if maker.state != "wait" or maker.cancel_pending or maker.ord_type != "limit" or maker.price is None:
            return False
        if taker.ord_type == "limit":
            limit = taker.price or ZERO
            return maker.price <= limit if taker.side == "bid" else maker.price >= limit
        levels = (self._books.get(taker.market, {}).get("asks" if taker.side == "bid" else "bids") or [])[:BOOK_LEVELS]
        if not levels:
            return True
        return maker.price <= levels[-1][0] if taker.side == "bid" else maker.price >= levels[-1][0]

    def _prevent_maker(self, maker: _Order, volume: Decimal) -> None:
        """Take ``volume`` off our resting order (self-match prevention); it ends ``cancel`` when nothing is left."""
        if volume <= 0:
            return
        per_unit = maker.locked / maker.remaining_volume if maker.remaining_volume > 0 else ZERO
        freed = per_unit * volume
        account = self._account("KRW") if maker.side == "bid" else self._account(maker.market.split("-", 1)[1])
        account.locked -= freed
        account.balance += freed
        maker.locked -= freed
        maker.remaining_volume -= volume
        maker.prevented_volume += volume
        maker.prevented_locked += freed
        if maker.remaining_volume <= 0:
            maker.state = "cancel"
            self._release(maker)
        self._notify(maker)

    def _match_prevented(self, order: _Order, share: Decimal) -> None:
        """Execute ``share`` of the order against the book, then self-match prevention cancels the rest."""
        book = self._books[order.market]
        if order.side == "bid" and order.ord_type == "price":
            budget = (order.price or ZERO) * share
            for level in book["asks"]:
                spendable = budget - order.executed_funds
                size = min(level[1], (spendable / level[0]).quantize(EIGHT_DECIMALS, rounding=ROUND_DOWN))
                if size <= 0:
                    break
                self._fill(order, level, size)
            order.prevented_locked = order.locked
        else:
            target = ((order.volume or ZERO) * share).quantize(EIGHT_DECIMALS, rounding=ROUND_DOWN)
            levels = book["asks"] if order.side == "bid" else book["bids"]
            for level in levels:
                if order.ord_type == "limit":
                    crosses = level[0] <= order.price if order.side == "bid" else level[0] >= order.price  # type: ignore[operator]
                    if not crosses:
                        break
                size = min(level[1], target - order.executed_volume)
                if size <= 0:
                    break
                self._fill(order, level, size)
            order.prevented_volume = order.remaining_volume
            order.prevented_locked = order.locked
            order.remaining_volume = ZERO
        self._release(order)
        order.state = "prevented"
        self._notify(order)
        self._drop_empty_levels(order.market)

    def _match_limit(self, order: _Order, *, resting: bool = False) -> None:
        """Take the crossing levels: at their prices when placed, at the order's own price when resting."""
        book = self._books.get(order.market)
        if not book:
            return
        levels = book["asks"] if order.side == "bid" else book["bids"]
        for level in levels:
            crosses = level[0] <= order.price if order.side == "bid" else level[0] >= order.price  # type: ignore[operator]
            if not crosses or order.remaining_volume <= 0:
                break
            self._fill(order, level, min(level[1], order.remaining_volume), price=order.price if resting else None)
        if order.remaining_volume <= 0:
            order.state = "done"
            self._release(order)
            if not resting:
                self._notify(order)
        self._drop_empty_levels(order.market)

    def _fill(self, order: _Order, level: list[Decimal], size: Decimal, price: Decimal | None = None) -> None:
        price = level[0] if price is None else price
        funds = price * size
        fee = funds * self.fee_rate
        level[1] -= size
        order.executed_volume += size
        order.executed_funds += funds
        order.paid_fee += fee
        if order.ord_type != "price":
            order.remaining_volume -= size
        base = self._account(order.market.split("-", 1)[1])
        krw = self._account("KRW")
        if order.side == "bid":
            cost = funds + fee
            krw.locked -= cost
            order.locked -= cost
            held = base.balance + base.locked
            base.avg_buy_price = ((base.avg_buy_price * held) + funds) / (held + size)
            base.balance += size
            if order.ord_type == "limit":
                reserved_for_part = (order.price or ZERO) * size * (1 + self.fee_rate)
                refund = reserved_for_part - cost
                krw.locked -= refund
                krw.balance += refund
                order.locked -= refund
        else:
            base.locked -= size
            order.locked -= size
            krw.balance += funds - fee
        order.trades.append(
            {
                "market": order.market,
                "uuid": str(uuid_lib.uuid4()),
                "price": _s(price),
                "volume": _s(size),
                "funds": _s(funds),
                "trend": "up" if order.side == "bid" else "down",
                "created_at": _kst(datetime.now(UTC)),
                "side": order.side,
            }
        )
        self._notify(order, trade=order.trades[-1])

    def _release(self, order: _Order) -> None:
        """Give back what an order still holds (unspent KRW of a market buy, a cancelled remainder)."""
        if order.locked <= 0:
            return
        account = self._account("KRW") if order.side == "bid" else self._account(order.market.split("-", 1)[1])
        account.locked -= order.locked
        account.balance += order.locked
        order.locked = ZERO

    def _drop_empty_levels(self, market: str) -> None:
        book = self._books[market]
        book["asks"] = [level for level in book["asks"] if level[1] > 0]
        book["bids"] = [level for level in book["bids"] if level[1] > 0]

    def _find_order(self, uuid: str | None, identifier: str | None) -> _Order | None:
        if uuid:
            return self._orders.get(uuid)
        if identifier and identifier in self._by_identifier:
            return self._orders.get(self._by_identifier[identifier])
        return None

    def _require_order(self, params: dict[str, str]) -> _Order:
        if not params.get("uuid") and not params.get("identifier"):
            raise _Reply(400, "validation_error", "uuid or identifier is required")
        order = self._find_order(params.get("uuid"), params.get("identifier"))
        if order is None:
            raise _Reply(404, "order_not_found", "주문을 찾지 못했습니다.")
        return order

    def _cancel(self, order: _Order) -> dict[str, Any]:
        if order.state != "wait" or order.cancel_pending:
            raise _Reply(400, "validation_error", "이미 체결되었거나 취소된 주문입니다.")
        order.cancel_pending = True
        return self._order_json(order, with_trades=False)

    def _settle_pending_cancels(self) -> None:
        for order in self._orders.values():
            if order.cancel_pending:
                order.cancel_pending = False
                order.state = "cancel"
                self._release(order)
                self._notify(order)

    def _list_orders(self, query: list[tuple[str, str]], *, open_only: bool) -> list[dict[str, Any]]:
        params = dict(query)
        states = [v for k, v in query if k == "states[]"] or ([params["state"]] if "state" in params else ["wait"])
        if open_only and not set(states) <= {"wait", "watch"}:
            raise _Reply(400, "validation_error", "states does not have a valid value")
        market = params.get("market")
        chosen = [o for o in self._orders.values() if o.state in states and (market is None or o.market == market)]
        chosen.sort(key=lambda o: o.created_at, reverse=True)
        limit = int(params.get("limit", "100"))
        page = int(params.get("page", "1"))
        return [self._order_json(o, with_trades=False) for o in chosen[(page - 1) * limit : page * limit]]

    def _order_json(self, order: _Order, *, with_trades: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "uuid": order.uuid,
            "side": order.side,
            "ord_type": order.ord_type,
            "price": _s(order.price),
            "state": order.state,
            "market": order.market,
            "created_at": _kst(order.created_at),
            "volume": _s(order.volume),
            "remaining_volume": _s(order.remaining_volume) if order.ord_type != "price" else None,
            "reserved_fee": _s(order.reserved_fee),
            "remaining_fee": _s(max(ZERO, order.reserved_fee - order.paid_fee)),
            "paid_fee": _s(order.paid_fee),
            "locked": _s(order.locked),
            "executed_volume": _s(order.executed_volume),
            "executed_funds": _s(order.executed_funds),
            "trades_count": len(order.trades),
            "time_in_force": None,
            "smp_type": order.smp_type,
            "prevented_volume": _s(order.prevented_volume),
            "prevented_locked": _s(order.prevented_locked),
            "identifier": order.identifier,
        }
        if with_trades:
            data["trades"] = list(order.trades)
        return data

    def _record(self, request: HttpRequest, status: int) -> None:
        claims, alg = None, None
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token:
            try:
                claims = jwt.decode(token, options={"verify_signature": False})
                alg = jwt.get_unverified_header(token).get("alg")
            except jwt.PyJWTError:
                claims = None
        body = None
        if request.body:
            try:
                body = json.loads(request.body)
            except ValueError:
                body = request.body.decode("utf-8", "replace")
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=list(request.query),
                json=body,
                headers=dict(request.headers),
                jwt_claims=claims,
                jwt_alg=alg,
                status=status,
            )
        )


def _candle_values(row: pd.Series) -> dict[str, float]:
    values = {column: float(row[column]) for column in ("open", "high", "low", "close", "volume")}
    value = float(row["value"]) if "value" in row.index else math.nan
    values["value"] = 0.0 if math.isnan(value) else value
    return values


def _body_json(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except ValueError as exc:
        raise _Reply(400, "validation_error", "body must be JSON") from exc
    if not isinstance(body, dict):
        raise _Reply(400, "validation_error", "body must be a JSON object")
    return body


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def _json_headers() -> dict[str, str]:
    return {"Content-Type": "application/json; charset=utf-8"}


def _error_response(status: int, name: str, message: str) -> HttpResponse:
    return HttpResponse(status, _json_bytes({"error": {"name": name, "message": message}}), _json_headers())


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake Upbit server (seeded with demo markets).")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--access-key", default=DEFAULT_ACCESS_KEY)
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    parser.add_argument("--krw", default="10000000", help="starting KRW balance")
    parser.add_argument("--post-answer", choices=("wait", "final"), default="wait")
    args = parser.parse_args()
    fake = FakeUpbit(args.access_key, args.secret_key, port=args.port, post_answer=args.post_answer)
    fake.seed_demo(Decimal(args.krw))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with fake:
        print(fake.base_url, flush=True)
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    main()
