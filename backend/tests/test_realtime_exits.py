"""Real-time exits through the real scheduler: live mode on the fake Upbit (JWT, real orders), the real
``UpbitStream`` on the fake Upbit WebSocket (loopback), the database on SQLite and PostgreSQL.

A tick that crosses a level is sold within a second, exactly once (also when the connection drops right after
the crossing and the crossing is delivered again); the REST fallback takes over while the stream is down and
hands back without a duplicate; the trailing stop ratchets on ticks; paused exits, stopped does not; replay
feeds the same watcher from its candles."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.app.core import replay as replay_module
from backend.app.core.jobs import JobName, JobRunner
from backend.app.core.replay import ReplayOptions, run_replay
from backend.app.core.replay_driver import CandleTicks
from backend.app.core.scheduler import TradingScheduler
from backend.app.db.repositories.bot import BotRepository
from backend.app.models import OrderRow, PositionRow, SystemLogRow
from backend.app.services.price_watch import PriceStream, PriceWatch, StreamFactory, upbit_stream
from backend.app.services.scheduler_metrics import SchedulerMetrics
from backend.app.services.trading_engine import TradingEngine
from src.config.settings import Settings
from src.data.replay import ReplayMarketSource
from src.domain.market_stream import StreamState, TickSource
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, Side
from src.trading.bot_control import DESIRED_STATE_KEY
from tests.fakes.fear_greed_server import FakeFearGreed
from tests.fakes.upbit_server import FakeUpbit
from tests.fakes.upbit_websocket import FakeUpbitWebSocket
from tests.support.candles import make_candles
from tests.support.strategies import AlwaysBuy

SettingsFactory = Callable[..., Settings]
SYMBOL = "KRW-BTC"
STOP = Decimal("94000000")


# --- the rig ---------------------------------------------------------------------------------------------
@dataclass
class Rig:
    engine: TradingEngine
    scheduler: TradingScheduler
    ws: FakeUpbitWebSocket
    fake: FakeUpbit
    sessions: async_sessionmaker[AsyncSession]

    async def push(self, price: int) -> None:
        """One ticker message from the fake WebSocket (the fake's thread sends it)."""
        await asyncio.to_thread(self.ws.push_ticker, SYMBOL, price)

    async def pushed(self, price: int) -> None:
        """``push``, and wait until the watcher has seen it."""
        seen = self.engine.watcher.ticks
        await self.push(price)
        await eventually(lambda: self.engine.watcher.ticks > seen, timeout=5.0)

    @property
    def watch(self) -> PriceWatch:
        assert self.scheduler.price_watch is not None
        return self.scheduler.price_watch

    def sells(self) -> list[Any]:
        return [r for r in self.fake.requests_to("/v1/orders", "POST") if r.json and r.json.get("side") == "ask"]

    def ticker_polls(self) -> int:
        return len(self.fake.requests_to("/v1/ticker", "GET"))

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.scheduler.metrics.registry.get_sample_value(name, labels or {})

    async def position(self) -> PositionRow:
        async with self.sessions() as session:
            return (await session.scalars(select(PositionRow).where(PositionRow.symbol == SYMBOL))).one()

    async def sell_rows(self) -> list[OrderRow]:
        async with self.sessions() as session:
            return list(await session.scalars(select(OrderRow).where(OrderRow.side == Side.SELL)))


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 5.0) -> float:
    """Seconds until ``check`` holds; fails after ``timeout``."""
    started = time.perf_counter()
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            pytest.fail(f"not within {timeout} s")
        await asyncio.sleep(0.005)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _open_position(engine: TradingEngine, **levels: Any) -> None:
    """Buy 1,000,000 KRW of BTC on the fake (a real order) and put the position's levels where the test wants."""
    result = await engine.pipeline.trading.market_buy(SYMBOL, Decimal("1000000"), reason="test entry", cycle_id=None)
    assert result.status is OrderStatus.FILLED
    store = engine.pipeline.positions.store
    position = await store.get_open_position(engine.mode, SYMBOL)
    assert position is not None
    changes = {"stop_price": STOP, "take_profit_price": None, "trailing_stop_pct": None, **levels}
    await store.update_position(replace(position, **changes))


