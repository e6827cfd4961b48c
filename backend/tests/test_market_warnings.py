"""Upbit's market flags as hard gates through the real engine and job runner, on SQLite and PostgreSQL: a coin
under caution or warning is not bought (the cycle records why), a held coin that becomes flagged gets
``MARKET_WARNING_ACTION`` (alert, tighten_stop, exit), and in live mode an order in a market Upbit reports
``market_offline`` (``POST /v1/orders/test``) is skipped with the reason, its row never left pending."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.app.core.jobs import JobName, JobRunner, build_triggers
from backend.app.models import AIDecisionRow, EventRow, OrderRow, PositionRow, SystemLogRow, TradeRow, TradingCycleRow
from backend.app.services.scheduler_metrics import SchedulerMetrics
from backend.app.services.trading_engine import TradingEngine
from src.config.settings import Settings
from src.config.system_groups import SchedulerConfig
from src.domain.events import EventKind, NullNotifier
from src.domain.exits import ExitReason
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus
from tests.fakes.fear_greed_server import FakeFearGreed
from tests.fakes.upbit_server import FakeUpbit
from tests.support.strategies import AlwaysBuy

SettingsFactory = Callable[..., Settings]
EngineFactory = Callable[..., Awaitable[TradingEngine]]
SYMBOL = "KRW-BTC"


@pytest.fixture
async def engines(
    db_engine: AsyncEngine, make_settings: SettingsFactory, fake_upbit: FakeUpbit, fake_fear_greed: FakeFearGreed
) -> AsyncIterator[EngineFactory]:
    """``await engines(mode, **env)``: an engine on the fake Upbit (live with its keys) that buys on every bar."""
    fake_upbit.seed_demo()
    built: list[TradingEngine] = []

    async def build(mode: TradingMode = TradingMode.PAPER, **env: str) -> TradingEngine:
        keys = {"UPBIT_ACCESS_KEY": fake_upbit.access_key, "UPBIT_SECRET_KEY": fake_upbit.secret_key}
        settings = make_settings(
            UPBIT_BASE_URL=fake_upbit.base_url,
            FEAR_GREED_URL=fake_fear_greed.url,
            MIN_TRADE_INTERVAL_HOURS="0",
            TRADING_SYMBOLS=SYMBOL,
            AI_ENABLED="false",
            **(keys if mode is TradingMode.LIVE else {}),
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


def runner_of(engine: TradingEngine) -> JobRunner:
    return JobRunner(engine, instance="test", metrics=SchedulerMetrics(), heartbeat=False)


async def rows(sessions: async_sessionmaker[AsyncSession], model: type) -> list:
    async with sessions() as session:
        return list(await session.scalars(select(model).order_by(model.id)))


def notified(engine: TradingEngine, kind: EventKind) -> list:
    assert isinstance(engine.notifier, NullNotifier)
    return [event for event in engine.notifier.events if event.kind is kind]


# --- the gate on new buys ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flag", "reason"), [({"caution": True}, "market_caution"), ({"warning": True}, "market_warning")]
)
async def test_a_flagged_coin_is_not_bought_and_the_cycle_records_why(
    engines: EngineFactory,
    fake_upbit: FakeUpbit,
    db_sessions: async_sessionmaker[AsyncSession],
    flag: dict[str, bool],
    reason: str,
) -> None:
    # Given Upbit flags KRW-BTC, and a strategy that wants to buy it
    fake_upbit.set_market_event(SYMBOL, **flag)
    engine = await engines()
    runner = runner_of(engine)
    await engine.start_up()  # reads the flags: the gate holds from the first cycle
    # When the trading job runs
    await runner.run(JobName.TRADING)
    # Then no order is written, the cycle is a vetoed buy, and both records name the flag
    assert await rows(db_sessions, OrderRow) == []
    [cycle] = await rows(db_sessions, TradingCycleRow)
    assert cycle.outcome == "buy_vetoed"
    [risk] = [stage for stage in cycle.stages if stage["stage"] == "risk"]
    assert risk["outcome"] == "buys_blocked"
    assert any(r.startswith(f"{reason}: Upbit flags KRW-BTC") for r in risk["detail"]["reasons"])
    [decision] = await rows(db_sessions, AIDecisionRow)
    assert any(r.startswith(f"risk: {reason}") for r in decision.override_reasons)
    # When Upbit lifts the flag and the market-status job runs, then the next cycle buys
    fake_upbit.set_market_event(SYMBOL)
    await runner.run(JobName.MARKET_STATUS)
    await runner.run(JobName.TRADING)
    [order] = await rows(db_sessions, OrderRow)
    assert order.status is OrderStatus.FILLED
    assert all(r.params == {"is_details": ["true"]} for r in fake_upbit.requests_to("/v1/market/all"))


def test_the_market_status_job_runs_every_market_status_refresh_minutes_but_not_in_replay() -> None:
    from src.config.trading_groups import RealtimeConfig

    config = SchedulerConfig(_env_file=None)
    realtime = RealtimeConfig(_env_file=None, MARKET_STATUS_REFRESH_MINUTES="7")
    triggers = build_triggers(config, realtime)
    assert triggers[JobName.MARKET_STATUS].interval.total_seconds() == 7 * 60  # type: ignore[attr-defined]
    assert JobName.MARKET_STATUS not in build_triggers(config)  # replay: no market flags


# --- held coins ---------------------------------------------------------------------------------------------
async def _hold_then_flag(engines: EngineFactory, fake_upbit: FakeUpbit, **env: str) -> tuple[TradingEngine, JobRunner]:
    engine = await engines(**env)
    runner = runner_of(engine)
    await engine.start_up()
    await runner.run(JobName.TRADING)
    assert [p.symbol for p in await engine.pipeline.positions.open_positions()] == [SYMBOL]
    fake_upbit.set_market_event(SYMBOL, warning=True)
    return engine, runner


async def test_a_held_coin_flagged_is_alerted_once_by_default_and_kept(
    engines: EngineFactory, fake_upbit: FakeUpbit, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given a held coin that Upbit now flags, and the default MARKET_WARNING_ACTION=alert
    engine, runner = await _hold_then_flag(engines, fake_upbit)
    assert engine.settings.realtime.market_warning_action.value == "alert"
    # When the market-status job runs twice
    await runner.run(JobName.MARKET_STATUS)
    await runner.run(JobName.MARKET_STATUS)
    # Then one alert (in both languages' catalogue) and one system_logs line; nothing sold, the stop untouched
    [alert] = notified(engine, EventKind.MARKET_WARNING)
    assert (alert.fields["symbol"], alert.fields["reason"], alert.fields["action"]) == (
        SYMBOL,
        "market_warning",
        "alert",
    )
    logs = [row for row in await rows(db_sessions, SystemLogRow) if row.message.startswith("held coin")]
    assert len(logs) == 1
    [position] = await engine.pipeline.positions.open_positions()
    assert position.stop_price is None
    assert [o.side.value for o in await rows(db_sessions, OrderRow)] == ["buy"]


async def test_a_held_coin_flagged_gets_its_stop_raised_never_lowered(
    engines: EngineFactory, fake_upbit: FakeUpbit
) -> None:
    # Given MARKET_WARNING_ACTION=tighten_stop with 2 % and a held coin that Upbit now flags, at 95,000,000
    engine, runner = await _hold_then_flag(
        engines, fake_upbit, MARKET_WARNING_ACTION="tighten_stop", MARKET_WARNING_STOP_PCT="2"
    )
    fake_upbit.set_ticker(SYMBOL, "95000000")
    # When the market-status job runs
    await runner.run(JobName.MARKET_STATUS)
    # Then the stop sits 2 % below the price
    [position] = await engine.pipeline.positions.open_positions()
    assert position.stop_price == Decimal("93100000")
    [alert] = notified(engine, EventKind.MARKET_WARNING)
    assert alert.fields["action"] == "tighten_stop"
    # When the price falls and the job runs again, then the stop is not moved down
    fake_upbit.set_ticker(SYMBOL, "94000000")
    await runner.run(JobName.MARKET_STATUS)
    [position] = await engine.pipeline.positions.open_positions()
    assert position.stop_price == Decimal("93100000")
    # When the price rises, then the stop follows it up
    fake_upbit.set_ticker(SYMBOL, "96000000")
    await runner.run(JobName.MARKET_STATUS)
    [position] = await engine.pipeline.positions.open_positions()
    assert position.stop_price == Decimal("94080000")
    assert len(notified(engine, EventKind.MARKET_WARNING)) == 1  # said once; each move is in system_logs
    # And the position job sells at that stop through the exit path
    fake_upbit.set_ticker(SYMBOL, "94000000")
    await runner.run(JobName.POSITIONS)
    assert await engine.pipeline.positions.open_positions() == []


async def test_a_held_coin_flagged_is_sold_through_the_exit_path_with_its_reason(
    engines: EngineFactory, fake_upbit: FakeUpbit, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given MARKET_WARNING_ACTION=exit and a held coin that Upbit now flags
    engine, runner = await _hold_then_flag(engines, fake_upbit, MARKET_WARNING_ACTION="exit")
    # When the market-status job runs (twice: the second finds nothing left to sell)
    await runner.run(JobName.MARKET_STATUS)
    await runner.run(JobName.MARKET_STATUS)
    # Then the position is closed once with the exit reason market_warning, on the order and its trades too
    [position] = await rows(db_sessions, PositionRow)
    assert position.exit_reason is ExitReason.MARKET_WARNING
    _buy, sell = await rows(db_sessions, OrderRow)
    assert (sell.side.value, sell.status, sell.exit_reason) == ("sell", OrderStatus.FILLED, ExitReason.MARKET_WARNING)
    assert sell.reason.startswith("exit: market_warning")
    assert {t.exit_reason for t in await rows(db_sessions, TradeRow) if t.side.value == "sell"} == {
        ExitReason.MARKET_WARNING
    }
    [alert] = notified(engine, EventKind.MARKET_WARNING)
    assert alert.fields["action"] == "exit"
    assert alert.fields["status"] == "filled"
    assert any(e.kind is EventKind.TRADE_EXECUTED and e.fields["side"] == "sell" for e in engine.notifier.events)  # type: ignore[attr-defined]
    exits = [e for e in await rows(db_sessions, EventRow) if e.type.value == "exit"]
    assert len(exits) == 1


async def test_a_stopped_bot_reads_the_flags_but_acts_on_no_held_coin(
    engines: EngineFactory, fake_upbit: FakeUpbit, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    from backend.app.db.repositories.bot import BotRepository
    from src.trading.bot_control import DESIRED_STATE_KEY

    engine, runner = await _hold_then_flag(engines, fake_upbit, MARKET_WARNING_ACTION="exit")
    await BotRepository(db_sessions).set_config(DESIRED_STATE_KEY, "stopped", updated_by="test")
    await runner.run(JobName.MARKET_STATUS)
    assert engine.pipeline.markets.entry_refusal(SYMBOL) is not None
    assert len(await engine.pipeline.positions.open_positions()) == 1
    assert notified(engine, EventKind.MARKET_WARNING) == []


# --- market_offline ------------------------------------------------------------------------------------------
async def test_an_order_in_a_market_offline_is_skipped_with_the_reason_and_nothing_left_pending(
    engines: EngineFactory, fake_upbit: FakeUpbit, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given live mode and KRW-BTC still offline after maintenance
    fake_upbit.set_market_offline(SYMBOL)
    engine = await engines(TradingMode.LIVE)
    runner = runner_of(engine)
    await engine.start_up()
    # When the cycle wants to buy
    await runner.run(JobName.TRADING)
    # Then Upbit got the test order but no order; our row is failed with the reason, and system_logs says so
    assert len(fake_upbit.requests_to("/v1/orders/test", "POST")) == 1
    assert fake_upbit.requests_to("/v1/orders", "POST") == []
    [order] = await rows(db_sessions, OrderRow)
    assert order.status is OrderStatus.FAILED
    assert "market_offline" in order.error_message
    [cycle] = await rows(db_sessions, TradingCycleRow)
    [execution] = [stage for stage in cycle.stages if stage["stage"] == "execution"]
    assert "market_offline" in execution["detail"]["orders"][0]["error"]
    assert any("market_offline" in row.message for row in await rows(db_sessions, SystemLogRow))
    assert await engine.pipeline.trading.repository.list_orders([OrderStatus.PENDING], TradingMode.LIVE) == []
    # When the market is back, then the next order is tested again, passes, and is placed; later ones are not tested
    fake_upbit.set_market_offline(SYMBOL, False)
    await runner.run(JobName.TRADING)
    assert len(fake_upbit.requests_to("/v1/orders/test", "POST")) == 2
    [post] = fake_upbit.requests_to("/v1/orders", "POST")
    assert "identifier" in post.json
    filled = [o for o in await rows(db_sessions, OrderRow) if o.status is OrderStatus.FILLED]
    assert [o.identifier for o in filled] == [post.json["identifier"]]
