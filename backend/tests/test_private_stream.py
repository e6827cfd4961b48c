"""Upbit's private stream end to end, on SQLite and PostgreSQL: the real ``UpbitStream`` against the fake
WebSocket (``myOrder`` pushed when the fake Upbit fills, announcements pushed by the test), the consumer, the
engine and the scheduler. A myOrder event settles a pending order before any poll would, exactly once; an
announcement is recorded (``system_logs`` + an ``announcement`` event), alerted, and refreshes the market flags."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.app.core.jobs import JobName, JobRunner, job_id
from backend.app.core.scheduler import TradingScheduler
from backend.app.db.repositories.bot import BotRepository
from backend.app.models import EventRow, OrderRow, PositionFillRow, PositionRow, SystemLogRow, TradeRow, TradingCycleRow
from backend.app.services.private_stream import PrivateStream
from backend.app.services.scheduler_metrics import SchedulerMetrics
from backend.app.services.trading_engine import TradingEngine
from src.config.settings import Settings
from src.config.system_groups import SchedulerConfig
from src.domain.events import EventKind, EventType, NullNotifier
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus
from tests.fakes.fear_greed_server import FakeFearGreed
from tests.fakes.upbit_server import FakeUpbit
from tests.fakes.upbit_websocket import FakeUpbitWebSocket
from tests.support.rows import count_rows
from tests.support.strategies import AlwaysBuy

SettingsFactory = Callable[..., Settings]
EngineFactory = Callable[..., Awaitable[TradingEngine]]
Sessions = async_sessionmaker[AsyncSession]
SYMBOL = "KRW-BTC"


@pytest.fixture
async def fake_ws(fake_upbit: FakeUpbit) -> AsyncIterator[FakeUpbitWebSocket]:
    """The fake WebSocket, pushing a myOrder event for every order change of the fake Upbit."""
    async with FakeUpbitWebSocket(upbit=fake_upbit) as server:
        yield server


@pytest.fixture
async def engines(
    db_engine: AsyncEngine,
    make_settings: SettingsFactory,
    fake_upbit: FakeUpbit,
    fake_ws: FakeUpbitWebSocket,
    fake_fear_greed: FakeFearGreed,
) -> AsyncIterator[EngineFactory]:
    """``await engines(mode, keys=True, **env)``: an engine on the fakes that buys on every bar."""
    fake_upbit.seed_demo()
    built: list[TradingEngine] = []

    async def build(mode: TradingMode, *, keys: bool = True, **env: str) -> TradingEngine:
        secrets = {"UPBIT_ACCESS_KEY": fake_upbit.access_key, "UPBIT_SECRET_KEY": fake_upbit.secret_key}
        settings = make_settings(
            UPBIT_BASE_URL=fake_upbit.base_url,
            UPBIT_WEBSOCKET_URL=fake_ws.url,
            FEAR_GREED_URL=fake_fear_greed.url,
            MIN_TRADE_INTERVAL_HOURS="0",
            TRADING_SYMBOLS=SYMBOL,
            AI_ENABLED="false",
            **(secrets if keys else {}),
            **env,
        )
        engine = await TradingEngine.create(
            settings, db_engine, mode=mode, notifier=NullNotifier(), strategy=AlwaysBuy(), quick_filter=None
        )
        built.append(engine)
        return engine

    yield build
    for engine in built:
        await engine.aclose()


async def rows(sessions: Sessions, model: type) -> list[Any]:
    async with sessions() as session:
        return list(await session.scalars(select(model).order_by(model.id)))


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def live_stream(engine: TradingEngine) -> None:
    async def live() -> bool:
        return engine.private_stream_status.startswith("live")

    await eventually(live)


def notified(engine: TradingEngine, kind: EventKind) -> list[Any]:
    assert isinstance(engine.notifier, NullNotifier)
    return [event for event in engine.notifier.events if event.kind is kind]


# --- myOrder ------------------------------------------------------------------------------------------------
async def test_my_order_settles_a_pending_order_before_any_poll_exactly_once(
    engines: EngineFactory, fake_upbit: FakeUpbit, fake_ws: FakeUpbitWebSocket, db_sessions: Sessions
) -> None:
    # Given a live engine with its private stream, and Upbit executing the next order but dropping the answer
    engine = await engines(TradingMode.LIVE)
    runner = JobRunner(engine, instance="test", metrics=SchedulerMetrics(), heartbeat=False)
    stream = PrivateStream(engine, lock=runner.work_lock, refresh=None)
    await engine.start_up()
    await stream.start()
    try:
        await live_stream(engine)
        fake_upbit.inject_drop_after_accept()
        # When the trading job buys: the job itself leaves the order pending (outcome unknown)
        await runner.run(JobName.TRADING)
        [cycle] = await rows(db_sessions, TradingCycleRow)
        [execution] = [stage for stage in cycle.stages if stage["stage"] == "execution"]
        assert [o["status"] for o in execution["detail"]["orders"]] == ["pending"]

        # Then Upbit's myOrder event settles it with no trading cycle, start-up or poll in between
        async def filled() -> bool:  # settled: the order, its trades and the position (three transactions)
            return bool(stream.consumer and stream.consumer.settled)

        await eventually(filled)
        [order] = await rows(db_sessions, OrderRow)
        exchange_order = fake_upbit.order(identifier=order.identifier)
        assert exchange_order is not None
        trades = await rows(db_sessions, TradeRow)
        assert {t.trade_id for t in trades} == {t["uuid"] for t in exchange_order["trades"]}
        [position] = await rows(db_sessions, PositionRow)
        assert position.amount == order.filled_amount
        assert await count_rows(db_sessions, PositionFillRow) == 1
        assert [r.status for r in stream.consumer.settled] == [OrderStatus.FILLED]  # type: ignore[union-attr]
        assert len(fake_upbit.requests_to("/v1/orders", "POST")) == 1

        # When the same final event arrives again and the polling reconciliation runs
        fake_ws.push_my_order(exchange_order)
        await stream.consumer.drain()  # type: ignore[union-attr]
        assert await engine.pipeline.reconcile() == []
        # Then nothing changes: one order, the same trades, one position marker, nothing sent again
        assert [r.status for r in stream.consumer.settled] == [OrderStatus.FILLED]  # type: ignore[union-attr]
        assert {t.trade_id for t in await rows(db_sessions, TradeRow)} == {t.trade_id for t in trades}
        assert await count_rows(db_sessions, PositionFillRow) == 1
        assert (await rows(db_sessions, PositionRow))[0].amount == order.filled_amount
        assert len(fake_upbit.requests_to("/v1/orders", "POST")) == 1
        assert len(fake_upbit.requests_to("/v1/orders/test", "POST")) == 1  # the first order in the market
    finally:
        await stream.stop()


async def test_an_event_for_an_order_still_being_placed_waits_for_its_own_settlement(
    engines: EngineFactory, fake_upbit: FakeUpbit, db_sessions: Sessions
) -> None:
    # Given a live engine whose private stream settles under a lock no job holds (an order placed outside the jobs,
    # as a real-time exit may be), and Upbit slow to answer the order's status polls
    engine = await engines(TradingMode.LIVE)
    stream = PrivateStream(engine, lock=asyncio.Lock(), refresh=None)
    await stream.start()
    try:
        await live_stream(engine)
        fake_upbit.inject_slow(0.5, times=3, method="GET", path="/v1/order")
        # When the order is placed: its final myOrder event arrives while the placing call still polls
        result = await engine.pipeline.trading.market_buy(SYMBOL, Decimal("10000"), reason="test", cycle_id=None)
        await asyncio.sleep(0.3)
        await stream.consumer.drain()  # type: ignore[union-attr]
        # Then the order was settled once, by its own call; the event found it settled
        assert result.status is OrderStatus.FILLED
        assert stream.consumer.settled == []  # type: ignore[union-attr]
        trades = [e for e in notified(engine, EventKind.TRADE_EXECUTED) if e.fields["identifier"] == result.identifier]
        assert len(trades) == 1
        assert await count_rows(db_sessions, PositionFillRow) == 1
    finally:
        await stream.stop()


async def test_my_order_events_for_orders_that_are_not_ours_change_nothing(
    engines: EngineFactory, fake_upbit: FakeUpbit, fake_ws: FakeUpbitWebSocket, db_sessions: Sessions
) -> None:
    # Given a live engine with its private stream
    engine = await engines(TradingMode.LIVE)
    stream = PrivateStream(engine, lock=asyncio.Lock(), refresh=None)
    await stream.start()
    try:
        await live_stream(engine)
        # When Upbit reports a final order placed by hand (an identifier we never wrote) and one without any
        for identifier in ("by-hand-1", None):
            order = {
                "uuid": f"u-{identifier}",
                "identifier": identifier,
                "market": SYMBOL,
                "side": "bid",
                "ord_type": "price",
                "state": "done",
                "price": "10000",
                "created_at": "2026-12-05T20:00:00+09:00",
                "executed_volume": "0.0001",
                "remaining_volume": "0",
                "executed_funds": "9500",
                "paid_fee": "4.75",
            }
            fake_ws.push_my_order(order)
        await asyncio.sleep(0.3)
        await stream.consumer.drain()  # type: ignore[union-attr]
        # Then nothing is settled or written, and the exchange is not asked
        assert stream.consumer.settled == []  # type: ignore[union-attr]
        assert await rows(db_sessions, OrderRow) == []
        assert fake_upbit.requests_to("/v1/order", "GET") == []
    finally:
        await stream.stop()


# --- announcements ------------------------------------------------------------------------------------------
async def test_an_announcement_is_recorded_alerted_and_refreshes_the_flags_in_the_scheduler(
    engines: EngineFactory,
    fake_upbit: FakeUpbit,
    fake_ws: FakeUpbitWebSocket,
    db_engine: AsyncEngine,
    db_sessions: Sessions,
) -> None:
    # Given the scheduler running in paper mode with keys (announcements only), flags read at start-up
    engine = await engines(TradingMode.PAPER)
    config = SchedulerConfig(_env_file=None)
    scheduler = TradingScheduler(engine, db_engine, config)
    task = asyncio.create_task(scheduler.run(handle_signals=False))
    try:
        await asyncio.wait_for(scheduler.started.wait(), timeout=10)
        await live_stream(engine)
        assert engine.private_stream_status == "live (announcements only)"
        assert set(fake_ws.current_subscriptions()[-1].types) == {"announcement"}
        job = scheduler.scheduler.get_job(job_id(JobName.MARKET_STATUS))
        assert job is not None
        assert job.trigger.interval.total_seconds() == engine.settings.realtime.market_status_refresh_minutes * 60
        reads = len(fake_upbit.requests_to("/v1/market/all"))
        # When Upbit flags a coin and announces it
        fake_upbit.set_market_event("KRW-ABC", caution=True)
        fake_ws.push_announcement("[거래] 에이비씨(ABC) 유의 종목 지정 안내", category="trade", uuid="notice-1")

        # Then the market flags are read again at once and the gate holds for KRW-ABC
        async def refreshed() -> bool:
            return engine.pipeline.markets.entry_refusal("KRW-ABC") is not None

        await eventually(refreshed)
        assert len(fake_upbit.requests_to("/v1/market/all")) == reads + 1
        # And the notice is in system_logs and the events outbox, and alerted
        [line] = [row for row in await rows(db_sessions, SystemLogRow) if row.source == "upbit"]
        assert line.context["markets"] == ["KRW-ABC"]
        assert line.context["uuid"] == "notice-1"
        [event] = [row for row in await rows(db_sessions, EventRow) if row.type is EventType.ANNOUNCEMENT]
        assert event.symbol == "KRW-ABC"
        assert event.data["title"] == "[거래] 에이비씨(ABC) 유의 종목 지정 안내"
        [alert] = notified(engine, EventKind.ANNOUNCEMENT)
        assert alert.fields["category"] == "trade"
        # And the heartbeat reports the stream and the flags
        await scheduler.runner.write_heartbeat()
        heartbeat = await BotRepository(db_sessions).get_heartbeat(config.instance_name)
        assert heartbeat.details["private_stream"] == "live (announcements only)"
        assert heartbeat.details["market_flags"]["flagged"] == {"KRW-ABC": "market_caution"}
        # When the same notice arrives again (a reconnect), then it is not recorded twice
        fake_ws.push_announcement("[거래] 에이비씨(ABC) 유의 종목 지정 안내", category="trade", uuid="notice-1")
        await asyncio.sleep(0.3)
        assert len(notified(engine, EventKind.ANNOUNCEMENT)) == 1
    finally:
        scheduler.request_stop("test")
        assert await asyncio.wait_for(task, timeout=15) == 0
    assert engine.private_stream_status.startswith("off")


async def test_a_maintenance_notice_makes_the_next_order_test_its_market_again(
    engines: EngineFactory, fake_upbit: FakeUpbit, fake_ws: FakeUpbitWebSocket
) -> None:
    # Given a live engine whose first order in KRW-BTC passed the test order
    engine = await engines(TradingMode.LIVE)
    runner = JobRunner(engine, instance="test", metrics=SchedulerMetrics(), heartbeat=False)
    refreshed: list[int] = []

    async def refresh() -> None:
        refreshed.append(1)

    stream = PrivateStream(engine, lock=runner.work_lock, refresh=refresh)
    await engine.start_up()
    await stream.start()
    try:
        await live_stream(engine)
        await runner.run(JobName.TRADING)
        preflight = engine.pipeline.trading.preflight
        assert preflight is not None
        assert not preflight.needs_test(SYMBOL)
        # When Upbit announces a maintenance
        fake_ws.push_announcement("[점검] 업비트 서버 점검 안내", category="maintenance")

        # Then the next order in every market is tested again, and the flags were refreshed
        async def reset() -> bool:
            return preflight.needs_test(SYMBOL) and refreshed == [1]

        await eventually(reset)
        [alert] = notified(engine, EventKind.ANNOUNCEMENT)
        assert alert.fields["maintenance"] is True
    finally:
        await stream.stop()


@pytest.mark.parametrize(
    ("mode", "keys", "env", "why"),
    [
        (TradingMode.PAPER, False, {}, "off: no UPBIT_ACCESS_KEY/UPBIT_SECRET_KEY"),
        (TradingMode.LIVE, True, {"UPBIT_PRIVATE_STREAM_ENABLED": "false"}, "off: UPBIT_PRIVATE_STREAM_ENABLED=false"),
    ],
    ids=["no-keys", "switched-off"],
)
async def test_the_private_stream_stays_off_and_says_why(
    engines: EngineFactory,
    fake_ws: FakeUpbitWebSocket,
    db_sessions: Sessions,
    mode: TradingMode,
    keys: bool,
    env: dict[str, str],
    why: str,
) -> None:
    engine = await engines(mode, keys=keys, **env)
    stream = PrivateStream(engine, lock=asyncio.Lock(), refresh=None)
    await stream.start()
    await stream.stop()
    assert engine.private_stream_status.startswith(why)
    assert fake_ws.connects == []
    [line] = [row for row in await rows(db_sessions, SystemLogRow) if row.message.startswith("private stream off")]
    assert line.level == "info"
