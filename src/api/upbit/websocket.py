"""Upbit's WebSocket, supervised: one client class for the public (``ticker``/``trade``) and the private
(``myOrder``/``announcement``) stream, turning messages into ``PriceTick``, ``OrderEvent`` and ``Announcement``.

- Connect with the ``websockets`` library; the private stream sends ``Authorization: Bearer <JWT>`` (the same
  signing as the REST transport: ``access_key`` and a fresh ``nonce``) on every handshake.
- Subscribe with ``[{"ticket": ...}, {"type": "ticker", "codes": [...]}, {"format": "DEFAULT"}]``; messages
  arrive as binary or text JSON, one object or a list of them.
- Reconnect after any failure with exponential backoff and jitter, capped by ``reconnect_max_seconds``
  (``REALTIME_RECONNECT_MAX_SECONDS``), and subscribe again. The attempt counter resets once a connection is live.
- Upbit's WebSocket limits are kept locally before Upbit has to refuse: connects 5/s, messages 5/s and 100/min
  (``SlidingWindowLimiter``). A refused handshake (HTTP 429) waits at least a second.
- Keepalive by WebSocket ping/pong frames (a dead peer closes the connection and the loop reconnects); a public
  stream that stays connected but silent for ``stale_seconds`` is ``STALE`` (the consumer polls REST), and one
  silent for ``stale_reconnect_seconds`` (default 3 x ``stale_seconds``) is dropped and reconnected. The private
  stream is quiet by nature (events only when orders change), so it is ``LIVE`` once subscribed and only the
  keepalive watches it.
- A malformed or unknown message is logged and skipped; a callback that raises is logged; neither stops the loop.
  ``run()`` returns only after ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
import re
import time
import uuid as uuid_lib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from src.api.upbit.transport import auth_headers
from src.domain.market_stream import (
    Announcement,
    AnnouncementCategory,
    OrderEvent,
    OrderEventState,
    PriceTick,
    StreamState,
    TickSource,
)
from src.utils.logger import get_logger

if TYPE_CHECKING:
    from src.config.settings import Settings

log = get_logger(__name__)

# Upbit's WebSocket limits (docs "요청 수 제한"): connects per second; messages per second and per minute.
CONNECT_LIMITS: tuple[tuple[int, float], ...] = ((5, 1.0),)
MESSAGE_LIMITS: tuple[tuple[int, float], ...] = ((5, 1.0), (100, 60.0))
LIMIT_MARGIN_SECONDS = 0.1  # added to each window: a sixth connect waits 1.1 s, not 1.0 s, after the first
PUBLIC_TYPES: tuple[str, ...] = ("ticker",)
PRIVATE_TYPES: tuple[str, ...] = ("myOrder", "announcement")
_PREVIEW = 200

TickHandler = Callable[[PriceTick], Awaitable[None]]
OrderHandler = Callable[[OrderEvent], Awaitable[None]]
AnnouncementHandler = Callable[[Announcement], Awaitable[None]]
StateHandler = Callable[[StreamState], Awaitable[None] | None]


class StreamKind(StrEnum):
    PUBLIC = "public"  # wss://api.upbit.com/websocket/v1: ticker, trade
    PRIVATE = "private"  # .../websocket/v1/private with a JWT: myOrder, announcement


def private_url(url: str) -> str:
    """The private stream's URL for ``UPBIT_WEBSOCKET_URL`` (the public one): that URL plus ``/private``."""
    base = url.rstrip("/")
    return base if base.endswith("/private") else base + "/private"