@pytest.fixture
async def fake_ws(fake_upbit: FakeUpbit) -> AsyncIterator[FakeUpbitWebSocket]:
    """The fake WebSocket beside the fake Upbit, on a fixed port (a test may stop and start it again)."""
    ws = FakeUpbitWebSocket(upbit=fake_upbit, port=free_port())
    async with ws:
        yield ws


@pytest.fixture
async def rig(
    make_settings: SettingsFactory,
    db_engine: AsyncEngine,
    db_sessions: async_sessionmaker[AsyncSession],
    fake_upbit: FakeUpbit,
    fake_ws: FakeUpbitWebSocket,
    fake_fear_greed: FakeFearGreed,
) -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    """``await rig(env, **levels)``: a live scheduler on the fake Upbit holding one BTC position (stop at
    94,000,000 unless ``levels`` say otherwise; the last price 95,500,000), its stream connected and subscribed."""
    fake_upbit.seed_demo()
    fake_upbit.set_ticker(SYMBOL, 95_500_000)
    started: list[tuple[TradingScheduler, asyncio.Task[int], TradingEngine]] = []

    async def build(
        env: dict[str, str] | None = None,
        *,
        wait_stream: bool = True,
        price_stream: StreamFactory = upbit_stream,
        **levels: Any,
    ) -> Rig:
        settings = make_settings(
            **{
                "TRADING_MODE": "live",
                "TRADING_SYMBOLS": SYMBOL,
                "UPBIT_BASE_URL": fake_upbit.base_url,
                "UPBIT_ACCESS_KEY": fake_upbit.access_key,
                "UPBIT_SECRET_KEY": fake_upbit.secret_key,
                "UPBIT_WEBSOCKET_URL": fake_ws.url,
                "FEAR_GREED_URL": fake_fear_greed.url,
                "AI_ENABLED": "false",
                "REALTIME_STALE_SECONDS": "1",
                "REALTIME_FALLBACK_POLL_SECONDS": "0.2",
                "REALTIME_RECONNECT_MAX_SECONDS": "1",
                "SCHEDULER_CONTROL_POLL_SECONDS": "0.2",
                **(env or {}),
            }
        )
        engine = await TradingEngine.create(settings, db_engine, quick_filter=None)
        await _open_position(engine, **levels)
        scheduler = TradingScheduler(engine, db_engine, settings.scheduler, price_stream=price_stream)
        task = asyncio.create_task(scheduler.run(handle_signals=False))
        started.append((scheduler, task, engine))
        await asyncio.wait_for(scheduler.started.wait(), timeout=10)
        r = Rig(engine, scheduler, fake_ws, fake_upbit, db_sessions)
        if wait_stream:
            await eventually(lambda: any(SYMBOL in sub.codes for sub in fake_ws.current_subscriptions()))
            await eventually(lambda: r.watch.state is StreamState.LIVE)
        return r

    yield build
    for scheduler, task, engine in started:
        scheduler.request_stop("test")
        assert await asyncio.wait_for(task, timeout=20) == 0
        await engine.aclose()


# --- crossing on the stream ------------------------------------------------------------------------------
async def test_a_gap_through_the_stop_is_sold_within_a_second_exactly_once(rig: Callable[..., Awaitable[Rig]]) -> None:
    """Given a held position with its stop at 94,000,000 and the stream live, when a ticker gaps from above the
    stop to 93,000,000 and the connection drops right after it, then one sell reaches Upbit within a second of
    the crossing message; the reconnect (whose snapshot repeats the crossing price) and later ticks below the stop
    send nothing more; the position is closed as a stop-loss and the latency is measured."""
    r = await rig()
    await r.pushed(95_500_000)
    assert r.sells() == []

    sent = time.perf_counter()
    await r.push(93_000_000)
    await asyncio.to_thread(r.ws.disconnect_all)  # the connection drops right after the crossing
    await eventually(lambda: len(r.sells()) == 1, timeout=1.0)
    seconds = time.perf_counter() - sent

    await eventually(lambda: len(r.ws.connects) >= 2, timeout=5.0)  # reconnected and subscribed again
    await eventually(lambda: r.watch.state is StreamState.LIVE)
    for price in (93_000_000, 92_500_000):
        await r.push(price)
    await asyncio.sleep(0.3)
    assert len(r.sells()) == 1
    assert seconds < 1.0
    position = await r.position()
    assert position.status == "closed"
    assert position.exit_reason == "stop_loss"
    [row] = await r.sell_rows()
    assert row.status is OrderStatus.FILLED
    assert row.identifier == r.sells()[0].json["identifier"]
    await eventually(lambda: r.metric("realtime_exits_total", {"source": "stream", "outcome": "sold"}) == 1)
    assert r.metric("realtime_tick_to_order_seconds_count") == 1
    await eventually(lambda: (r.metric("realtime_stream_reconnects_total") or 0) >= 1)


