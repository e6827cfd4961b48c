"""The scheduler: job cadence, control through bot_config, heartbeat, the single-trader lock, SIGTERM,
and replay end to end (SQLite and PostgreSQL where a database is involved)."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.app.core import entrypoints
from backend.app.core.jobs import JobName, JobRunner, build_triggers
from backend.app.core.replay import ReplayOptions, max_drawdown_pct, run_replay
from backend.app.core.replay_driver import fire_times
from backend.app.core.scheduler import EXIT_LOCK_HELD, TradingScheduler
from backend.app.db.lock import SchedulerLock
from backend.app.db.migrations import upgrade_to_head
from backend.app.db.repositories.bot import BotRepository
from backend.app.models import (
    AIDecisionRow,
    OrderRow,
    PortfolioSnapshotRow,
    SchedulerLockRow,
    TradeRow,
    TradingCycleRow,
)
from backend.app.services.scheduler_metrics import SchedulerMetrics
from backend.app.services.trading_engine import TradingEngine
from src.backtesting.data_provider import HistoricalDataProvider
from src.config.env import PROJECT_ROOT
from src.config.settings import Settings, get_settings, load_settings
from src.config.system_groups import SchedulerConfig
from src.data.replay import ReplayMarketSource
from src.domain.fills import fill_price
from src.domain.modes import TradingMode
from src.domain.orders import Side
from src.exceptions import SchedulerLockHeld
from src.strategy.contract import history_bars
from src.trading.bot_control import DESIRED_STATE_KEY
from tests.fakes.fear_greed_server import FakeFearGreed
from tests.fakes.upbit_server import FakeUpbit
from tests.support.candles import make_candles
from tests.support.rows import count_rows
from tests.support.strategies import AlwaysBuy

SettingsFactory = Callable[..., Settings]
START = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture
async def replay_engine(db_engine: AsyncEngine, make_settings: SettingsFactory) -> AsyncIterator[TradingEngine]:
    """A replay-mode engine (no network) over synthetic candles, with a strategy that always buys."""
    settings = make_settings(MIN_TRADE_INTERVAL_HOURS="0", TRADING_SYMBOLS="KRW-BTC")
    candles = make_candles(START, 300, "1h", start_price=50_000_000, seed=2)
    source = ReplayMarketSource({"KRW-BTC": {"1h": candles}}, start=START + timedelta(hours=300))
    engine = await TradingEngine.create(
        settings, db_engine, mode=TradingMode.REPLAY, market_source=source, strategy=AlwaysBuy(), quick_filter=None
    )
    yield engine
    await engine.aclose()


# --- cadence ---------------------------------------------------------------------------------------------
def test_jobs_fire_on_the_configured_cadence_in_a_fixed_order() -> None:
    """Given the default schedule, one UTC day has 24 cycles, 96 position checks, 24 snapshots and one
    report at 09:00 KST (00:00 UTC); jobs due together run exits first, then the cycle, snapshot, report."""
    config = SchedulerConfig(_env_file=None)
    day = datetime(2023, 12, 1, tzinfo=UTC)

    schedule = fire_times(build_triggers(config), day, day + timedelta(days=1))

    jobs = [job for _, due in schedule for job in due]
    assert jobs.count(JobName.TRADING) == 24
    assert jobs.count(JobName.POSITIONS) == 96
    assert jobs.count(JobName.SNAPSHOT) == 24
    assert jobs.count(JobName.DAILY_REPORT) == 1
    assert schedule[0] == (day, [JobName.POSITIONS, JobName.TRADING, JobName.SNAPSHOT, JobName.DAILY_REPORT])
    assert schedule[1] == (day + timedelta(minutes=15), [JobName.POSITIONS])


def test_max_drawdown_is_the_deepest_fall_from_a_peak() -> None:
    assert max_drawdown_pct([Decimal(v) for v in ("100", "120", "90", "130", "117")]) == Decimal("25.00")


# --- control through bot_config --------------------------------------------------------------------------
async def test_paused_bot_places_no_new_orders_and_running_resumes(
    replay_engine: TradingEngine, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Given bot_config says paused, when the trading job runs, then a decision is recorded but no order;
    when it says running again, the next job buys."""
    bot = BotRepository(db_sessions)
    runner = JobRunner(replay_engine, instance="test", metrics=SchedulerMetrics())
    await bot.set_config(DESIRED_STATE_KEY, "paused", updated_by="test")

    await runner.run(JobName.TRADING)

    assert await count_rows(db_sessions, OrderRow) == 0
    assert await count_rows(db_sessions, AIDecisionRow) == 1
    heartbeat = await bot.get_heartbeat("test")
    assert heartbeat.state == "paused"
    assert heartbeat.last_run_at is not None

    await bot.set_config(DESIRED_STATE_KEY, "running", updated_by="test")
    await runner.run(JobName.TRADING)

    assert await count_rows(db_sessions, OrderRow) == 1
    assert (await bot.get_heartbeat("test")).state == "running"