class SlidingWindowLimiter:
    """At most ``limit`` events in any ``window`` seconds, for each (limit, window) pair; ``acquire`` waits.

    ``margin`` seconds are added to every window, so that network jitter between our clock and the exchange's
    cannot make Upbit count one too many in one of its windows."""

    def __init__(
        self,
        limits: Sequence[tuple[int, float]],
        clock: Callable[[], float] = time.monotonic,
        *,
        margin: float = 0.0,
    ) -> None:
        if not limits or any(limit < 1 or window <= 0 for limit, window in limits) or margin < 0:
            raise ValueError("limits must be (count >= 1, seconds > 0) pairs and the margin not negative")
        self._limits = tuple((limit, window + margin) for limit, window in limits)
        self._clock = clock
        self._events: deque[float] = deque(maxlen=max(limit for limit, _ in self._limits))

    def wait_time(self, now: float) -> float:
        """Seconds until one more event is allowed (0 when it is allowed now)."""
        wait = 0.0
        events = list(self._events)
        for limit, window in self._limits:
            if len(events) >= limit:
                wait = max(wait, events[-limit] + window - now)
        return max(0.0, wait)

    def record(self, now: float) -> None:
        self._events.append(now)

    async def acquire(self) -> float:
        """Wait for a slot, take it; the seconds waited."""
        waited = 0.0
        while (wait := self.wait_time(self._clock())) > 0:
            await asyncio.sleep(wait)
            waited += wait
        self.record(self._clock())
        return waited