async def test_paper_mode_exits_on_the_stream_through_the_same_path(rig: Callable[..., Awaitable[Rig]]) -> None:
    """Given paper mode (the paper account over Upbit's public prices, here the fakes), when the stream's ticker
    crosses the stop, then the paper position is sold once as a stop-loss; nothing reaches Upbit's order route."""
    r = await rig({"TRADING_MODE": "paper"})
    await r.push(93_000_000)

    async def closed() -> bool:
        return (await r.position()).status == "closed"

    await eventually(closed, timeout=1.0)
    await asyncio.sleep(0.2)
    [row] = await r.sell_rows()
    assert row.status is OrderStatus.FILLED
    assert row.mode is TradingMode.PAPER
    assert (await r.position()).exit_reason == "stop_loss"
    assert r.fake.requests_to("/v1/orders", "POST") == []


async def test_a_crossing_while_the_previous_sell_is_unsettled_sends_nothing(
    rig: Callable[..., Awaitable[Rig]],
) -> None:
    """Given Upbit executes the stop's sell but the answer is lost (the row stays pending), when the crossing
    arrives again, then reconciliation settles the first sell by its identifier and nothing is sent again."""
    r = await rig()
    r.fake.inject_drop_after_accept()
    await r.push(93_000_000)
    await eventually(lambda: len(r.sells()) == 1, timeout=1.0)
    await eventually(lambda: r.watch.exits == 1)
    assert [row.status for row in await r.sell_rows()] == [OrderStatus.PENDING]
    assert (await r.position()).status == "open"

    r.engine.watcher.retry_now()
    await r.pushed(92_000_000)
    await eventually(lambda: r.watch.exits == 2)

    assert len(r.sells()) == 1
    [row] = await r.sell_rows()
    assert row.status is OrderStatus.FILLED
    assert (await r.position()).status == "closed"


async def test_a_stream_that_dies_is_replaced_and_exits_go_on(rig: Callable[..., Awaitable[Rig]]) -> None:
    """Given the first stream's task ends with an unexpected error, the watch opens a new stream for the held coin
    and a crossing on it is sold."""
    built: list[PriceStream] = []

    class Broken:
        state = StreamState.CONNECTING
        reconnects = 0

        async def run(self) -> None:
            raise RuntimeError("a bug in the stream")

        def set_symbols(self, symbols: Any) -> None:
            pass

        async def stop(self) -> None:
            pass

    def factory(watch: PriceWatch) -> PriceStream:
        stream: PriceStream = Broken() if not built else upbit_stream(watch)
        built.append(stream)
        return stream

    r = await rig(price_stream=factory)
    assert len(built) == 2
    await r.push(93_000_000)
    await eventually(lambda: len(r.sells()) == 1, timeout=1.0)


