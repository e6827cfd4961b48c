"""UpbitStream (src/api/upbit/websocket.py): parsing, limits, backoff, and the supervised loop against the fake
Upbit WebSocket (tests/fakes/upbit_websocket.py): subscribe, ticks, reconnect, stale, set_symbols, JWT, myOrder."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from src.api.interfaces import OrderRequest
from src.api.upbit.websocket import (
    SlidingWindowLimiter,
    StreamKind,
    UpbitStream,
    announcement_from_message,
    backoff_seconds,
    markets_in_title,
    order_event_from_message,
    parse_frame,
    private_url,
    tick_from_message,
)
from src.api.upbit_client import UpbitClient
from src.config.settings import load_settings
from src.domain.market_stream import (
    Announcement,
    AnnouncementCategory,
    OrderEvent,
    OrderEventState,
    PriceTick,
    StreamState,
    TickSource,
)
from src.domain.orders import OrderType, Side
from tests.fakes.upbit_server import FakeUpbit
from tests.fakes.upbit_websocket import FakeUpbitWebSocket, my_order_message, price_message

BTC = "KRW-BTC"
ETH = "KRW-ETH"
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class Recorder:
    """Collects what a stream hands its callbacks."""

    def __init__(self) -> None:
        self.ticks: list[PriceTick] = []
        self.orders: list[OrderEvent] = []
        self.notices: list[Announcement] = []
        self.states: list[StreamState] = []

    async def tick(self, tick: PriceTick) -> None:
        self.ticks.append(tick)

    async def order(self, event: OrderEvent) -> None:
        self.orders.append(event)

    async def notice(self, notice: Announcement) -> None:
        self.notices.append(notice)

    async def state(self, state: StreamState) -> None:
        self.states.append(state)


@asynccontextmanager
async def running(stream: UpbitStream) -> AsyncIterator[UpbitStream]:
    task = asyncio.create_task(stream.run())
    try:
        yield stream
    finally:
        await stream.stop()
        await asyncio.wait_for(task, timeout=5)


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeUpbit, FakeUpbitWebSocket]]:
    async with FakeUpbit() as rest, FakeUpbitWebSocket(upbit=rest) as ws:
        yield rest, ws


def public(fake: FakeUpbitWebSocket, rec: Recorder, symbols: tuple[str, ...] = (BTC,), **kw: object) -> UpbitStream:
    options: dict[str, object] = {"stale_seconds": 5.0, "reconnect_max_seconds": 0.2, "reconnect_base_seconds": 0.05}
    options.update(kw)
    return UpbitStream(fake.url, symbols=symbols, on_tick=rec.tick, on_state=rec.state, **options)  # type: ignore[arg-type]


def private(rest: FakeUpbit, fake: FakeUpbitWebSocket, rec: Recorder, **kw: object) -> UpbitStream:
    options: dict[str, object] = {"reconnect_max_seconds": 0.2, "reconnect_base_seconds": 0.05}
    options.update(kw)
    return UpbitStream(
        fake.url,
        kind=StreamKind.PRIVATE,
        access_key=rest.access_key,
        secret_key=rest.secret_key,
        on_order=rec.order,
        on_announcement=rec.notice,
        on_state=rec.state,
        **options,  # type: ignore[arg-type]
    )


# --- parsing (pure) -------------------------------------------------------------------------------------


def test_a_ticker_message_becomes_a_price_tick_with_the_exchange_time() -> None:
    # Given a ticker message as Upbit sends it (JSON numbers, trade_timestamp in ms)
    message = price_message("ticker", BTC, Decimal("95123000"), T0, {})
    # When it is parsed
    tick = tick_from_message(json.loads(json.dumps(message)), received=12.5)
    # Then it is an exact Decimal price at the exchange's time, from the stream
    assert tick == PriceTick(BTC, Decimal("95123000.0"), T0, TickSource.STREAM, 12.5)


def test_a_trade_message_becomes_a_price_tick() -> None:
    message = price_message("trade", ETH, Decimal("4500500"), T0, {"trade_volume": 0.5})
    tick = tick_from_message(message)
    assert (tick.symbol, tick.price, tick.at) == (ETH, Decimal("4500500.0"), T0)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"trade_price": None}, "missing price"),
        ({"trade_price": -1}, "negative"),
        ({"code": ""}, "no code"),
        ({"trade_timestamp": "soon", "timestamp": None}, "bad time"),
        ({"trade_price": "NaN"}, "not finite"),
    ],
)
def test_a_ticker_message_without_a_usable_price_time_or_code_is_refused(change: dict[str, object], why: str) -> None:
    message = {**price_message("ticker", BTC, Decimal(1000), T0, {}), **change}
    with pytest.raises(ValueError):
        tick_from_message(message)


def test_frames_are_binary_or_text_json_objects_or_lists() -> None:
    assert parse_frame(b'{"type":"ticker"}') == [{"type": "ticker"}]
    assert parse_frame('[{"a":1},{"b":2}]') == [{"a": 1}, {"b": 2}]
    for bad in (b"\xff\xfe", "not json", "[1, 2]", "3"):
        with pytest.raises(ValueError):
            parse_frame(bad)


def test_a_my_order_trade_event_carries_the_execution_and_the_identifier() -> None:
    # Given FakeUpbit's order JSON at an execution, turned into Upbit's myOrder message
    order = {
        "uuid": "u-1",
        "identifier": "bot-1",
        "market": BTC,
        "side": "bid",
        "ord_type": "limit",
        "state": "trade",
        "price": "95000000",
        "volume": "0.002",
        "remaining_volume": "0.001",
        "executed_volume": "0.001",
        "executed_funds": "95000",
        "paid_fee": "47.5",
        "reserved_fee": "95",
        "remaining_fee": "47.5",
        "locked": "95047.5",
        "trades_count": 1,
        "created_at": "2026-12-05T21:00:00+09:00",
        "trade": {"uuid": "t-1", "price": "95000000", "volume": "0.001", "funds": "95000"},
    }
    event = order_event_from_message(my_order_message(order))
    # Then the event is a trade of 0.001 at 95,000,000 for identifier bot-1
    assert event.state is OrderEventState.TRADE
    assert not event.state.is_final
    assert (event.uuid, event.identifier, event.symbol, event.side) == ("u-1", "bot-1", BTC, "bid")
    assert (event.price, event.volume, event.executed_volume) == (
        Decimal("95000000.0"),
        Decimal("0.001"),
        Decimal("0.001"),
    )
    assert (event.executed_funds, event.paid_fee, event.trade_uuid) == (Decimal("95000.0"), Decimal("47.5"), "t-1")
    assert event.avg_price == Decimal("95000000.0")


def test_a_my_order_with_an_unknown_state_is_refused() -> None:
    with pytest.raises(ValueError):
        order_event_from_message({"type": "myOrder", "uuid": "u", "code": BTC, "state": "exploded", "timestamp": 1})


def test_an_announcement_names_the_markets_in_its_title() -> None:
    message = {
        "type": "announcement",
        "uuid": "n-1",
        "category": "trade",
        "event_type": "UPDATED",
        "title": "[거래] 코인(ABC), 토큰(DEF) 거래지원 종료 안내 (KRW)",
        "url": "https://upbit.com/n/1",
        "listed_at": "2026-12-05T21:00:00+09:00",
        "timestamp": 1,
    }
    notice = announcement_from_message(message)
    assert notice.markets == ("KRW-ABC", "KRW-DEF")
    assert notice.category is AnnouncementCategory.TRADE
    assert notice.updated
    assert notice.at == T0.replace(hour=12)
    assert announcement_from_message({**message, "category": "brand_new"}).category is AnnouncementCategory.NOTICE
    assert markets_in_title("점검 안내 (2026-12-05)") == ()


def test_the_limiter_allows_five_a_second_and_a_hundred_a_minute() -> None:
    limiter = SlidingWindowLimiter(((5, 1.0), (100, 60.0)))
    now = 0.0
    for _ in range(5):
        assert limiter.wait_time(now) == 0
        limiter.record(now)
    assert limiter.wait_time(now) == pytest.approx(1.0)  # the 6th waits for the 1st to leave the second
    for second in range(1, 20):  # 5 a second for 19 more seconds: 100 in total
        for _ in range(5):
            limiter.record(float(second))
    assert limiter.wait_time(20.0) == pytest.approx(40.0)  # the minute's budget is spent until the 1st is 60 s old


def test_backoff_doubles_with_jitter_and_never_passes_the_cap() -> None:
    assert backoff_seconds(0, base=0.5, cap=30, rng=lambda: 1.0) == 0.5
    assert backoff_seconds(3, base=0.5, cap=30, rng=lambda: 0.0) == 2.0  # half of 4 s
    assert all(backoff_seconds(n, base=0.5, cap=30) <= 30 for n in range(100))
    assert backoff_seconds(10, base=0.5, cap=30, rng=lambda: 0.0) == 15.0


def test_the_private_stream_needs_keys_and_takes_the_private_path() -> None:
    with pytest.raises(ValueError, match="UPBIT_ACCESS_KEY"):
        UpbitStream("wss://api.upbit.com/websocket/v1", kind=StreamKind.PRIVATE)
    stream = UpbitStream("wss://api.upbit.com/websocket/v1", kind=StreamKind.PRIVATE, access_key="a", secret_key="s")
    assert stream.url == "wss://api.upbit.com/websocket/v1/private" == private_url(stream.url)
    with pytest.raises(TypeError):
        stream.set_symbols("KRW-BTC")


# --- public stream against the fake --------------------------------------------------------------------


async def test_the_stream_subscribes_as_upbit_asks_and_turns_tickers_into_ticks(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    _, fake = fakes
    rec = Recorder()
    async with running(public(fake, rec, symbols=("krw-eth", BTC))):
        # Given a connected stream
        await wait_until(lambda: bool(fake.current_subscriptions()))
        # Then it sent [{ticket}, {type: ticker, codes}, {format: DEFAULT}] with upper-case codes
        request = json.loads(fake.received[0][1])
        assert set(request[0]) == {"ticket"}
        assert request[1:] == [
            {"type": "ticker", "codes": [BTC, ETH]},
            {"format": "DEFAULT"},
        ]
        # When Upbit pushes a price
        assert fake.push_ticker(BTC, "95000000") == 1
        await wait_until(lambda: len(rec.ticks) == 1)
        # Then the callback gets it and the stream is live
        assert rec.ticks[0].price == Decimal("95000000.0")
        assert rec.ticks[0].symbol == BTC
        assert rec.states == [StreamState.CONNECTING, StreamState.LIVE]
    assert rec.states[-1] is StreamState.OFF


async def test_malformed_and_unknown_messages_are_skipped_and_the_loop_goes_on(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    _, fake = fakes
    rec = Recorder()
    async with running(public(fake, rec)) as stream:
        await wait_until(lambda: bool(fake.current_subscriptions()))
        # When garbage, a price-less ticker, an unknown type and an error arrive
        fake.push_raw(b"\x00\x01garbage")
        fake.push_raw('{"type":"ticker","code":"KRW-BTC"}')
        fake.push_raw('{"type":"orderbook","code":"KRW-BTC"}')
        fake.push_raw('{"error":{"name":"WRONG_FORMAT","message":"요청 형식이 올바르지 않습니다."}}')
        fake.push_ticker(BTC, 1000)
        # Then the good tick still arrives, three were skipped and the error was noted
        await wait_until(lambda: len(rec.ticks) == 1)
        assert stream.skipped == 3
        assert stream.last_error is not None
        assert "WRONG_FORMAT" in stream.last_error
        assert stream.state is StreamState.LIVE
        assert stream.reconnects == 0


async def test_a_callback_that_raises_does_not_stop_the_stream(fakes: tuple[FakeUpbit, FakeUpbitWebSocket]) -> None:
    _, fake = fakes
    seen: list[Decimal] = []

    async def flaky(tick: PriceTick) -> None:
        seen.append(tick.price)
        if len(seen) == 1:
            raise RuntimeError("consumer bug")

    stream = UpbitStream(fake.url, symbols=[BTC], on_tick=flaky)
    async with running(stream):
        await wait_until(lambda: bool(fake.current_subscriptions()))
        fake.push_ticker(BTC, 1000)
        fake.push_ticker(BTC, 1001)
        await wait_until(lambda: len(seen) == 2)
        assert stream.state is StreamState.LIVE


async def test_after_a_drop_it_reconnects_with_backoff_resubscribes_and_gets_the_snapshot(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    _, fake = fakes
    rec = Recorder()
    async with running(public(fake, rec, reconnect_max_seconds=0.3)) as stream:
        await wait_until(lambda: bool(fake.current_subscriptions()))
        fake.push_ticker(BTC, 95_000_000)
        await wait_until(lambda: len(rec.ticks) == 1)
        # When the network drops the connection in the middle of a move
        dropped_at = time.monotonic()
        assert fake.disconnect_all(abrupt=True) == 1
        fake.push_ticker(BTC, 94_000_000)  # nobody hears this one
        # Then the stream goes down, reconnects within the cap, subscribes again and the snapshot brings the price
        await wait_until(lambda: len(rec.ticks) == 2)
        assert time.monotonic() - dropped_at < 1.0
        assert rec.ticks[1].price == Decimal("94000000.0")
        assert stream.reconnects == 1
        assert len(fake.subscriptions) == 2
        assert fake.subscriptions[1].codes == (BTC,)
        assert rec.states == [
            StreamState.CONNECTING,
            StreamState.LIVE,
            StreamState.DOWN,
            StreamState.CONNECTING,
            StreamState.LIVE,
        ]


async def test_a_silent_stream_turns_stale_then_live_again_when_prices_come_back(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    _, fake = fakes
    rec = Recorder()
    async with running(public(fake, rec, stale_seconds=0.3, stale_reconnect_seconds=10)) as stream:
        await wait_until(lambda: bool(fake.current_subscriptions()))
        fake.push_ticker(BTC, 1000)
        await wait_until(lambda: stream.state is StreamState.LIVE)
        # When the exchange goes quiet (connected, no messages)
        fake.go_silent(0.6)
        quiet_at = time.monotonic()
        fake.push_ticker(BTC, 1001)  # lost in the silence
        await wait_until(lambda: stream.state is StreamState.STALE)
        # Then it is stale after about stale_seconds, without reconnecting
        assert 0.25 <= time.monotonic() - quiet_at < 0.6
        assert stream.reconnects == 0
        await asyncio.sleep(0.35)
        fake.push_ticker(BTC, 1002)
        await wait_until(lambda: stream.state is StreamState.LIVE)
        assert [t.price for t in rec.ticks] == [Decimal("1000.0"), Decimal("1002.0")]
        assert rec.states[-3:] == [StreamState.LIVE, StreamState.STALE, StreamState.LIVE]


async def test_a_stream_silent_too_long_is_dropped_and_reconnected(fakes: tuple[FakeUpbit, FakeUpbitWebSocket]) -> None:
    _, fake = fakes
    rec = Recorder()
    async with running(public(fake, rec, stale_seconds=0.1, stale_reconnect_seconds=0.3)) as stream:
        await wait_until(lambda: bool(fake.current_subscriptions()))
        fake.push_ticker(BTC, 1000)
        fake.go_silent(0.5)
        await wait_until(lambda: stream.reconnects >= 1)
        assert StreamState.STALE in rec.states
        assert StreamState.DOWN in rec.states
        await asyncio.sleep(0.3)
        await wait_until(lambda: stream.state is StreamState.LIVE)  # the snapshot after reconnecting


async def test_set_symbols_resubscribes_on_the_same_connection_and_an_empty_set_turns_it_off(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    _, fake = fakes
    rec = Recorder()
    async with running(public(fake, rec)) as stream:
        await wait_until(lambda: bool(fake.current_subscriptions()))
        # When the watched markets change
        stream.set_symbols([ETH, BTC])
        await wait_until(lambda: len(fake.subscriptions) == 2)
        # Then a new subscription message went over the same connection
        assert fake.subscriptions[1].codes == (BTC, ETH)
        assert len(fake.connects) == 1
        fake.push_ticker(ETH, 4_500_000)
        await wait_until(lambda: any(t.symbol == ETH for t in rec.ticks))
        # When nothing is left to watch, the connection closes and the stream is off; symbols bring it back
        stream.set_symbols([])
        await wait_until(lambda: stream.state is StreamState.OFF and fake.clients == 0)
        stream.set_symbols([BTC])
        await wait_until(lambda: fake.clients == 1 and len(fake.subscriptions) == 3)


async def test_a_stream_with_nothing_to_watch_stays_off_without_connecting(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    _, fake = fakes
    rec = Recorder()
    async with running(public(fake, rec, symbols=())):
        await asyncio.sleep(0.2)
        assert fake.connect_attempts == []
        assert rec.states == []


# --- limits ---------------------------------------------------------------------------------------------


async def test_the_fake_refuses_the_sixth_connect_in_a_second_with_http_429(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    _, fake = fakes
    statuses: list[int] = []
    for _ in range(6):
        try:
            async with connect(fake.url, proxy=None):
                statuses.append(101)
        except InvalidStatus as exc:
            statuses.append(exc.response.status_code)
    assert statuses == [101] * 5 + [429]
    assert fake.refused_connects == 1


async def test_the_fake_answers_too_many_messages_with_an_error_and_a_close(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    _, fake = fakes
    async with connect(fake.url, proxy=None) as ws:
        for _ in range(6):
            await ws.send("PING")
        answers = [json.loads(await ws.recv()) for _ in range(6)]
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert answers[:5] == [{"status": "UP"}] * 5
    assert answers[5]["error"]["name"] == "TOO_MANY_REQUESTS"
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


async def test_the_client_keeps_under_five_connects_a_second_even_with_a_tiny_backoff(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    _, fake = fakes
    rec = Recorder()
    # Given a stream that reconnects almost at once whenever it hears nothing for 30 ms
    stream = public(
        fake,
        rec,
        stale_seconds=0.01,
        stale_reconnect_seconds=0.03,
        reconnect_base_seconds=0.001,
        reconnect_max_seconds=0.002,
    )
    fake.go_silent(10)
    async with running(stream):
        await asyncio.sleep(2.2)
    # Then no second saw more than five handshakes, and the fake never had to refuse one
    times = fake.connect_attempts
    assert len(times) >= 10
    assert max(sum(1 for t in times if start <= t < start + 1.0) for start in times) <= 5
    assert fake.refused_connects == 0


async def test_the_client_paces_resubscriptions_under_five_messages_a_second(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    _, fake = fakes
    rec = Recorder()
    async with running(public(fake, rec)) as stream:
        await wait_until(lambda: bool(fake.current_subscriptions()))
        # When the symbols change eight times, each after the previous one went out
        for n in range(8):
            stream.set_symbols([BTC, f"KRW-C{n}"])
            await wait_until(lambda n=n: fake.subscriptions[-1].codes == (BTC, f"KRW-C{n}"), timeout=3)  # type: ignore[misc]
        # Then the fake saw nine messages, never more than five in a second, and never closed the connection
        stamps = [s.at for s in fake.subscriptions]
        assert len(stamps) == 9
        assert max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps) <= 5
        assert stream.reconnects == 0
        assert len(fake.connects) == 1


async def test_a_refused_handshake_waits_at_least_a_second(fakes: tuple[FakeUpbit, FakeUpbitWebSocket]) -> None:
    _, fake = fakes
    fake.connect_limit = 0  # every handshake is refused with 429
    rec = Recorder()
    async with running(public(fake, rec)) as stream:
        await wait_until(lambda: fake.refused_connects >= 2, timeout=5)
        gaps = [b - a for a, b in zip(fake.connect_attempts, fake.connect_attempts[1:], strict=False)]
        assert min(gaps) >= 0.95
        assert stream.last_error == "handshake refused: HTTP 429"
        assert StreamState.LIVE not in rec.states


# --- private stream -------------------------------------------------------------------------------------


async def test_the_private_stream_signs_its_handshake_and_gets_my_orders_from_fake_upbit_fills(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    rest, fake = fakes
    rest.set_balance("KRW", "1000000")
    rest.set_orderbook(BTC, asks=[(95_001_000, "0.001"), (95_002_000, "1")], bids=[(95_000_000, "1")])
    rec = Recorder()
    async with (
        running(private(rest, fake, rec)) as stream,
        UpbitClient(rest.base_url, rest.access_key, rest.secret_key) as client,
    ):
        await wait_until(lambda: stream.state is StreamState.LIVE)
        # Then the handshake carried a JWT with the access key and a nonce, and it subscribed myOrder + announcement
        assert fake.auth_claims[0]["access_key"] == rest.access_key
        assert fake.auth_claims[0]["nonce"]
        assert fake.subscriptions[0].types == {"myOrder": None, "announcement": None}
        # When a market buy walks two levels of the book
        await client.place_order(
            OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, "bot-buy-1", krw_total=Decimal("100000"))
        )
        await wait_until(lambda: len(rec.orders) >= 4)
        # Then the stream reports wait, two executions and the final state, all with our identifier
        states = [e.state for e in rec.orders]
        assert states[0] is OrderEventState.WAIT
        assert states[1:3] == [OrderEventState.TRADE] * 2
        assert states[-1].is_final
        assert {e.identifier for e in rec.orders} == {"bot-buy-1"}
        final = rec.orders[-1]
        assert final.executed_volume == sum((e.volume or 0 for e in rec.orders[1:3]), Decimal(0))
        assert final.executed_funds == Decimal(rest.order(identifier="bot-buy-1")["executed_funds"])  # type: ignore[index]


async def test_a_resting_limit_order_reports_its_fill_when_the_book_crosses_and_a_cancel(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    rest, fake = fakes
    rest.set_balance("KRW", "1000000")
    rest.set_orderbook(BTC, asks=[(96_000_000, "1")], bids=[(94_000_000, "1")])
    rec = Recorder()
    async with (
        running(private(rest, fake, rec)) as stream,
        UpbitClient(rest.base_url, rest.access_key, rest.secret_key) as client,
    ):
        await wait_until(lambda: stream.state is StreamState.LIVE)
        await client.place_order(
            OrderRequest(BTC, Side.BUY, OrderType.LIMIT, "rest-1", volume=Decimal("0.001"), price=Decimal("95000000"))
        )
        await client.place_order(
            OrderRequest(BTC, Side.BUY, OrderType.LIMIT, "rest-2", volume=Decimal("0.001"), price=Decimal("90000000"))
        )
        await client.cancel_order(identifier="rest-2")
        rest.set_orderbook(
            BTC, asks=[(95_000_000, "1")], bids=[(94_000_000, "1")]
        )  # crosses rest-1; settles rest-2's cancel
        await client.get_open_orders(BTC)
        await wait_until(
            lambda: any(e.identifier == "rest-2" and e.state is OrderEventState.CANCEL for e in rec.orders)
        )
        await wait_until(lambda: any(e.identifier == "rest-1" and e.state is OrderEventState.DONE for e in rec.orders))
        one = [e.state for e in rec.orders if e.identifier == "rest-1"]
        assert one == [OrderEventState.WAIT, OrderEventState.TRADE, OrderEventState.DONE]


async def test_pushed_my_orders_and_announcements_reach_the_callbacks(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    rest, fake = fakes
    rec = Recorder()
    async with running(private(rest, fake, rec)) as stream:
        await wait_until(lambda: stream.state is StreamState.LIVE)
        order = {
            "uuid": "u-9",
            "identifier": "x-9",
            "market": ETH,
            "side": "ask",
            "ord_type": "market",
            "state": "done",
            "volume": "0.1",
            "remaining_volume": "0",
            "executed_volume": "0.1",
            "executed_funds": "450000",
            "created_at": "2026-12-05T21:00:00+09:00",
        }
        assert fake.push_my_order(order) == 1
        assert fake.push_announcement("[거래] 코인(ABC) 거래지원 종료 안내", "trade") == 1
        await wait_until(lambda: len(rec.orders) == 1 and len(rec.notices) == 1)
        assert rec.orders[0].state is OrderEventState.DONE
        assert rec.orders[0].side == "ask"
        assert rec.notices[0].markets == ("KRW-ABC",)
        assert rec.notices[0].category is AnnouncementCategory.TRADE


async def test_a_bad_jwt_gets_invalid_auth_and_the_stream_never_goes_live(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    rest, fake = fakes
    rec = Recorder()
    stream = UpbitStream(
        fake.url,
        kind=StreamKind.PRIVATE,
        access_key=rest.access_key,
        secret_key="wrong-secret-0123456789-0123456789",
        on_state=rec.state,
        reconnect_max_seconds=5,
        reconnect_base_seconds=0.05,
    )
    async with running(stream):
        await wait_until(lambda: fake.auth_failures >= 1)
        await asyncio.sleep(0.7)
        # Then it was refused with Upbit's INVALID_AUTH, is down, and waits the full cap before trying again
        assert stream.last_error is not None
        assert "INVALID_AUTH" in stream.last_error
        assert StreamState.LIVE not in rec.states
        assert stream.state is StreamState.DOWN
        assert fake.auth_failures == 1


async def test_the_fake_refuses_a_private_connection_without_a_token(
    fakes: tuple[FakeUpbit, FakeUpbitWebSocket],
) -> None:
    _, fake = fakes
    async with connect(fake.private_url, proxy=None) as ws:
        answer = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert answer == {"error": {"name": "INVALID_AUTH", "message": "인증 정보가 올바르지 않습니다."}}


async def test_the_fake_checks_subscriptions_like_upbit(fakes: tuple[FakeUpbit, FakeUpbitWebSocket]) -> None:
    _, fake = fakes
    cases: list[tuple[str, str]] = [
        ("nope", "WRONG_FORMAT"),
        ('[{"type":"ticker","codes":["KRW-BTC"]}]', "NO_TICKET"),
        ('[{"ticket":"t"}]', "NO_TYPE"),
        ('[{"ticket":"t"},{"type":"ticker"}]', "NO_CODES"),
        ('[{"ticket":"t"},{"type":"myOrder"}]', "INVALID_PARAM"),
    ]
    for request, name in cases:
        async with connect(fake.url, proxy=None) as ws:
            await ws.send(request)
            assert json.loads(await ws.recv())["error"]["name"] == name
        await asyncio.sleep(0.25)  # stay under 5 connects a second


async def test_stop_during_backoff_returns_at_once() -> None:
    rec = Recorder()
    stream = UpbitStream(
        "ws://127.0.0.1:9/websocket/v1",
        symbols=[BTC],
        on_state=rec.state,
        reconnect_max_seconds=30,
        reconnect_base_seconds=20,
    )
    task = asyncio.create_task(stream.run())
    await wait_until(lambda: stream.state is StreamState.DOWN)
    started = time.monotonic()
    await stream.stop()
    await asyncio.wait_for(task, 2)
    assert time.monotonic() - started < 1
    assert stream.state is StreamState.OFF


def test_the_settings_choose_the_url_keys_stale_limit_and_reconnect_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the realtime settings and keys in the environment
    monkeypatch.setenv("UPBIT_WEBSOCKET_URL", "ws://127.0.0.1:1/websocket/v1")
    monkeypatch.setenv("REALTIME_STALE_SECONDS", "7")
    monkeypatch.setenv("REALTIME_RECONNECT_MAX_SECONDS", "12")
    monkeypatch.setenv("UPBIT_ACCESS_KEY", "ak")
    monkeypatch.setenv("UPBIT_SECRET_KEY", "sk")
    settings = load_settings(env_file=None)
    # When both streams are built from them
    public = UpbitStream.from_settings(settings, symbols=[BTC])
    private = UpbitStream.from_settings(settings, StreamKind.PRIVATE)
    # Then they use those values; the private one the same URL plus /private
    assert (public.url, public.stale_seconds, public.reconnect_max_seconds) == ("ws://127.0.0.1:1/websocket/v1", 7, 12)
    assert public.symbols == (BTC,)
    assert private.url == "ws://127.0.0.1:1/websocket/v1/private"
    monkeypatch.delenv("UPBIT_SECRET_KEY")
    with pytest.raises(ValueError, match="UPBIT_SECRET_KEY"):
        UpbitStream.from_settings(load_settings(env_file=None), StreamKind.PRIVATE)
