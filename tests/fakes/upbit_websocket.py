"""A fake Upbit WebSocket on loopback: the public and the private stream on one server, Upbit's message shapes.

Paths: ``/websocket/v1`` (public: ``ticker``, ``trade``) and ``/websocket/v1/private`` (``myOrder``,
``announcement``, ``myAsset`` accepted; the handshake's ``Authorization: Bearer <JWT>`` is checked with the same
keys as FakeUpbit: HS256/HS512, the access key, a fresh nonce; a bad or missing token gets Upbit's
``INVALID_AUTH`` error and a close). Field names follow Upbit's official SDK types (upbit-sdk 1.1.0:
``connect_public_server_event.Ticker``/``Trade``, ``connect_private_server_event.MyOrder``, ``announcement``);
numbers are JSON numbers, as Upbit sends them. Frames are binary (UTF-8 JSON) like Upbit's, or text.

Subscriptions: ``[{"ticket": ...}, {"type": "ticker", "codes": [...]}, ..., {"format": "DEFAULT"}]``; a new
subscription on a connection replaces the previous one. ``ticker``/``trade`` answer at once with a ``SNAPSHOT``
of each code whose price is known (unless ``is_only_realtime``). ``"PING"`` answers ``{"status":"UP"}``;
``[{"ticket":...},{"method":"LIST_SUBSCRIPTIONS"}]`` lists the subscription. Errors use Upbit's names
(``WRONG_FORMAT``, ``NO_TICKET``, ``NO_TYPE``, ``NO_CODES``, ``INVALID_PARAM``, ``INVALID_AUTH``).
Only the ``DEFAULT`` and ``JSON_LIST`` formats are served (``SIMPLE`` gets ``INVALID_PARAM``).

Limits as Upbit's: more than ``connect_limit`` (5) handshakes in one second are refused with HTTP 429 on the
upgrade; more than 5 messages in a second or 100 in a minute on one connection get the error
``TOO_MANY_REQUESTS`` (a name we chose: Upbit's is undocumented) and a close (1008).

Scripting: ``push_ticker``, ``push_trade``, ``play`` (a price path), ``disconnect_all``, ``go_silent``,
``push_my_order``, ``push_announcement``; with ``FakeUpbitWebSocket(upbit=fake_upbit)`` every order change in
FakeUpbit is pushed as a ``myOrder`` event, and pushed prices also become FakeUpbit's REST ticker. Records:
``subscriptions``, ``connects``/``connect_attempts`` (monotonic times), ``refused_connects``, ``received``, ``sent``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
import uuid as uuid_lib
from collections import deque
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import jwt
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes.loopback_http import BackgroundLoop
from tests.fakes.upbit_server import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, FakeUpbit

PUBLIC_PATH = "/websocket/v1"
PRIVATE_PATH = "/websocket/v1/private"
PUBLIC_TYPES = frozenset({"ticker", "trade", "orderbook"})
PRIVATE_TYPES = frozenset({"myOrder", "myAsset", "announcement"})
FORMATS = frozenset({"DEFAULT", "JSON_LIST"})
KST = timezone(timedelta(hours=9))


@dataclass(frozen=True, slots=True)
class Subscription:
    """One subscription request as the fake understood it. ``types``: type -> codes (None: every market)."""

    client: int
    path: str
    ticket: str
    types: dict[str, tuple[str, ...] | None]
    format: str
    options: dict[str, dict[str, Any]]
    at: float

    def wants(self, kind: str, code: str | None = None) -> bool:
        if kind not in self.types:
            return False
        codes = self.types[kind]
        return code is None or not codes or code in codes

    @property
    def codes(self) -> tuple[str, ...]:
        """Every code of every type (sorted, unique)."""
        return tuple(sorted({code for codes in self.types.values() for code in codes or ()}))


@dataclass(slots=True)
class _Client:
    id: int
    ws: ServerConnection
    path: str
    subscription: Subscription | None = None
    messages: deque[float] = field(default_factory=deque)

    @property
    def private(self) -> bool:
        return self.path == PRIVATE_PATH


class FakeUpbitWebSocket(BackgroundLoop):
    """The fake server. Start it (``start()``, ``with``, ``async with``); point a client at ``url``."""

    thread_name = "fake Upbit WebSocket"

    def __init__(
        self,
        upbit: FakeUpbit | None = None,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        port: int = 0,
        connect_limit: int = 5,
        message_limits: Sequence[tuple[int, float]] = ((5, 1.0), (100, 60.0)),
        enforce_limits: bool = True,
        binary: bool = True,
        sync_rest_ticker: bool = True,
    ) -> None:
        super().__init__()
        self.upbit = upbit
        self.access_key = access_key or (upbit.access_key if upbit else DEFAULT_ACCESS_KEY)
        self.secret_key = secret_key or (upbit.secret_key if upbit else DEFAULT_SECRET_KEY)
        self.connect_limit = connect_limit
        self.message_limits = tuple(message_limits)
        self.enforce_limits = enforce_limits
        self.binary = binary
        self.sync_rest_ticker = sync_rest_ticker
        self.subscriptions: list[Subscription] = []
        self.connect_attempts: list[float] = []
        self.connects: list[float] = []
        self.refused_connects = 0
        self.auth_failures = 0
        self.auth_claims: list[dict[str, Any]] = []
        self.received: list[tuple[int, str]] = []
        self.sent: list[tuple[int, dict[str, Any]]] = []
        self.dropped = 0  # messages not sent while silent
        self._requested_port = port
        self._port: int | None = None
        self._clients: dict[int, _Client] = {}
        self._next_client = 0
        self._prices: dict[str, Decimal] = {}
        self._sequence = 0
        self._nonces: set[str] = set()
        self._silent_until = 0.0
        self._lock = threading.RLock()
        self._server: Server | None = None
        self._order_events: asyncio.Queue[dict[str, Any]] | None = None
        self._order_worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- lifecycle ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The public stream: ``ws://127.0.0.1:PORT/websocket/v1`` (the private one is that plus ``/private``)."""
        return f"{self.base_url}{PUBLIC_PATH}"

    @property
    def private_url(self) -> str:
        return f"{self.base_url}{PRIVATE_PATH}"

    @property
    def base_url(self) -> str:
        """``ws://127.0.0.1:PORT`` (what the official SDK takes as ``websocket_base_url``)."""
        if self._port is None:
            raise RuntimeError("the fake WebSocket is not started; call start() first")
        return f"ws://127.0.0.1:{self._port}"

    def start(self) -> FakeUpbitWebSocket:
        if self.running:
            return self
        self._start_loop()
        if self.upbit is not None:
            self.upbit.add_order_listener(self._order_listener)
        return self

    def stop(self) -> None:
        if self.upbit is not None:
            self.upbit.remove_order_listener(self._order_listener)
        self._stop_loop()

    def __enter__(self) -> FakeUpbitWebSocket:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeUpbitWebSocket:
        return self.start()

    async def __aexit__(self, *_exc: object) -> None:
        self.stop()

    async def _open(self) -> None:
        self._server = await serve(
            self._serve,
            "127.0.0.1",
            self._requested_port,
            process_request=self._process_request,
            ping_interval=None,
            compression=None,
        )
        self._port = next(iter(self._server.sockets)).getsockname()[1]
        self._order_events = asyncio.Queue()
        self._order_worker = asyncio.get_running_loop().create_task(self._deliver_order_events())

    async def _close(self) -> None:
        if self._order_worker is not None:
            self._order_worker.cancel()
        for client in list(self._clients.values()):
            if client.ws.transport is not None:
                client.ws.transport.abort()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)

    def _call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the fake WebSocket is not started; call start() first")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    # --- scripting ----------------------------------------------------------------------------------

    @property
    def clients(self) -> int:
        """Open connections right now."""
        with self._lock:
            return len(self._clients)

    def current_subscriptions(self) -> list[Subscription]:
        with self._lock:
            return [c.subscription for c in self._clients.values() if c.subscription is not None]

    def push_ticker(self, symbol: str, price: Any, at: datetime | None = None, **fields: Any) -> int:
        """A ``ticker`` message to the clients subscribed to ``symbol``; the number of clients reached."""
        return int(self._call(self._push_price("ticker", symbol, Decimal(str(price)), at, fields)))

    def push_trade(
        self, symbol: str, price: Any, volume: Any = "0.01", at: datetime | None = None, **fields: Any
    ) -> int:
        """A ``trade`` message to the clients subscribed to ``symbol`` (trade type)."""
        extra = {"trade_volume": float(Decimal(str(volume))), **fields}
        return int(self._call(self._push_price("trade", symbol, Decimal(str(price)), at, extra)))

    def play(
        self, path: Iterable[tuple[str, Any]], interval: float = 0.0, *, kind: str = "ticker"
    ) -> concurrent.futures.Future[int]:
        """Push a scripted price path, ``interval`` seconds apart, in the background; the future's result is
        the number of messages sent (``await asyncio.wrap_future(...)`` or ``.result()``)."""
        if kind not in ("ticker", "trade"):
            raise ValueError("kind must be ticker or trade")
        steps = [(symbol, Decimal(str(price))) for symbol, price in path]
        if self._loop is None:
            raise RuntimeError("the fake WebSocket is not started; call start() first")
        return asyncio.run_coroutine_threadsafe(self._play(steps, interval, kind), self._loop)

    def disconnect_all(self, *, abrupt: bool = True) -> int:
        """Drop every connection: ``abrupt`` aborts the TCP connection (a network failure, close code 1006),
        else a clean close (1001). The number of connections dropped."""
        return int(self._call(self._disconnect_all(abrupt)))

    def go_silent(self, seconds: float) -> None:
        """Stay connected but send nothing for ``seconds`` (pushes in that time are dropped): a stale stream."""
        with self._lock:
            self._silent_until = time.monotonic() + seconds

    @property
    def silent(self) -> bool:
        return time.monotonic() < self._silent_until

    def push_my_order(self, order: dict[str, Any], state: str | None = None) -> int:
        """A ``myOrder`` event: ``order`` is an order as FakeUpbit answers it (REST JSON, ``trade`` key for an
        execution) or an already-built ``myOrder`` message; ``state`` overrides the state."""
        message = order if order.get("type") == "myOrder" else my_order_message(order, self._fee_rate())
        if state is not None:
            message = {**message, "state": state}
        return int(self._call(self._deliver_private("myOrder", message, message.get("code"))))

    def push_announcement(
        self,
        title: str,
        category: str = "trade",
        *,
        uuid: str | None = None,
        url: str | None = None,
        event_type: str = "CREATED",
        at: datetime | None = None,
        body: str | None = None,
    ) -> int:
        """An ``announcement`` event (Upbit's notice: delisting, deposit halt, maintenance...)."""
        moment = (at or datetime.now(UTC)).astimezone(KST)
        notice_id = uuid or str(uuid_lib.uuid4())
        message: dict[str, Any] = {
            "type": "announcement",
            "uuid": notice_id,
            "category": category,
            "event_type": event_type,
            "title": title,
            "url": url or f"https://upbit.com/service_center/notice?id={notice_id}",
            "first_listed_at": moment.isoformat(timespec="seconds"),
            "listed_at": moment.isoformat(timespec="seconds"),
            "timestamp": int(time.time() * 1000),
            "stream_type": "REALTIME",
        }
        return int(self._call(self._deliver_private("announcement", message, None, body=body)))

    def push_raw(self, data: str | bytes, *, private: bool = False) -> int:
        """Send ``data`` as it is to every subscribed client of one side (malformed-message tests)."""
        return int(self._call(self._push_raw(data, private)))

    async def _push_raw(self, data: str | bytes, private: bool) -> int:
        with self._lock:
            clients = [c for c in self._clients.values() if c.private == private and c.subscription is not None]
        for client in clients:
            with contextlib.suppress(ConnectionClosed):
                await client.ws.send(data)
        return len(clients)

    # --- handshake ----------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        now = time.monotonic()
        with self._lock:
            self.connect_attempts.append(now)
            path = urlsplit(request.path).path.rstrip("/")
            if path not in (PUBLIC_PATH, PRIVATE_PATH):
                return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
            recent = sum(1 for t in self.connect_attempts if now - t < 1.0)
            if self.enforce_limits and recent > self.connect_limit:
                self.refused_connects += 1
                return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "Too Many Requests\n")
            self.connects.append(now)
        return None

    def _check_jwt(self, header: str | None) -> str | None:
        """None when the token is good, else why not."""
        if not header or not header.startswith("Bearer "):
            return "Authorization header is missing"
        try:
            claims = jwt.decode(header.removeprefix("Bearer "), self.secret_key, algorithms=["HS256", "HS512"])
        except jwt.PyJWTError as exc:
            return f"Failed to verify Jwt token: {exc}"
        with self._lock:
            self.auth_claims.append(claims)
        if claims.get("access_key") != self.access_key:
            return "invalid access key"
        nonce = claims.get("nonce")
        with self._lock:
            if not nonce or nonce in self._nonces:
                return "nonce used"
            self._nonces.add(nonce)
        return None

    # --- connections --------------------------------------------------------------------------------

    async def _serve(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path = urlsplit(ws.request.path).path.rstrip("/")
        with self._lock:
            self._next_client += 1
            client = _Client(self._next_client, ws, path)
        if client.private:
            problem = self._check_jwt(ws.request.headers.get("Authorization"))
            if problem is not None:
                with self._lock:
                    self.auth_failures += 1
                await self._send_error(client, "INVALID_AUTH", "인증 정보가 올바르지 않습니다.")
                await ws.close(1008, "INVALID_AUTH")
                return
        with self._lock:
            self._clients[client.id] = client
        try:
            async for message in ws:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                with self._lock:
                    self.received.append((client.id, text))
                if not await self._within_limits(client):
                    return
                await self._on_message(client, text)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._clients.pop(client.id, None)

    async def _within_limits(self, client: _Client) -> bool:
        now = time.monotonic()
        client.messages.append(now)
        longest = max(window for _, window in self.message_limits)
        while client.messages and now - client.messages[0] > longest:
            client.messages.popleft()
        if not self.enforce_limits:
            return True
        for limit, window in self.message_limits:
            if sum(1 for t in client.messages if now - t < window) > limit:
                await self._send_error(
                    client, "TOO_MANY_REQUESTS", f"요청 수 제한을 초과했습니다 ({limit}/{window:g}s)."
                )
                await client.ws.close(1008, "TOO_MANY_REQUESTS")
                return False
        return True

    async def _on_message(self, client: _Client, text: str) -> None:
        if text.strip() == "PING":
            await self._send(client, {"status": "UP"}, force=True)
            return
        try:
            request = json.loads(text)
        except ValueError:
            await self._send_error(client, "WRONG_FORMAT", "요청 형식이 올바르지 않습니다.")
            return
        if not isinstance(request, list) or not all(isinstance(item, dict) for item in request):
            await self._send_error(client, "WRONG_FORMAT", "요청 형식이 올바르지 않습니다.")
            return
        ticket = next((item["ticket"] for item in request if "ticket" in item), None)
        if not ticket:
            await self._send_error(client, "NO_TICKET", "티켓 필드가 없습니다.")
            return
        fmt = next((item["format"] for item in request if "format" in item), "DEFAULT")
        if fmt not in FORMATS:
            await self._send_error(client, "INVALID_PARAM", f"format {fmt} is not served by the fake")
            return
        if any(item.get("method") == "LIST_SUBSCRIPTIONS" for item in request):
            await self._list_subscriptions(client, str(ticket))
            return
        subscription = self._subscription(client, str(ticket), fmt, request)
        if isinstance(subscription, tuple):
            await self._send_error(client, *subscription)
            return
        with self._lock:
            client.subscription = subscription
            self.subscriptions.append(subscription)
        await self._snapshots(client, subscription)

    def _subscription(
        self, client: _Client, ticket: str, fmt: str, request: list[dict[str, Any]]
    ) -> Subscription | tuple[str, str]:
        typed = [item for item in request if "type" in item]
        if not typed:
            return "NO_TYPE", "타입 필드가 없습니다."
        allowed = PRIVATE_TYPES if client.private else PUBLIC_TYPES
        types: dict[str, tuple[str, ...] | None] = {}
        options: dict[str, dict[str, Any]] = {}
        for item in typed:
            kind = item["type"]
            if kind not in allowed:
                return "INVALID_PARAM", f"type {kind} is not supported on {client.path}"
            codes = item.get("codes")
            if codes is not None and (
                not isinstance(codes, list) or not all(isinstance(c, str) and c.upper() == c for c in codes)
            ):
                return "INVALID_PARAM", "codes must be a list of upper-case market codes"
            if kind in PUBLIC_TYPES and not codes:
                return "NO_CODES", "코드 필드가 없습니다."
            if kind == "myAsset" and codes is not None:
                return "INVALID_PARAM", "myAsset does not take codes"
            types[kind] = tuple(codes) if codes else None
            options[kind] = {k: v for k, v in item.items() if k not in ("type", "codes")}
        return Subscription(client.id, client.path, ticket, types, fmt, options, time.monotonic())

    async def _list_subscriptions(self, client: _Client, ticket: str) -> None:
        result: list[dict[str, Any]] = []
        if client.subscription is not None:
            for kind, codes in client.subscription.types.items():
                entry: dict[str, Any] = {"type": kind}
                if codes is not None:
                    entry["codes"] = list(codes)
                result.append(entry)
        await self._send(client, {"method": "LIST_SUBSCRIPTIONS", "result": result, "ticket": ticket}, force=True)

    async def _snapshots(self, client: _Client, subscription: Subscription) -> None:
        for kind in ("ticker", "trade"):
            if kind not in subscription.types or subscription.options[kind].get("is_only_realtime"):
                continue
            for code in subscription.types[kind] or ():
                price = self._known_price(code)
                if price is not None:
                    await self._send(client, price_message(kind, code, price, None, {}, stream_type="SNAPSHOT"))

    def _known_price(self, code: str) -> Decimal | None:
        with self._lock:
            if code in self._prices:
                return self._prices[code]
        if self.upbit is not None:
            with self.upbit._lock:
                return self.upbit._last_price(code) if code in self.upbit._markets else None
        return None

    # --- sending ------------------------------------------------------------------------------------

    async def _push_price(
        self, kind: str, symbol: str, price: Decimal, at: datetime | None, fields: dict[str, Any]
    ) -> int:
        with self._lock:
            self._prices[symbol] = price
            self._sequence += 1
            sequence = self._sequence
        if self.sync_rest_ticker and self.upbit is not None:
            self.upbit.set_ticker(symbol, price)
        if kind == "trade":
            fields = {"sequential_id": sequence, **fields}
        message = price_message(kind, symbol, price, at, fields)
        reached = 0
        for client in self._subscribers(kind, symbol, private=False):
            reached += await self._send(client, message)
        return reached

    async def _play(self, steps: list[tuple[str, Decimal]], interval: float, kind: str) -> int:
        sent = 0
        for index, (symbol, price) in enumerate(steps):
            if index and interval > 0:
                await asyncio.sleep(interval)
            sent += await self._push_price(kind, symbol, price, None, {})
        return sent

    async def _deliver_private(
        self, kind: str, message: dict[str, Any], code: str | None, body: str | None = None
    ) -> int:
        reached = 0
        for client in self._subscribers(kind, code, private=True):
            payload = message
            if kind == "announcement":
                options = client.subscription.options.get(kind, {}) if client.subscription else {}
                categories = options.get("categories")
                if categories and message["category"] not in categories:
                    continue
                if options.get("include_body"):
                    payload = {**message, "body": body}
            reached += await self._send(client, payload)
        return reached

    def _subscribers(self, kind: str, code: str | None, *, private: bool) -> list[_Client]:
        with self._lock:
            return [
                c
                for c in self._clients.values()
                if c.private == private and c.subscription is not None and c.subscription.wants(kind, code)
            ]

    async def _send(self, client: _Client, message: dict[str, Any], *, force: bool = False) -> int:
        if not force and self.silent:
            with self._lock:
                self.dropped += 1
            return 0
        fmt = client.subscription.format if client.subscription else "DEFAULT"
        payload: Any = [message] if fmt == "JSON_LIST" and "error" not in message else message
        text = json.dumps(payload, ensure_ascii=False)
        try:
            await client.ws.send(text.encode("utf-8") if self.binary else text)
        except ConnectionClosed:
            return 0
        with self._lock:
            self.sent.append((client.id, message))
        return 1

    async def _send_error(self, client: _Client, name: str, message: str) -> None:
        await self._send(client, {"error": {"name": name, "message": message}}, force=True)

    async def _disconnect_all(self, abrupt: bool) -> int:
        with self._lock:
            clients = list(self._clients.values())
        for client in clients:
            if abrupt and client.ws.transport is not None:
                client.ws.transport.abort()
            else:  # not awaited: the closing handshake needs the client, whose loop may be the caller's
                self._background(client.ws.close(1001, "going away"))
        return len(clients)

    def _background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- FakeUpbit's orders as myOrder events -------------------------------------------------------

    def _order_listener(self, order: dict[str, Any]) -> None:
        """Called by FakeUpbit on its own thread: hand the event to this server's loop, in order."""
        if self._loop is not None and self._order_events is not None:
            self._loop.call_soon_threadsafe(self._order_events.put_nowait, order)

    async def _deliver_order_events(self) -> None:
        assert self._order_events is not None
        while True:
            order = await self._order_events.get()
            message = my_order_message(order, self._fee_rate())
            with contextlib.suppress(Exception):
                await self._deliver_private("myOrder", message, message.get("code"))

    def _fee_rate(self) -> Decimal:
        return self.upbit.fee_rate if self.upbit is not None else Decimal("0.0005")


# --- message shapes (Upbit's DEFAULT format) -------------------------------------------------------


def price_message(
    kind: str,
    symbol: str,
    price: Decimal,
    at: datetime | None,
    fields: dict[str, Any],
    *,
    stream_type: str = "REALTIME",
) -> dict[str, Any]:
    """A ``ticker`` or ``trade`` message for one trade at ``price`` (fields of upbit-sdk's ``Ticker``/``Trade``)."""
    moment = (at or datetime.now(UTC)).astimezone(UTC)
    millis = int(moment.timestamp() * 1000)
    p = float(price)
    if kind == "trade":
        message: dict[str, Any] = {
            "type": "trade",
            "code": symbol,
            "timestamp": millis,
            "trade_date": moment.strftime("%Y-%m-%d"),
            "trade_time": moment.strftime("%H:%M:%S"),
            "trade_timestamp": millis,
            "trade_price": p,
            "trade_volume": 0.01,
            "ask_bid": "BID",
            "prev_closing_price": p,
            "change": "EVEN",
            "change_price": 0.0,
            "sequential_id": millis * 1000,
            "best_ask_price": p,
            "best_ask_size": 1.0,
            "best_bid_price": p,
            "best_bid_size": 1.0,
            "stream_type": stream_type,
        }
    else:
        message = {
            "type": "ticker",
            "code": symbol,
            "opening_price": p,
            "high_price": p,
            "low_price": p,
            "trade_price": p,
            "prev_closing_price": p,
            "change": "EVEN",
            "change_price": 0.0,
            "signed_change_price": 0.0,
            "change_rate": 0.0,
            "signed_change_rate": 0.0,
            "trade_volume": 0.01,
            "acc_trade_volume": 0.0,
            "acc_trade_volume_24h": 0.0,
            "acc_trade_price": 0.0,
            "acc_trade_price_24h": 0.0,
            "trade_date": moment.strftime("%Y%m%d"),
            "trade_time": moment.strftime("%H%M%S"),
            "trade_timestamp": millis,
            "ask_bid": "BID",
            "acc_ask_volume": 0.0,
            "acc_bid_volume": 0.0,
            "highest_52_week_price": p,
            "highest_52_week_date": moment.strftime("%Y-%m-%d"),
            "lowest_52_week_price": p,
            "lowest_52_week_date": moment.strftime("%Y-%m-%d"),
            "market_state": "ACTIVE",
            "delisting_date": None,
            "timestamp": millis,
            "stream_type": stream_type,
        }
    message.update(fields)
    return message


def _number(value: Any) -> float | None:
    return None if value is None else float(Decimal(str(value)))


def my_order_message(order: dict[str, Any], fee_rate: Decimal = Decimal("0.0005")) -> dict[str, Any]:
    """FakeUpbit's order JSON (REST shape; ``state: "trade"`` with ``trade`` for an execution) as the
    ``myOrder`` message Upbit pushes (fields of upbit-sdk's ``MyOrder``; numbers as JSON numbers)."""
    trade = order.get("trade") if order.get("state") == "trade" else None
    executed = Decimal(str(order.get("executed_volume") or 0))
    funds = Decimal(str(order.get("executed_funds") or 0))
    created = datetime.fromisoformat(order["created_at"]) if order.get("created_at") else datetime.now(UTC)
    now_ms = int(time.time() * 1000)
    message: dict[str, Any] = {
        "type": "myOrder",
        "code": order["market"],
        "uuid": order["uuid"],
        "ask_bid": str(order["side"]).upper(),
        "order_type": order["ord_type"],
        "state": order["state"],
        "trade_uuid": trade["uuid"] if trade else None,
        "price": _number(trade["price"] if trade else order.get("price")),
        "avg_price": float(funds / executed) if executed else 0.0,
        "volume": _number(trade["volume"] if trade else order.get("volume")),
        "remaining_volume": _number(order.get("remaining_volume")),
        "executed_volume": float(executed),
        "trades_count": int(order.get("trades_count") or 0),
        "reserved_fee": _number(order.get("reserved_fee")),
        "remaining_fee": _number(order.get("remaining_fee")),
        "paid_fee": _number(order.get("paid_fee")),
        "locked": _number(order.get("locked")),
        "executed_funds": float(funds),
        "time_in_force": order.get("time_in_force"),
        "trade_fee": _number(trade.get("fee") or Decimal(str(trade["funds"])) * fee_rate) if trade else None,
        "is_maker": bool(trade.get("is_maker", False)) if trade else None,
        "identifier": order.get("identifier"),
        "smp_type": order.get("smp_type", "cancel_maker"),
        "prevented_volume": _number(order.get("prevented_volume")) or 0.0,
        "prevented_locked": _number(order.get("prevented_locked")) or 0.0,
        "trade_timestamp": now_ms if trade else None,
        "order_timestamp": int(created.timestamp() * 1000),
        "timestamp": now_ms,
        "stream_type": "REALTIME",
    }
    return message