# --- the REST fallback -----------------------------------------------------------------------------------
async def test_stream_down_the_rest_fallback_takes_over_and_stream_back_sends_no_duplicate(
    rig: Callable[..., Awaitable[Rig]], db_sessions: async_sessionmaker[AsyncSession], client: httpx.AsyncClient
) -> None:
    """Given REALTIME_STALE_SECONDS=1 and REALTIME_FALLBACK_POLL_SECONDS=0.2, when the WebSocket server goes away,
    then the REST ticker is polled within the stale time plus a poll, the status says so (metric, heartbeat, the
    API's bot status, system log), and a price below the stop on REST is sold; when the server is back (its
    snapshot repeating a price below the stop), nothing more is sent and the fallback stops."""
    r = await rig()
    await r.pushed(95_500_000)
    polls_before = r.ticker_polls()
    await asyncio.to_thread(r.ws.stop)
    down = time.perf_counter()
    await eventually(lambda: r.ticker_polls() > polls_before, timeout=3.0)
    assert time.perf_counter() - down < 1.0 + 0.2 + 0.5
    assert r.metric("realtime_fallback_active") == 1
    assert r.metric("realtime_stream_state", {"state": "live"}) == 0

    async def heartbeat_says_fallback() -> bool:
        beat = await BotRepository(db_sessions).get_heartbeat(r.scheduler.config.instance_name)
        realtime = (beat.details or {}).get("realtime") if beat is not None else None
        return bool(realtime and realtime["fallback"] and realtime["stream"] in ("down", "connecting"))

    await eventually(heartbeat_says_fallback, timeout=3.0)
    status = (await client.get("/api/v1/bot/status")).json()["realtime"]
    assert status["enabled"] is True
    assert status["fallback"] is True
    assert status["watched"] == [SYMBOL]
    assert status["stream"] in ("down", "connecting")

    r.fake.set_ticker(SYMBOL, 93_500_000)
    await eventually(lambda: len(r.sells()) == 1, timeout=5.0)
    await eventually(lambda: r.metric("realtime_exits_total", {"source": "rest", "outcome": "sold"}) == 1)

    await asyncio.to_thread(r.ws.start)
    await eventually(lambda: r.watch.state is StreamState.LIVE, timeout=5.0)
    await r.push(93_000_000)
    await asyncio.sleep(0.3)
    assert len(r.sells()) == 1
    assert r.metric("realtime_fallback_active") == 0
    async with db_sessions() as session:
        logs = list(await session.scalars(select(SystemLogRow.message)))
    assert "price stream unavailable: REST fallback polls the held coins" in logs


async def test_a_silent_stream_is_stale_the_rest_fallback_polls_and_stops_when_prices_return(
    rig: Callable[..., Awaitable[Rig]],
) -> None:
    """Given the stream stays connected but sends nothing (the fake goes silent), when REALTIME_STALE_SECONDS (1 s)
    pass, then the REST fallback polls; when tickers arrive again, it stops."""
    r = await rig()
    await r.pushed(95_500_000)
    polls_before = r.ticker_polls()
    r.ws.go_silent(2.5)
    silent = time.perf_counter()
    await eventually(lambda: r.ticker_polls() > polls_before, timeout=3.0)
    assert time.perf_counter() - silent < 1.0 + 0.2 + 0.5
    assert r.watch.fallback

    await eventually(lambda: not r.ws.silent, timeout=5.0)
    await r.push(95_400_000)
    await eventually(lambda: not r.watch.fallback, timeout=3.0)
    assert r.metric("realtime_fallback_active") == 0
    assert r.sells() == []


async def test_stream_back_within_the_stale_time_makes_no_rest_poll(rig: Callable[..., Awaitable[Rig]]) -> None:
    """Given REALTIME_STALE_SECONDS=3, when the connection drops and the stream reconnects at once (its snapshot
    and new tickers arriving), then no REST poll is made and the fallback never starts."""
    r = await rig({"REALTIME_STALE_SECONDS": "3"})
    await r.pushed(95_500_000)
    polls_before = r.ticker_polls()
    await asyncio.to_thread(r.ws.disconnect_all)
    await eventually(lambda: len(r.ws.connects) >= 2, timeout=3.0)
    for _ in range(5):
        await r.push(95_400_000)
        await asyncio.sleep(0.1)
    assert r.ticker_polls() == polls_before
    assert r.metric("realtime_fallback_active") == 0
    assert r.sells() == []