async def test_an_operator_reset_request_ends_safe_mode_on_the_next_poll(
    replay_engine: TradingEngine, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Given safe mode blocks buys, when the operator requests a reset through bot_config (as the API does),
    then the scheduler's next control read ends it, announces it, and the next trading job buys."""
    bot = BotRepository(db_sessions)
    runner = JobRunner(replay_engine, instance="test", metrics=SchedulerMetrics())
    await replay_engine.pipeline.risk.enter_safe_mode(by="breaker", reason="daily loss")
    await runner.run(JobName.TRADING)
    assert await count_rows(db_sessions, OrderRow) == 0

    await bot.request_safe_mode_reset(by="api:admin", reason="checked the market")
    await runner.read_desired()

    assert not (await replay_engine.pipeline.risk.risk_state()).safe_mode
    await runner.run(JobName.TRADING)
    assert await count_rows(db_sessions, OrderRow) == 1


async def test_stopped_bot_skips_trading_and_exits_but_still_snapshots(
    replay_engine: TradingEngine, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot = BotRepository(db_sessions)
    runner = JobRunner(replay_engine, instance="test", metrics=SchedulerMetrics())
    await bot.set_config(DESIRED_STATE_KEY, "stopped", updated_by="test")

    for job in (JobName.TRADING, JobName.POSITIONS, JobName.SNAPSHOT):
        await runner.run(job)

    assert await count_rows(db_sessions, TradingCycleRow) == 0
    assert await count_rows(db_sessions, PortfolioSnapshotRow) == 1  # the snapshot job still runs
    assert runner.stats.skipped == {"trading_cycle": 1, "position_check": 1}
    assert (await bot.get_heartbeat("test")).state == "stopped"


async def test_a_failing_job_is_counted_and_written_to_the_heartbeat(
    replay_engine: TradingEngine, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    metrics = SchedulerMetrics()
    runner = JobRunner(replay_engine, instance="test", metrics=metrics)

    async def broken() -> None:
        raise RuntimeError("disk full")

    replay_engine.snapshot_job = broken  # type: ignore[method-assign]

    await runner.run(JobName.SNAPSHOT)

    heartbeat = await BotRepository(db_sessions).get_heartbeat("test")
    assert "disk full" in heartbeat.last_error
    assert metrics.registry.get_sample_value("scheduler_job_failure_total", {"job": "portfolio_snapshot"}) == 1


# --- the single-trader lock ------------------------------------------------------------------------------
async def test_only_one_of_two_schedulers_trades_an_account(
    replay_engine: TradingEngine, db_engine: AsyncEngine, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Given one scheduler running, when a second starts on the same account, then it refuses (exit code 3)
    without running any job; the first stops cleanly on request and releases the lock."""
    config = SchedulerConfig(_env_file=None)
    first = TradingScheduler(replay_engine, db_engine, config)
    second = TradingScheduler(replay_engine, db_engine, config)
    task = asyncio.create_task(first.run(handle_signals=False))
    await asyncio.wait_for(first.started.wait(), timeout=10)

    assert await second.run(handle_signals=False) == EXIT_LOCK_HELD
    assert second.runner.stats.runs == {}

    first.request_stop("test")
    assert await asyncio.wait_for(task, timeout=10) == 0
    assert (await BotRepository(db_sessions).get_heartbeat(config.instance_name)).state == "stopped"
    assert await count_rows(db_sessions, SchedulerLockRow) == 0


# --- replay end to end -----------------------------------------------------------------------------------
async def test_replay_runs_the_scheduler_jobs_and_writes_everything(
    database_url: str, db_sessions: async_sessionmaker[AsyncSession], make_settings: SettingsFactory
) -> None:
    """Given eight hours of bundled KRW-BTC candles around a known breakout that passes the quick filter, when
    replay runs the default strategy (rule_breakout, no AI), then cycles, rule decisions, orders, trades and
    snapshots are in the database and the summary agrees; every cycle read history_bars candles (the warm-up
    before --start is loaded), and the buy filled at the fill model's price of the decision bar's close."""
    settings = make_settings(TRADING_SYMBOLS="KRW-BTC")
    options = ReplayOptions(
        symbols=["KRW-BTC"],
        start=datetime(2023, 10, 5, 8, tzinfo=UTC),
        end=datetime(2023, 10, 5, 16, tzinfo=UTC),
        database_url=database_url,
    )

    summary = await run_replay(settings, options)

    assert summary.cycles == await count_rows(db_sessions, TradingCycleRow) == 8
    assert summary.cycle_errors == 0
    assert summary.decisions == {"rules": 8}
    assert summary.trades == await count_rows(db_sessions, TradeRow) >= 1
    assert summary.orders.get("filled", 0) == await count_rows(db_sessions, OrderRow)
    assert await count_rows(db_sessions, PortfolioSnapshotRow) == 8  # one per cycle; the hourly job adds none

    assert summary.jobs["position_check"] == 4 * 8
    assert summary.final_equity > 0
    assert summary.ai == "not used by the strategy"
    assert summary.strategy == "rule_breakout"

    async with db_sessions() as session:
        cycles = list(await session.scalars(select(TradingCycleRow).order_by(TradingCycleRow.id)))
        [buy] = list(await session.scalars(select(TradeRow).where(TradeRow.side == Side.BUY)))
    data = [next(stage for stage in cycle.stages if stage["stage"] == "data") for cycle in cycles]
    assert {stage["detail"]["candles"] for stage in data} == {history_bars(30, 3600)} == {970}
    assert data[0]["detail"]["last_candle"] == "2023-10-05T07:00:00+00:00"  # complete at the first moment, 08:00
    candles = HistoricalDataProvider(settings.market_data.backtest_data_dir).load_historical_data("KRW-BTC", "1h")
    filled_at = buy.created_at.replace(tzinfo=UTC) if buy.created_at.tzinfo is None else buy.created_at
    close = Decimal(str(candles.loc[pd.Timestamp(filled_at) - pd.Timedelta(hours=1), "close"]))
    assert buy.price == fill_price(close, Side.BUY, settings.backtest.slippage_pct, filled_at)


# --- processes: SIGTERM, two schedulers, command lines -------------------------------------------------------
def _env(db_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "UPBIT_", "TRADING_"))}
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{db_path}",
        TRADING_MODE="paper",
        SCHEDULER_METRICS_PORT="0",
        SCHEDULER_CONTROL_POLL_SECONDS="0.5",
        LOG_FORMAT="json",
        PYTHONPATH=str(PROJECT_ROOT),
        **extra,
    )
    return env


def _state(db_path: Path) -> str | None:
    with sqlite3.connect(db_path) as connection:
        row = connection.execute("SELECT state FROM bot_state").fetchone()
    return None if row is None else row[0]


def _wait_for(predicate: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


@pytest.mark.integration
def test_two_schedulers_started_at_once_only_one_trades_and_sigterm_stops_it_cleanly(tmp_path: Path) -> None:
    """Given two scheduler processes started in the same instant on one database, then exactly one takes the
    account (the other exits with code 3 naming the lock); on SIGTERM the one running exits 0, writes
    state stopped and frees the lock."""
    db_path = tmp_path / "scheduler.db"
    upgrade_to_head(f"sqlite+aiosqlite:///{db_path}")
    command = [sys.executable, str(PROJECT_ROOT / "scheduler_main.py")]
    processes = [
        subprocess.Popen(command, env=_env(db_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        _wait_for(lambda: any(p.poll() is not None for p in processes) and _state(db_path) == "running", 60)
        [loser] = [p for p in processes if p.poll() is not None]
        [winner] = [p for p in processes if p.poll() is None]
        assert loser.returncode == EXIT_LOCK_HELD
        assert "another scheduler holds the lock 'trading:paper'" in loser.stderr.read()

        winner.send_signal(signal.SIGTERM)
        assert winner.wait(timeout=30) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert _state(db_path) == "stopped"
    with sqlite3.connect(db_path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM scheduler_locks").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("entry", "args", "message"),
    [
        ("main", ["--mode", "sideways"], "invalid choice"),
        ("main", ["--symbols", "BTC-KRW"], "--symbols"),
        ("scheduler_main", ["--start", "2023-01-01"], "needs --replay"),
        ("scheduler_main", ["--replay", "--speed", "fast"], "--speed"),
    ],
)
def test_bad_arguments_give_one_clear_line_and_exit_2(
    entry: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = importlib.import_module(entry)

    try:
        code = module.main(args)
    except SystemExit as exit_:
        code = exit_.code

    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("entry", "args"), [("main", ["--mode", "live"]), ("scheduler_main", [])])
def test_trading_entry_points_refuse_live_mode_without_upbit_keys(
    entry: str, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given live mode and no Upbit keys
    monkeypatch.setenv("TRADING_MODE", "live")
    for name in ("UPBIT_ACCESS_KEY", "UPBIT_SECRET_KEY"):
        monkeypatch.setenv(name, "")
    get_settings.cache_clear()
    try:
        # When the scheduler or main.py starts
        code = importlib.import_module(entry).main(args)
    finally:
        get_settings.cache_clear()
    # Then it refuses with one clear line, before touching the database
    assert code == 2
    err = capsys.readouterr().err
    assert "requires UPBIT_ACCESS_KEY and UPBIT_SECRET_KEY" in err
    assert len(err.strip().splitlines()) == 1


def test_unmigrated_database_is_refused_with_the_command_that_fixes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    settings = load_settings(env_file=None)

    code = entrypoints.run(entrypoints.run_one_cycle(settings, TradingMode.PAPER, ["KRW-BTC"], dry_run=True))

    assert code == 1
    assert "make migrate" in capsys.readouterr().err


def test_scheduler_metrics_are_served_over_http() -> None:
    """Given SCHEDULER_METRICS_PORT > 0, the scheduler's own registry is served on /metrics, on loopback unless
    SCHEDULER_METRICS_HOST says otherwise, every sample labelled with its instance (``bot_instance``)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics = SchedulerMetrics()
    metrics.on_decision("rules", "hold", None)
    server = metrics.serve(port, load_settings(env_file=None).scheduler.metrics_host, instance="test")
    try:
        assert server.server_address[0] == "127.0.0.1"
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()

    assert 'ai_decisions_total{bot_instance="test",decision="hold",source="rules"} 1.0' in body
    for name in ("scheduler_job_duration_seconds", "bot_running", "trading_cycle_stage_duration_seconds"):
        assert name in body


async def test_real_scheduler_hands_out_jobs_due_together_in_the_replay_order(
    replay_engine: TradingEngine, db_engine: AsyncEngine
) -> None:
    """Given all four jobs due at the same instant under APScheduler, they run one at a time in JOB_ORDER
    (exits, cycle, snapshot, report): the same order replay uses."""
    scheduler = TradingScheduler(replay_engine, db_engine, SchedulerConfig(_env_file=None))
    ran: list[str] = []

    def recorder(name: str) -> Callable[..., object]:
        async def body(**_: object) -> None:
            ran.append(name)

        return body

    replay_engine.trading_job = recorder("trading_cycle")  # type: ignore[method-assign]
    replay_engine.position_job = recorder("position_check")  # type: ignore[method-assign]
    replay_engine.snapshot_job = recorder("portfolio_snapshot")  # type: ignore[method-assign]
    replay_engine.daily_report_job = recorder("daily_report")  # type: ignore[method-assign]
    task = asyncio.create_task(scheduler.run(handle_signals=False))
    await asyncio.wait_for(scheduler.started.wait(), timeout=10)
    moment = datetime.now(UTC) + timedelta(milliseconds=300)
    for job in scheduler.scheduler.get_jobs():
        if job.id != "control_poll":
            job.modify(next_run_time=moment)
    scheduler.scheduler.wakeup()
    for _ in range(100):
        if len(ran) == 4:
            break
        await asyncio.sleep(0.05)
    scheduler.request_stop("test")
    await asyncio.wait_for(task, timeout=10)

    assert ran == ["position_check", "trading_cycle", "portfolio_snapshot", "daily_report"]


async def test_a_dry_run_needs_no_lock_but_a_real_cycle_beside_a_scheduler_is_refused(
    make_settings: Callable[..., Settings],
    fake_upbit: FakeUpbit,
    fake_fear_greed: FakeFearGreed,
    db_engine: AsyncEngine,
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Given a scheduler trading the paper account (it holds the single-trader lock)
    fake_upbit.seed_demo()
    settings = make_settings(
        UPBIT_BASE_URL=fake_upbit.base_url, FEAR_GREED_URL=fake_fear_greed.url, TRADING_SYMBOLS="KRW-BTC"
    )
    async with SchedulerLock(db_engine, "trading:paper"):
        # When main.py --dry-run runs beside it, and then main.py without --dry-run
        dry = await entrypoints.run_one_cycle(settings, TradingMode.PAPER, ["KRW-BTC"], dry_run=True)
        with pytest.raises(SchedulerLockHeld):
            await entrypoints.run_one_cycle(settings, TradingMode.PAPER, ["KRW-BTC"], dry_run=False)
    # Then the dry run decided and recorded without the lock, and no order was written or sent
    assert dry == 0
    assert await count_rows(db_sessions, TradingCycleRow) == 1
    assert await count_rows(db_sessions, OrderRow) == 0
    assert fake_upbit.requests_to("/v1/orders", "POST") == []


def test_a_cycle_refused_by_the_lock_exits_with_the_schedulers_code_3(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a cycle whose account another scheduler holds
    async def refused() -> int:
        raise SchedulerLockHeld("another scheduler holds the lock 'trading:paper' (host:1:2:x)")

    # When main.py runs it
    code = entrypoints.run(refused())
    # Then it exits 3 with one line, as docs/SCHEDULER_GUIDE.md says
    assert code == EXIT_LOCK_HELD
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: another scheduler holds the lock 'trading:paper' (host:1:2:x)"
    ]