def backoff_seconds(attempt: int, *, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: a uniform draw from [d/2, d], d = min(cap, base * 2**attempt)."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return ceiling / 2 + rng() * ceiling / 2


class UpbitStream:
    """One supervised Upbit WebSocket connection (public or private); see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        kind: StreamKind = StreamKind.PUBLIC,
        access_key: str | None = None,
        secret_key: str | None = None,
        stale_seconds: float = 30.0,
        reconnect_max_seconds: float = 30.0,
        on_tick: TickHandler | None = None,
        on_order: OrderHandler | None = None,
        on_announcement: AnnouncementHandler | None = None,
        on_state: StateHandler | None = None,
        clock: Callable[[], float] = time.monotonic,
        symbols: Iterable[str] = (),
        public_types: Sequence[str] = PUBLIC_TYPES,
        private_types: Sequence[str] = PRIVATE_TYPES,
        reconnect_base_seconds: float = 0.5,
        stale_reconnect_seconds: float | None = None,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        open_timeout: float = 10.0,
        connect_limits: Sequence[tuple[int, float]] = CONNECT_LIMITS,
        message_limits: Sequence[tuple[int, float]] = MESSAGE_LIMITS,
    ) -> None:
        if stale_seconds <= 0 or reconnect_max_seconds <= 0 or reconnect_base_seconds <= 0:
            raise ValueError("stale_seconds, reconnect_max_seconds and reconnect_base_seconds must be positive")
        if kind is StreamKind.PRIVATE and not (access_key and secret_key):
            raise ValueError("the private Upbit stream needs UPBIT_ACCESS_KEY and UPBIT_SECRET_KEY")
        self.kind = StreamKind(kind)
        self.url = private_url(url) if self.kind is StreamKind.PRIVATE else url
        self._access_key = access_key
        self._secret_key = secret_key
        self.stale_seconds = stale_seconds
        self.stale_reconnect_seconds = stale_reconnect_seconds or 3 * stale_seconds
        self.reconnect_max_seconds = reconnect_max_seconds
        self._reconnect_base = min(reconnect_base_seconds, reconnect_max_seconds)
        self._on_tick = on_tick
        self._on_order = on_order
        self._on_announcement = on_announcement
        self._on_state = on_state
        self._clock = clock
        self._public_types = tuple(public_types)
        self._private_types = tuple(private_types)
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._open_timeout = open_timeout
        self._connect_limiter = SlidingWindowLimiter(connect_limits, margin=LIMIT_MARGIN_SECONDS)
        self._message_limiter = SlidingWindowLimiter(message_limits, margin=LIMIT_MARGIN_SECONDS)
        self._symbols: tuple[str, ...] = _normalise(symbols)
        self._subscribed: tuple[str, ...] | None = None
        self._ws: ClientConnection | None = None
        self._stop = asyncio.Event()
        self._symbols_changed = asyncio.Event()
        self._resubscribe_task: asyncio.Task[None] | None = None
        self._running = False
        self._done = asyncio.Event()
        self._attempt = 0
        self._auth_failed = False
        self.private_live_after = 0.5  # seconds without INVALID_AUTH after subscribing: the private stream is live
        self.state = StreamState.OFF
        self.last_message_at: float | None = None
        self.reconnects = 0  # connection attempts after the first (failed handshakes included)
        self.connects = 0  # handshakes that succeeded
        self.messages = 0  # messages received
        self.skipped = 0  # malformed or unknown messages, logged and skipped
        self.last_error: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, kind: StreamKind = StreamKind.PUBLIC, **options: Any) -> UpbitStream:
        """The stream as the settings describe it: ``UPBIT_WEBSOCKET_URL`` (plus ``/private``), the API keys for
        the private stream, ``REALTIME_STALE_SECONDS`` and ``REALTIME_RECONNECT_MAX_SECONDS``; ``options`` (the
        callbacks, ``symbols``...) go to the constructor."""
        upbit, realtime = settings.upbit, settings.realtime
        keys: dict[str, Any] = {}
        if kind is StreamKind.PRIVATE:
            keys = {
                "access_key": upbit.access_key.get_secret_value() if upbit.access_key else None,
                "secret_key": upbit.secret_key.get_secret_value() if upbit.secret_key else None,
            }
        return cls(
            upbit.websocket_url,
            kind=kind,
            stale_seconds=realtime.stale_seconds,
            reconnect_max_seconds=realtime.reconnect_max_seconds,
            **keys,
            **options,
        )

    # --- public API -------------------------------------------------------------------------------

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    def set_symbols(self, symbols: Iterable[str]) -> None:
        """Watch these markets (public stream). A live connection subscribes again (one message, rate-limited);
        an empty set closes it (state ``OFF``) until symbols come back."""
        new = _normalise(symbols)
        if new == self._symbols:
            return
        self._symbols = new
        self._symbols_changed.set()
        if self.kind is not StreamKind.PUBLIC or self._ws is None:
            return
        if not new:
            self._close_current()
        elif self._resubscribe_task is None or self._resubscribe_task.done():
            self._resubscribe_task = asyncio.get_running_loop().create_task(self._resubscribe(self._ws))

    async def run(self) -> None:
        """The supervised loop: connect, subscribe, receive, reconnect; until ``stop()``. Never raises on
        network or protocol errors."""
        if self._running:
            raise RuntimeError("this UpbitStream is already running")
        self._running = True
        self._done.clear()
        first = True
        try:
            while not self._stop.is_set():
                if self.kind is StreamKind.PUBLIC and not self._symbols:
                    await self._set_state(StreamState.OFF)
                    await self._wait_for_symbols()
                    continue
                if not first:
                    self.reconnects += 1
                first = False
                refused = await self._connect_once()
                if self._stop.is_set():
                    break
                if self.kind is StreamKind.PUBLIC and not self._symbols:
                    continue
                await self._set_state(StreamState.DOWN)
                delay = backoff_seconds(self._attempt, base=self._reconnect_base, cap=self.reconnect_max_seconds)
                if refused:
                    delay = max(delay, 1.0)
                if self._auth_failed:  # not a network hiccup: retry slowly, the log says why
                    delay = self.reconnect_max_seconds
                    self._auth_failed = False
                self._attempt += 1
                log.info("upbit.ws.reconnecting", kind=self.kind.value, in_seconds=round(delay, 3))
                await self._sleep(delay)
        finally:
            self._running = False
            await self._set_state(StreamState.OFF)
            self._done.set()

    async def stop(self) -> None:
        """Close the connection and end ``run()`` (waits for it up to 5 s)."""
        self._stop.set()
        self._symbols_changed.set()
        if self._resubscribe_task is not None:
            self._resubscribe_task.cancel()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), timeout=2)
        if self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), timeout=5)

    # --- one connection ---------------------------------------------------------------------------

    async def _connect_once(self) -> bool:
        """Connect, subscribe, receive until the connection ends. True when Upbit refused with 429."""
        await self._set_state(StreamState.CONNECTING)
        await self._connect_limiter.acquire()
        headers = auth_headers(self._access_key, self._secret_key) if self.kind is StreamKind.PRIVATE else None
        try:
            async with connect(
                self.url,
                additional_headers=headers,
                proxy=None,
                open_timeout=self._open_timeout,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_timeout,
                close_timeout=2,
            ) as ws:
                self._ws = ws
                self.connects += 1
                log.info("upbit.ws.connected", kind=self.kind.value, url=self.url)
                with contextlib.suppress(ConnectionClosed):
                    await self._subscribe(ws)  # closed at once? read what Upbit said first (INVALID_AUTH)
                await self._receive(ws)
        except InvalidStatus as exc:
            status = exc.response.status_code
            self.last_error = f"handshake refused: HTTP {status}"
            log.warning("upbit.ws.refused", kind=self.kind.value, status=status)
            return status == 429
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.reason == "INVALID_AUTH":
                self._auth_failed = True
            if not self._stop.is_set():
                self.last_error = f"connection closed: {exc}"
                log.warning("upbit.ws.closed", kind=self.kind.value, code=exc.rcvd.code if exc.rcvd else None)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("upbit.ws.connect_failed", kind=self.kind.value, error=self.last_error)
        finally:
            self._ws = None
            self._subscribed = None
        return False

    async def _subscribe(self, ws: ClientConnection) -> None:
        await self._message_limiter.acquire()
        symbols = self._symbols
        await ws.send(json.dumps(self._subscription(symbols)))
        self._subscribed = symbols
        log.info("upbit.ws.subscribed", kind=self.kind.value, symbols=list(symbols))

    async def _resubscribe(self, ws: ClientConnection) -> None:
        try:
            while self._ws is ws and self._symbols and self._subscribed != self._symbols:
                await self._subscribe(ws)
        except (ConnectionClosed, OSError):
            pass  # the loop reconnects and subscribes with the latest symbols

    def _subscription(self, symbols: Sequence[str]) -> list[dict[str, Any]]:
        message: list[dict[str, Any]] = [{"ticket": str(uuid_lib.uuid4())}]
        if self.kind is StreamKind.PUBLIC:
            message += [{"type": kind, "codes": list(symbols)} for kind in self._public_types]
        else:
            message += [{"type": kind} for kind in self._private_types]  # myOrder without codes: every market
        message.append({"format": "DEFAULT"})
        return message

    async def _receive(self, ws: ClientConnection) -> None:
        watched = self.kind is StreamKind.PUBLIC
        quiet_since = self._clock()
        live_at = time.monotonic() + self.private_live_after
        while not self._stop.is_set():
            timeout: float | None = None
            if not watched and self.state is not StreamState.LIVE:
                # Upbit answers a bad token after the handshake (INVALID_AUTH, then a close): live once it did not
                timeout = live_at - time.monotonic()
                if timeout <= 0:
                    await self._went_live()
                    timeout = None
            elif watched:
                silent = self._clock() - quiet_since
                if silent >= self.stale_reconnect_seconds:
                    self.last_error = f"silent for {silent:.1f} s"
                    log.warning("upbit.ws.stale_reconnect", kind=self.kind.value, silent_seconds=round(silent, 1))
                    return
                if silent >= self.stale_seconds:
                    if self.state is not StreamState.STALE:
                        log.warning("upbit.ws.stale", kind=self.kind.value, silent_seconds=round(silent, 1))
                        await self._set_state(StreamState.STALE)
                    timeout = self.stale_reconnect_seconds - silent
                else:
                    timeout = self.stale_seconds - silent
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout)
            except TimeoutError:
                continue
            received = time.perf_counter()
            quiet_since = self.last_message_at = self._clock()
            self.messages += 1
            await self._dispatch(raw, received)

    async def _went_live(self) -> None:
        if self.state is not StreamState.LIVE:
            self._attempt = 0
            log.info("upbit.ws.live", kind=self.kind.value)
            await self._set_state(StreamState.LIVE)

    # --- messages ---------------------------------------------------------------------------------

    async def _dispatch(self, raw: str | bytes, received: float) -> None:
        try:
            items = parse_frame(raw)
        except ValueError as exc:
            self._skip("malformed", raw, str(exc))
            return
        for item in items:
            if "error" in item:
                self._server_error(item)
                continue
            if item.get("status") == "UP" or item.get("method") == "LIST_SUBSCRIPTIONS":
                continue
            kind = item.get("type")
            try:
                if kind in ("ticker", "trade") and self.kind is StreamKind.PUBLIC:
                    tick = tick_from_message(item, received)
                    await self._went_live()
                    await self._call(self._on_tick, tick)
                elif kind == "myOrder" and self.kind is StreamKind.PRIVATE:
                    event = order_event_from_message(item)
                    await self._went_live()
                    await self._call(self._on_order, event)
                elif kind == "announcement" and self.kind is StreamKind.PRIVATE:
                    notice = announcement_from_message(item)
                    await self._went_live()
                    await self._call(self._on_announcement, notice)
                else:
                    self._skip("unknown", item, f"type {kind!r} on the {self.kind.value} stream")
            except (ValueError, TypeError, KeyError, InvalidOperation) as exc:
                self._skip("malformed", item, f"{type(exc).__name__}: {exc}")

    async def _call(self, handler: Callable[[Any], Awaitable[None]] | None, value: Any) -> None:
        if handler is None:
            return
        try:
            await handler(value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a consumer's bug must not stop the stream
            log.exception("upbit.ws.callback_failed", kind=self.kind.value, error=f"{type(exc).__name__}: {exc}")

    def _server_error(self, item: dict[str, Any]) -> None:
        error = item.get("error")
        name = error.get("name") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        self.last_error = f"Upbit error {name}: {message}"
        if name == "INVALID_AUTH":
            self._auth_failed = True
        log.error("upbit.ws.server_error", kind=self.kind.value, name=name, message=str(message)[:_PREVIEW])

    def _skip(self, why: str, raw: Any, detail: str) -> None:
        self.skipped += 1
        preview = raw if isinstance(raw, str) else raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        log.warning(f"upbit.ws.{why}_message", kind=self.kind.value, detail=detail, message=str(preview)[:_PREVIEW])

    # --- plumbing ---------------------------------------------------------------------------------

    async def _set_state(self, state: StreamState) -> None:
        if state is self.state:
            return
        self.state = state
        if self._on_state is None:
            return
        try:
            result = self._on_state(state)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("upbit.ws.callback_failed", kind=self.kind.value, error=f"{type(exc).__name__}: {exc}")

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _wait_for_symbols(self) -> None:
        self._symbols_changed.clear()
        if not self._symbols and not self._stop.is_set():
            await self._symbols_changed.wait()

    def _close_current(self) -> None:
        ws = self._ws
        if ws is not None:
            asyncio.get_running_loop().create_task(ws.close())


# --- parsing (pure functions) ---------------------------------------------------------------------


def parse_frame(raw: str | bytes) -> list[dict[str, Any]]:
    """One frame (binary or text JSON; an object or a list of objects) as a list of objects."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(item, dict) for item in items):
        raise ValueError("not a JSON object or a list of objects")
    return items


def tick_from_message(item: dict[str, Any], received: float = 0.0) -> PriceTick:
    """A ``ticker`` or ``trade`` message (DEFAULT format) as a ``PriceTick``."""
    symbol = _text(item, "code")
    price = _decimal(item.get("trade_price"), "trade_price")
    if price <= 0:
        raise ValueError(f"trade_price must be positive, got {price}")
    at = _millis(item.get("trade_timestamp") or item.get("timestamp"), "trade_timestamp")
    return PriceTick(symbol=symbol, price=price, at=at, source=TickSource.STREAM, received=received)


def order_event_from_message(item: dict[str, Any]) -> OrderEvent:
    """A ``myOrder`` message as an ``OrderEvent`` (``state`` ``trade`` is one execution)."""
    state = OrderEventState(_text(item, "state"))
    stamp = item.get("trade_timestamp") if state is OrderEventState.TRADE else None
    side = item.get("ask_bid")
    return OrderEvent(
        uuid=_text(item, "uuid"),
        identifier=item.get("identifier") or None,
        symbol=_text(item, "code"),
        state=state,
        at=_millis(stamp or item.get("timestamp") or item.get("order_timestamp"), "timestamp"),
        executed_volume=_decimal_or(item.get("executed_volume"), "executed_volume"),
        remaining_volume=_decimal_or(item.get("remaining_volume"), "remaining_volume"),
        side=str(side).lower() if side else None,
        order_type=item.get("order_type"),
        price=_optional_decimal(item.get("price"), "price"),
        volume=_optional_decimal(item.get("volume"), "volume"),
        avg_price=_optional_decimal(item.get("avg_price"), "avg_price"),
        executed_funds=_decimal_or(item.get("executed_funds"), "executed_funds"),
        paid_fee=_decimal_or(item.get("paid_fee"), "paid_fee"),
        trade_uuid=item.get("trade_uuid"),
        is_maker=item.get("is_maker"),
    )


_TICKERS_IN_TITLE = re.compile(r"\(([A-Z0-9]{1,15}(?:\s*,\s*[A-Z0-9]{1,15})*)\)")


def markets_in_title(title: str) -> tuple[str, ...]:
    """KRW markets named in a notice title, e.g. ``"[거래] 코인(ABC), 토큰(DEF) 거래지원 종료 안내"`` ->
    ``("KRW-ABC", "KRW-DEF")``: upper-case symbols in parentheses (``KRW`` itself excluded)."""
    found: list[str] = []
    for group in _TICKERS_IN_TITLE.findall(title):
        for symbol in (part.strip() for part in group.split(",")):
            market = f"KRW-{symbol}"
            if symbol != "KRW" and not symbol.isdigit() and market not in found:
                found.append(market)
    return tuple(found)


def announcement_from_message(item: dict[str, Any]) -> Announcement:
    """An ``announcement`` message as an ``Announcement`` (an unknown category reads as ``NOTICE``)."""
    title = _text(item, "title")
    try:
        category = AnnouncementCategory(str(item.get("category") or "notice"))
    except ValueError:
        category = AnnouncementCategory.NOTICE
    listed = item.get("listed_at") or item.get("first_listed_at")
    at = _iso(listed) if listed else _millis(item.get("timestamp"), "timestamp")
    return Announcement(
        uuid=_text(item, "uuid"),
        category=category,
        title=title,
        at=at,
        url=item.get("url") or None,
        markets=markets_in_title(title),
        updated=item.get("event_type") == "UPDATED",
    )


def _normalise(symbols: Iterable[str]) -> tuple[str, ...]:
    if isinstance(symbols, str):
        raise TypeError("symbols must be an iterable of market codes, not one string")
    return tuple(sorted({symbol.strip().upper() for symbol in symbols if symbol and symbol.strip()}))


def _text(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} is missing")
    return value


def _decimal(value: Any, key: str) -> Decimal:
    if value is None or isinstance(value, bool):
        raise ValueError(f"{key} is missing")
    result = Decimal(str(value))
    if not result.is_finite():
        raise ValueError(f"{key} is not a finite number")
    return result


def _optional_decimal(value: Any, key: str) -> Decimal | None:
    return None if value is None else _decimal(value, key)


def _decimal_or(value: Any, key: str) -> Decimal:
    return Decimal(0) if value is None else _decimal(value, key)


def _millis(value: Any, key: str) -> datetime:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{key} is missing or not a millisecond timestamp")
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def _iso(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"time {value!r} has no zone")
    return parsed.astimezone(UTC)