async def test_ticks_that_cross_nothing_cost_no_database_statement(
    rig: Callable[..., Awaitable[Rig]], db_engine: AsyncEngine
) -> None:
    """Given a held position and no job or poll due, when twenty tickers above the stop (some new highs) arrive,
    then the database sees no statement: the levels are in memory, the ratchet is written on the next refresh."""
    r = await rig({"SCHEDULER_CONTROL_POLL_SECONDS": "3600"})
    await r.pushed(95_500_000)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2])[:80])

    event.listen(db_engine.sync_engine, "before_cursor_execute", count)
    try:
        for step in range(20):
            await r.pushed(95_000_000 + 100_000 * step)
    finally:
        event.remove(db_engine.sync_engine, "before_cursor_execute", count)

    assert statements == []
    held = r.engine.watcher.position(SYMBOL)
    assert held is not None
    assert held.highest_price == Decimal("96900000")
    assert r.sells() == []


# --- the trailing stop -----------------------------------------------------------------------------------
async def test_the_trailing_stop_ratchets_on_ticks_and_sells_at_the_trailing_level(
    rig: Callable[..., Awaitable[Rig]],
) -> None:
    """Given a 2 % trailing stop (the fixed stop far below), when ticks rise to 100,000,000, then the highest
    price follows them (written to the position on the next refresh) and no sale happens; a tick at
    97,900,000 (below 98,000,000) sells as a trailing stop."""
    r = await rig(stop_price=Decimal("80000000"), trailing_stop_pct=Decimal("2"))
    for price in (96_000_000, 98_000_000, 100_000_000, 99_000_000):
        await r.pushed(price)
    held = r.engine.watcher.position(SYMBOL)
    assert held is not None
    assert held.highest_price == Decimal("100000000")

    async def written() -> bool:
        return (await r.position()).highest_price == Decimal("100000000")

    await eventually(written, timeout=3.0)  # the control poll refreshes the levels and writes the ratchet
    assert r.sells() == []

    await r.pushed(98_100_000)
    assert r.sells() == []
    await r.push(97_900_000)
    await eventually(lambda: len(r.sells()) == 1, timeout=1.0)
    await eventually(lambda: r.watch.exits == 1)
    assert (await r.position()).exit_reason == "trailing_stop"


