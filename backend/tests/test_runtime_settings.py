"""Run-time settings end to end: written through the API, applied by the scheduler from its next job, reported
back with its heartbeat (requested next to applied), refused when invalid. A replay engine (no network) runs the
scheduler's own job runner; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.app.core.jobs import JobName, JobRunner
from backend.app.core.replay import ReplayOptions, run_replay
from backend.app.core.scheduler import TradingScheduler
from backend.app.db.repositories.bot import BotRepository
from backend.app.models import AIDecisionRow, OrderRow, PositionRow, SystemLogRow, TradeRow, TradingCycleRow
from backend.app.services.scheduler_metrics import SchedulerMetrics
from backend.app.services.trading_engine import TradingEngine
from src.config.settings import Settings
from src.config.system_groups import SchedulerConfig
from src.data.replay import ReplayMarketSource
from src.domain.modes import TradingMode
from src.strategy.bundled import VolatilityBreakoutStrategy
from src.strategy.contract import Strategy
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.support.candles import make_candles
from tests.support.strategies import AlwaysBuy

Sessions = async_sessionmaker[AsyncSession]
SettingsFactory = Callable[..., Settings]
START = datetime(2024, 3, 1, tzinfo=UTC)
NOW = START + timedelta(hours=300)  # the replay clock at the first cycle
RELAXED_VALIDATOR = {"VALIDATOR_MAX_RSI": "100", "VALIDATOR_MAX_ATR_PCT": "100", "VALIDATOR_FAKEOUT_ADX": "0"}


def _falling_candles(seed: int, start_price: float) -> Any:
    """310 hourly candles; from the 301st on every price is 3% lower (visible from NOW + 2h)."""
    candles = make_candles(START, 310, "1h", start_price=start_price, seed=seed)
    later = candles.index >= NOW
    candles.loc[later, ["open", "high", "low", "close"]] *= 0.97
    return candles


@pytest.fixture
async def engines(db_engine: AsyncEngine, make_settings: SettingsFactory) -> AsyncIterator[Callable[..., Any]]:
    """``await engines(**env)`` → (replay engine over KRW-BTC and KRW-ETH candles whose strategy always buys,
    the scheduler's job runner for it, the replay clock)."""
    built: list[TradingEngine] = []

    async def build(
        strategy: Strategy | None = None, **env: str
    ) -> tuple[TradingEngine, JobRunner, ReplayMarketSource]:
        settings = make_settings(MIN_TRADE_INTERVAL_HOURS="0", **{"TRADING_SYMBOLS": "KRW-BTC", **env})
        candles = {"KRW-BTC": _falling_candles(2, 50_000_000), "KRW-ETH": _falling_candles(3, 4_000_000)}
        source = ReplayMarketSource({s: {"1h": c} for s, c in candles.items()}, start=NOW)
        # random candles would fail the backtest filter
        engine = await TradingEngine.create(
            settings,
            db_engine,
            mode=TradingMode.REPLAY,
            market_source=source,
            strategy=strategy or AlwaysBuy(),
            quick_filter=None,
        )
        built.append(engine)
        runner = JobRunner(engine, instance=settings.scheduler.instance_name, metrics=SchedulerMetrics())
        return engine, runner, source

    yield build
    for engine in built:
        await engine.aclose()


async def _put(client: httpx.AsyncClient, **values: Any) -> None:
    response = await client.put("/api/v1/bot/config", json={"values": values, "reason": "test"})
    assert response.status_code == 200, response.text


async def _config(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    return {entry["key"]: entry for entry in (await client.get("/api/v1/bot/config")).json()["entries"]}


async def _status_settings(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    return {entry["key"]: entry for entry in (await client.get("/api/v1/bot/status")).json()["settings"]}


async def _all(sessions: Sessions, row: Any) -> list[Any]:
    async with sessions() as session:
        return list(await session.scalars(select(row).order_by(row.id)))


# --- each kind of key changes what the next job does --------------------------------------------------------
async def test_symbols_from_the_api_are_the_markets_of_the_next_cycle(
    engines: Callable[..., Any], client: httpx.AsyncClient, db_sessions: Sessions
) -> None:
    """Given a scheduler started with TRADING_SYMBOLS=KRW-BTC, when the API sets trading.symbols to KRW-ETH, then
    the next trading cycle analyses KRW-ETH only, and the API reports KRW-ETH as applied, with since when."""
    _, runner, _ = await engines()
    await _put(client, **{"trading.symbols": ["KRW-ETH"]})

    await runner.run(JobName.TRADING)

    assert {row.symbol for row in await _all(db_sessions, AIDecisionRow)} == {"KRW-ETH"}
    entry = (await _config(client))["trading.symbols"]
    assert (entry["requested"], entry["applied"], entry["status"]) == (["KRW-ETH"], ["KRW-ETH"], "applied")
    assert entry["applied_since"] == NOW.isoformat().replace("+00:00", "Z")
    status = (await client.get("/api/v1/bot/status")).json()
    assert status["symbols"] == ["KRW-ETH"]
    assert {s["key"]: s["status"] for s in status["settings"]}["trading.symbols"] == "applied"


async def test_ai_switched_off_from_the_api_means_a_held_candidate_and_no_ai_call(
    engines: Callable[..., Any], client: httpx.AsyncClient, db_sessions: Sessions, fake_openai: FakeOpenAI
) -> None:
    """Given the ai strategy with a key (the adviser would say buy on the candidate's entry), when the API sets
    ai.enabled false, then the next cycle holds the candidate entry with the reason (never the rules in its
    place), and the model is never asked."""
    fake_openai.script(Behaviour.ok("buy", 90, "breakout"))
    _, runner, _ = await engines(
        OPENAI_API_KEY=fake_openai.api_key, OPENAI_BASE_URL=fake_openai.base_url, TRADING_STRATEGY="ai"
    )
    await _put(client, **{"ai.enabled": False})

    await runner.run(JobName.TRADING)

    [decision] = await _all(db_sessions, AIDecisionRow)
    assert (decision.source, decision.final_decision) == ("disabled", "hold")
    assert "AI is off" in decision.reason
    assert await _all(db_sessions, OrderRow) == []
    assert fake_openai.request_count == 0
    assert (await _config(client))["ai.enabled"]["applied"] is False


async def test_a_higher_minimum_confidence_turns_the_advisers_buy_into_a_hold(
    engines: Callable[..., Any], client: httpx.AsyncClient, db_sessions: Sessions, fake_openai: FakeOpenAI
) -> None:
    """Given the adviser says buy with confidence 70 (AI_MIN_CONFIDENCE 60 would buy), when the API sets
    ai.min_confidence 80, then the next cycle holds with the validator's reason and places no order."""
    fake_openai.script(Behaviour.ok("buy", 70, "breakout"))
    _, runner, _ = await engines(
        OPENAI_API_KEY=fake_openai.api_key,
        OPENAI_BASE_URL=fake_openai.base_url,
        TRADING_STRATEGY="ai",
        **RELAXED_VALIDATOR,
    )
    await _put(client, **{"ai.min_confidence": 80})

    await runner.run(JobName.TRADING)

    [decision] = await _all(db_sessions, AIDecisionRow)
    assert (decision.source, decision.decision, decision.final_decision) == ("ai", "buy", "hold")
    assert any("below minimum 80" in reason for reason in decision.override_reasons)
    assert await _all(db_sessions, OrderRow) == []


async def test_a_tighter_stop_loss_in_the_strategy_params_moves_the_stop_and_the_next_check_exits_there(
    engines: Callable[..., Any], client: httpx.AsyncClient, db_sessions: Sessions
) -> None:
    """Given a KRW-BTC position bought at NOW under the strategy's 5% stop and a price 3% lower two hours later,
    when the API sets strategy.params to a 2% stop, then the position's stop moves to 2% under the entry and
    the next position check sells at that level, the stop-loss named on the position, the order and the trade."""
    _, runner, market = await engines(AlwaysBuy(stop_loss_pct=5))
    await runner.run(JobName.TRADING)
    [position] = await _all(db_sessions, PositionRow)
    assert position.stop_price == (position.avg_entry_price * Decimal("0.95")).quantize(Decimal("1"))
    market.advance_to(NOW + timedelta(hours=2))
    await runner.run(JobName.POSITIONS)
    assert (await _all(db_sessions, PositionRow))[0].status == "open"  # 3% down: above the 5% stop

    # rule_breakout (TRADING_STRATEGY) with a 2% stop instead of its ATR exits
    await _put(client, **{"strategy.params": {"stop_loss_pct": 2, "stop_atr": 0, "target_atr": 0}})
    await runner.run(JobName.POSITIONS)

    [closed] = await _all(db_sessions, PositionRow)
    assert closed.status == "closed"
    assert closed.exit_reason == "stop_loss"
    assert closed.stop_price == (closed.avg_entry_price * Decimal("0.98")).quantize(Decimal("1"))
    sell = [order for order in await _all(db_sessions, OrderRow) if order.side.value == "sell"]
    assert [order.exit_reason for order in sell] == ["stop_loss"]
    assert [trade.exit_reason for trade in await _all(db_sessions, TradeRow) if trade.side.value == "sell"] == [
        "stop_loss"
    ]


async def test_a_time_out_from_the_strategy_params_sells_at_the_next_position_check(
    engines: Callable[..., Any], client: httpx.AsyncClient, db_sessions: Sessions
) -> None:
    """Given a KRW-BTC position bought at NOW by a strategy without a time-out, when the API switches to
    volatility_breakout with max_hold_hours 1 and the next position check runs two hours later, then the scheduler
    trades by that strategy's exits (the policy of the positions and of risk) and the position is sold by the
    time-out, time_out stored on the position, the order and the trade."""
    engine, runner, market = await engines()
    await runner.run(JobName.TRADING)
    market.advance_to(NOW + timedelta(hours=2))
    await runner.run(JobName.POSITIONS)
    assert (await _all(db_sessions, PositionRow))[0].status == "open"  # no exit rule yet

    await _put(client, **{"strategy.name": "volatility_breakout", "strategy.params": {"k": 0.6, "max_hold_hours": 1}})
    await runner.run(JobName.POSITIONS)

    expected = VolatilityBreakoutStrategy(k=0.6, max_hold_hours=1).exit_policy
    assert expected.max_hold_hours == 1
    assert engine.pipeline.positions.policy == expected == engine.pipeline.risk.policy
    [closed] = await _all(db_sessions, PositionRow)
    assert (closed.status, closed.exit_reason) == ("closed", "time_out")
    [sell] = [order for order in await _all(db_sessions, OrderRow) if order.side.value == "sell"]
    assert sell.exit_reason == "time_out"
    assert [trade.exit_reason for trade in await _all(db_sessions, TradeRow) if trade.side.value == "sell"] == [
        "time_out"
    ]
    entries = await _config(client)
    assert (entries["strategy.name"]["applied"], entries["strategy.name"]["status"]) == (
        "volatility_breakout",
        "applied",
    )
    assert entries["strategy.params"]["applied"] == {"k": 0.6, "max_hold_hours": 1}


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("risk.max_positions", 1, "max_positions"),
        ("risk.max_trades_per_day", 1, "max_trades_per_day"),
        ("risk.min_trade_interval_hours", 24, "min_trade_interval"),
    ],
)
async def test_a_tighter_limit_from_the_api_makes_risk_refuse_the_second_buy(
    engines: Callable[..., Any], client: httpx.AsyncClient, db_sessions: Sessions, key: str, value: int, rule: str
) -> None:
    """Given two markets the strategy buys (MAX_POSITIONS 3, MAX_TRADES_PER_DAY 5 and no spacing allow both),
    when the API tightens the limit, then the next cycle buys the first market and risk refuses the second by
    that rule."""
    _, runner, _ = await engines(TRADING_SYMBOLS="KRW-BTC,KRW-ETH")
    await _put(client, **{key: value})

    await runner.run(JobName.TRADING)

    assert [order.symbol for order in await _all(db_sessions, OrderRow)] == ["KRW-BTC"]
    [eth] = [cycle for cycle in await _all(db_sessions, TradingCycleRow) if cycle.symbol == "KRW-ETH"]
    assert rule in str(eth.stages)


async def test_a_smaller_position_cap_from_the_api_sizes_the_next_buy(
    engines: Callable[..., Any], client: httpx.AsyncClient, db_sessions: Sessions
) -> None:
    """Given equity of 10,000,000 KRW, when the API sets risk.max_position_pct 1, then the next buy spends at most
    100,000 KRW."""
    _, runner, _ = await engines()
    await _put(client, **{"risk.max_position_pct": 1})

    await runner.run(JobName.TRADING)

    [order] = await _all(db_sessions, OrderRow)
    assert Decimal("5000") <= order.executed_funds <= Decimal("100000")


async def test_a_held_coin_is_not_bought_again_and_an_old_request_to_add_to_it_is_rejected(
    engines: Callable[..., Any], client: httpx.AsyncClient, db_sessions: Sessions, fake_openai: FakeOpenAI
) -> None:
    """Given a held KRW-BTC position and the ai strategy whose candidate keeps its entry on (the adviser would keep
    saying buy), and a request an older version left in bot_config to switch adding to a position on, when the
    next cycle runs, then it still holds: the strategy buys only when flat, the adviser is asked only on flat entry
    bars (once here), and the scheduler rejects the removed keys with the reason."""
    fake_openai.script(*[Behaviour.ok("buy", 90, "breakout")] * 3)
    _, runner, source = await engines(
        OPENAI_API_KEY=fake_openai.api_key,
        OPENAI_BASE_URL=fake_openai.base_url,
        TRADING_STRATEGY="ai",
        **RELAXED_VALIDATOR,
    )
    await runner.run(JobName.TRADING)
    assert len(await _all(db_sessions, OrderRow)) == 1
    repository = BotRepository(db_sessions)
    await repository.set_config("risk.allow_add_to_position", True, updated_by="old version")
    await repository.set_config("risk.min_add_krw", "5000", updated_by="old version")

    source.advance_to(NOW + timedelta(hours=1))
    await runner.run(JobName.TRADING)

    assert [order.side.value for order in await _all(db_sessions, OrderRow)] == ["buy"]
    assert fake_openai.request_count == 1
    logs = {row.message: row.context for row in await _all(db_sessions, SystemLogRow) if row.source == "scheduler"}
    for key in ("risk.allow_add_to_position", "risk.min_add_krw"):
        assert logs[f"setting {key} rejected"]["reason"] == (
            f"{key} was removed: the strategy buys only when flat (one position per coin)"
        )


# --- requested vs applied: pending, rejected, kept ---------------------------------------------------------
async def test_a_request_is_pending_until_the_scheduler_takes_it_before_its_next_job(
    engines: Callable[..., Any], client: httpx.AsyncClient
) -> None:
    _, runner, _ = await engines()
    await runner.write_heartbeat()
    await _put(client, **{"risk.max_positions": 2})

    entry = (await _config(client))["risk.max_positions"]
    assert (entry["requested"], entry["applied"], entry["status"]) == (2, 3, "pending")
    assert "not yet applied" in entry["message"]

    await runner.run(JobName.SNAPSHOT)

    entry = (await _config(client))["risk.max_positions"]
    assert (entry["applied"], entry["status"], entry["message"]) == (2, "applied", None)


async def test_invalid_requests_are_reported_not_applied_and_the_previous_value_is_kept(
    engines: Callable[..., Any], client: httpx.AsyncClient, db_sessions: Sessions
) -> None:
    """Given a 20% take-profit applied through strategy.params, when bot_config then holds parameters the strategy
    does not have, a market in Greek capitals and a removed key (written by an older version or by hand), then
    the scheduler applies none of them: it keeps the 20% and KRW-BTC, and the API and system_logs report each as
    rejected with its reason."""
    engine, runner, _ = await engines()
    await _put(client, **{"strategy.params": {"take_profit_pct": 20}})
    await runner.run(JobName.SNAPSHOT)
    repository = BotRepository(db_sessions)
    await repository.set_config("strategy.params", {"take_profit_pct": 20, "kk": 1}, updated_by="old version")
    await repository.set_config("trading.symbols", ["KRW-\u0392\u03a4C"], updated_by="old version")
    await repository.set_config("risk.stop_loss_pct", "3", updated_by="old version")

    await runner.run(JobName.TRADING)

    assert engine.pipeline.positions.policy.take_profit_pct == 20
    assert engine.settings.strategy.params == {"take_profit_pct": 20}
    assert {row.symbol for row in await _all(db_sessions, AIDecisionRow)} == {"KRW-BTC"}
    for entries in (await _config(client), await _status_settings(client)):
        params, symbols = entries["strategy.params"], entries["trading.symbols"]
        assert (params["requested"], params["applied"], params["status"]) == (
            {"take_profit_pct": 20, "kk": 1},
            {"take_profit_pct": 20},
            "rejected",
        )
        assert "strategy rule_breakout has no parameter kk" in params["message"]
        assert (symbols["applied"], symbols["status"]) == (["KRW-BTC"], "rejected")
        assert "ASCII" in symbols["message"]
    logs = {row.message: row.context for row in await _all(db_sessions, SystemLogRow) if row.source == "scheduler"}
    assert "setting strategy.params rejected" in logs
    assert "setting trading.symbols rejected" in logs
    assert logs["setting risk.stop_loss_pct rejected"]["reason"] == (
        "risk.stop_loss_pct was removed: exits belong to the strategy; set stop_loss_pct in strategy.params"
    )


async def test_the_control_poll_leaves_a_running_job_its_settings(
    engines: Callable[..., Any], client: httpx.AsyncClient
) -> None:
    """Given a job holds the work lock (an order may be in flight), when the control poll sees a new request,
    then it does not apply it; the first poll after the job does."""
    engine, runner, _ = await engines()
    await _put(client, **{"trading.symbols": ["KRW-ETH"]})

    async with runner.work_lock:
        await runner.poll()
        assert engine.pipeline.symbols == ["KRW-BTC"]
    await runner.poll()

    assert engine.pipeline.symbols == ["KRW-ETH"]


# --- replay obeys bot_config like the scheduler ------------------------------------------------------------
async def test_replay_applies_the_settings_stored_in_its_database(
    database_url: str, db_sessions: Sessions, make_settings: SettingsFactory
) -> None:
    """Given bot_config of the replay's database asks for KRW-ETH (TRADING_SYMBOLS and --symbols say KRW-BTC),
    when the replay runs, then it loads ETH's candles and every cycle analyses KRW-ETH only, without errors."""
    settings = make_settings(TRADING_SYMBOLS="KRW-BTC")
    await BotRepository(db_sessions).set_config("trading.symbols", ["KRW-ETH"], updated_by="api-key")
    options = ReplayOptions(
        symbols=["KRW-BTC"],
        start=datetime(2023, 12, 2, 16, tzinfo=UTC),
        end=datetime(2023, 12, 2, 20, tzinfo=UTC),
        database_url=database_url,
    )

    summary = await run_replay(settings, options)

    assert summary.symbols == ["KRW-ETH"]
    assert summary.cycle_errors == 0
    assert {cycle.symbol for cycle in await _all(db_sessions, TradingCycleRow)} == {"KRW-ETH"}
    assert {row.symbol for row in await _all(db_sessions, AIDecisionRow)} == {"KRW-ETH"}


async def test_a_running_scheduler_applies_a_request_on_its_control_poll(
    engines: Callable[..., Any], client: httpx.AsyncClient, db_engine: AsyncEngine
) -> None:
    """Given the scheduler process running (lock, APScheduler, control poll every 0.1 s) and no job due, when the
    API changes the markets, then the control poll applies them and GET /bot/status reports them applied."""
    engine, _, _ = await engines()
    config = SchedulerConfig(_env_file=None, SCHEDULER_CONTROL_POLL_SECONDS="0.1")  # type: ignore[call-arg]
    scheduler = TradingScheduler(engine, db_engine, config)
    task = asyncio.create_task(scheduler.run(handle_signals=False))
    await asyncio.wait_for(scheduler.started.wait(), timeout=10)
    try:
        await _put(client, **{"trading.symbols": ["KRW-ETH"]})
        for _ in range(100):
            if (await _status_settings(client))["trading.symbols"]["status"] == "applied":
                break
            await asyncio.sleep(0.05)

        assert (await _status_settings(client))["trading.symbols"]["applied"] == ["KRW-ETH"]
        assert engine.pipeline.symbols == ["KRW-ETH"]
    finally:
        scheduler.request_stop("test")
        assert await asyncio.wait_for(task, timeout=10) == 0