# --- desired state ---------------------------------------------------------------------------------------
async def test_a_paused_bot_still_exits_and_a_stopped_bot_does_not(
    rig: Callable[..., Awaitable[Rig]], db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Given the operator stops the bot, when the stop is crossed, then nothing is sold (as the position job);
    when the bot is only paused, the next crossing is sold."""
    r = await rig()
    bot = BotRepository(db_sessions)
    await bot.set_config(DESIRED_STATE_KEY, "stopped", updated_by="test")
    await eventually(lambda: r.scheduler.runner.desired.value == "stopped", timeout=3.0)

    await r.pushed(93_000_000)
    await asyncio.sleep(0.3)
    assert r.sells() == []

    await bot.set_config(DESIRED_STATE_KEY, "paused", updated_by="test")
    await eventually(lambda: r.scheduler.runner.desired.value == "paused", timeout=3.0)
    await r.push(93_100_000)
    await eventually(lambda: len(r.sells()) == 1, timeout=1.0)


# --- switched off ----------------------------------------------------------------------------------------
async def test_realtime_exits_off_by_setting_start_no_stream(
    rig: Callable[..., Awaitable[Rig]], db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Given REALTIME_EXITS_ENABLED=false, the scheduler starts no price watch (no connection) and its heartbeat
    says so."""
    # (the private stream, which connects to the same fake, is off too: only the price stream is counted)
    r = await rig({"REALTIME_EXITS_ENABLED": "false", "UPBIT_PRIVATE_STREAM_ENABLED": "false"}, wait_stream=False)
    await asyncio.sleep(0.3)

    assert r.scheduler.price_watch is None
    assert r.ws.connect_attempts == []
    beat = await BotRepository(db_sessions).get_heartbeat(r.scheduler.config.instance_name)
    assert beat is not None
    assert beat.details["realtime"] == {"enabled": False, "stream": "off", "fallback": False, "watched": []}


# --- replay ----------------------------------------------------------------------------------------------
async def test_replay_feeds_the_watcher_from_candles_and_sells_at_the_stop(
    db_engine: AsyncEngine, db_sessions: async_sessionmaker[AsyncSession], make_settings: SettingsFactory
) -> None:
    """Given a replay holding a position whose stop lies inside the next candle's range, when the driver feeds that
    candle (open, low, high, close with the stop on the path), then the watcher sells at the stop (less the fill
    model's slippage) before any job runs, with ``TickSource.REPLAY``."""
    start = datetime(2024, 3, 1, tzinfo=UTC)
    candles = make_candles(start, 300, "1h", start_price=50_000_000, seed=2)
    moment = start + timedelta(hours=300 - 2)
    settings = make_settings(MIN_TRADE_INTERVAL_HOURS="0", TRADING_SYMBOLS=SYMBOL)
    source = ReplayMarketSource.from_settings(settings, {SYMBOL: {"1h": candles}}, start=moment)
    engine = await TradingEngine.create(
        settings, db_engine, mode=TradingMode.REPLAY, market_source=source, strategy=AlwaysBuy(), quick_filter=None
    )
    try:
        runner = JobRunner(engine, instance="replay", metrics=SchedulerMetrics(), heartbeat=False)
        await runner.run(JobName.TRADING)  # buys at the close
        nxt = candles.iloc[-2]
        low, open_ = Decimal(str(nxt["low"])), Decimal(str(nxt["open"]))
        stop = ((open_ + low) / 2).quantize(Decimal("1"))
        store = engine.pipeline.positions.store
        position = await store.get_open_position(TradingMode.REPLAY, SYMBOL)
        assert position is not None
        await store.update_position(replace(position, stop_price=stop, take_profit_price=None, trailing_stop_pct=None))
        await runner.read_control()  # a settings read refreshes the watcher, as after every job
        seen: list[TickSource] = []
        engine.watcher.on_exit = lambda attempt: seen.append(attempt.tick.source)
        feed = CandleTicks(source, engine.watcher)

        await feed(moment, moment + timedelta(hours=1))

        async with db_sessions() as session:
            closed = (await session.scalars(select(PositionRow))).one()
            [sell] = list(await session.scalars(select(OrderRow).where(OrderRow.side == Side.SELL)))
        assert closed.status == "closed"
        assert closed.exit_reason == "stop_loss"
        assert closed.exit_price is not None
        assert low < closed.exit_price <= stop
        assert closed.exit_price >= stop * Decimal("0.999")  # the stop less slippage, not the candle's low
        assert sell.status is OrderStatus.FILLED
        assert seen == [TickSource.REPLAY]
        assert feed.ticks <= 6
        assert engine.watcher.symbols == []
    finally:
        await engine.aclose()


@pytest.mark.parametrize("enabled", ["true", "false"])
async def test_replay_runs_its_candles_through_the_real_time_exits_unless_switched_off(
    enabled: str,
    database_url: str,
    db_sessions: async_sessionmaker[AsyncSession],  # a clean database (PostgreSQL: truncated)
    make_settings: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given eight hours of bundled KRW-BTC candles around a breakout the default strategy buys, when replay runs,
    then the candles after the buy are fed to the watcher as ticks (REALTIME_EXITS_ENABLED=true), and not at all
    with the setting off."""
    made: list[CandleTicks] = []

    class Counting(CandleTicks):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(replay_module, "CandleTicks", Counting)
    settings = make_settings(TRADING_SYMBOLS=SYMBOL, REALTIME_EXITS_ENABLED=enabled)
    options = ReplayOptions(
        symbols=[SYMBOL],
        start=datetime(2023, 10, 5, 8, tzinfo=UTC),
        end=datetime(2023, 10, 5, 16, tzinfo=UTC),
        database_url=database_url,
    )

    summary = await run_replay(settings, options)

    assert summary.buys >= 1
    if enabled == "true":
        [feed] = made
        assert feed.ticks >= 4  # at least one candle of a held position: open, low, high, close
    else:
        assert made == []
