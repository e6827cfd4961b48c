"""Replay: the scheduler's jobs and the whole pipeline on a simulated clock over historical candles.

The paper exchange fills against a book synthesised from the candles (``ReplayMarketSource``), the
clock jumps from one job fire time to the next (same triggers as the real scheduler, same job
functions, same order), and everything is written to the database like a live run: orders, trades,
AI decisions, snapshots, cycles, positions. By default the database is its own SQLite file
``data/replay.db``, recreated and migrated at every run (it is a simulation; the paper account in
``data/trading.db`` is never touched).

The strategy is the one the settings name (``TRADING_STRATEGY``...), built at start-up like the scheduler's.
Before ``--start`` the replay loads ``history_bars(QUICK_FILTER_LOOKBACK_DAYS)`` candles (the quick filter's
window plus the strategy's warm-up), exactly what the bot reads each cycle and what the backtest loads, so the
first cycle decides on the same candles as the backtest's first bar. The exchange quotes the fill model
(``ReplayMarketSource.from_settings``: best ask and bid = ``fill_price`` with ``BACKTEST_SLIPPAGE_PCT``).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.core.jobs import JobName, JobRunner, build_triggers
from backend.app.core.replay_driver import CandleTicks, drive_replay, fire_times
from backend.app.core.replay_progress import ReplayProgress
from backend.app.db.migrations import ensure_schema_current, upgrade_to_head
from backend.app.db.queries import portfolio, reports
from backend.app.db.repositories.bot import BotRepository
from backend.app.db.session import create_engine, session_factory
from backend.app.services.scheduler_metrics import SchedulerMetrics
from backend.app.services.trading_engine import TradingEngine
from src.ai.cache import JsonlDecisionCache
from src.backtesting.data_provider import HistoricalDataProvider
from src.config.env import PROJECT_ROOT
from src.config.runtime import RUNTIME_KEYS
from src.config.runtime_state import AppliedSettings, apply_requests, with_value
from src.config.settings import Settings
from src.data.collector import BTC_SYMBOL
from src.data.replay import ReplayMarketSource
from src.domain.modes import TradingMode
from src.domain.money import ZERO
from src.domain.timeframes import Timeframe
from src.exceptions import ConfigurationError, DataError
from src.strategy.contract import history_bars
from src.strategy.registry import strategy_from_settings
from src.trading.pipeline.context import CycleStatus
from src.utils.logger import get_logger

log = get_logger(__name__)

DEFAULT_REPLAY_DB = PROJECT_ROOT / "data" / "replay.db"
DEFAULT_REPLAY_DAYS = 30


@dataclass(slots=True)
class ReplayOptions:
    symbols: list[str]
    start: datetime | None = None
    end: datetime | None = None
    data_file: Path | None = None
    database_url: str | None = None
    speed: float | None = None  # simulated seconds per real second; None = as fast as possible
    duration: timedelta = timedelta(days=DEFAULT_REPLAY_DAYS)  # used when --start is not given
    progress: bool = False  # a progress bar on stderr (scheduler_main.py --replay; not for A/B instances)


@dataclass(slots=True)
class ReplaySummary:
    database: str
    start: datetime
    end: datetime
    symbols: list[str]
    strategy: str
    ai: str
    moments: int
    seconds: float
    jobs: dict[str, int]
    cycles: int
    cycle_errors: int
    decisions: dict[str, int]
    final_decisions: dict[str, int]
    orders: dict[str, int]
    trades: int
    buys: int
    sells: int
    fees_krw: Decimal
    realized_pnl_krw: Decimal
    start_equity: Decimal
    final_equity: Decimal
    max_drawdown_pct: Decimal
    exits: dict[str, int] = field(default_factory=dict)
    open_positions: list[str] = field(default_factory=list)
    ai_calls: dict[str, int] = field(default_factory=dict)  # requests that reached the model, by purpose
    ai_cost_usd: Decimal = ZERO

    @property
    def return_pct(self) -> Decimal:
        if self.start_equity <= 0:
            return ZERO
        return ((self.final_equity / self.start_equity - 1) * 100).quantize(Decimal("0.01"))


def _replay_url(options: ReplayOptions) -> tuple[str, bool]:
    """The database URL, and whether it is the default file that replay owns (and recreates)."""
    if options.database_url:
        return options.database_url, False
    return f"sqlite+aiosqlite:///{DEFAULT_REPLAY_DB}", True


def _prepare_database(url: str, owned: bool) -> None:
    if owned:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{DEFAULT_REPLAY_DB}{suffix}").unlink(missing_ok=True)
        DEFAULT_REPLAY_DB.parent.mkdir(parents=True, exist_ok=True)
        upgrade_to_head(url)


def load_replay_candles(
    settings: Settings, options: ReplayOptions, timeframe: str, *, also: list[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Bundled history (``BACKTEST_DATA_DIR``) of ``symbols`` and ``also`` (markets requested in ``bot_config``),
    or ``--data FILE`` (one symbol: the first of ``symbols``)."""
    provider = HistoricalDataProvider(settings.market_data.backtest_data_dir)
    if options.data_file is not None:
        if len(options.symbols) != 1:
            raise ConfigurationError("--data FILE holds one market: pass exactly one symbol with --symbols")
        return {options.symbols[0]: provider.load_file(options.data_file)}
    symbols = list(dict.fromkeys([*options.symbols, *(also or [])]))
    return {symbol: provider.load_historical_data(symbol, timeframe) for symbol in symbols}


async def _requested_symbols(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, options: ReplayOptions
) -> list[str]:
    """The markets ``bot_config`` asks for when the replay starts (the replay obeys run-time settings like the
    scheduler does, so their candles must be loaded too); none when the request is absent or refused."""
    stored = await BotRepository(sessions).get_configs(RUNTIME_KEYS)
    environment = with_value(settings, "trading.symbols", list(options.symbols))
    start = AppliedSettings.from_environment(environment, datetime.now(UTC))
    return list(apply_requests(start, stored, datetime.now(UTC)).settings.trading.symbols)


def correlation_context(settings: Settings, traded: dict[str, pd.DataFrame], timeframe: str) -> dict[str, pd.DataFrame]:
    """KRW-BTC candles for an altcoin-only replay (market data for the BTC correlation, never traded);
    empty when BTC is traded anyway or no bundled BTC candles exist."""
    if BTC_SYMBOL in traded:
        return {}
    try:
        provider = HistoricalDataProvider(settings.market_data.backtest_data_dir)
        return {BTC_SYMBOL: provider.load_historical_data(BTC_SYMBOL, timeframe)}
    except DataError:
        return {}


def warmup_bars(settings: Settings, timeframe: str) -> int:
    """Candles before the first simulated moment: what the bot reads each cycle (``history_bars``)."""
    return history_bars(settings.backtest.quick_filter_lookback_days, Timeframe(timeframe).seconds)


def replay_window(
    candles: dict[str, pd.DataFrame], options: ReplayOptions, timeframe: str, warmup: int
) -> tuple[datetime, datetime]:
    """``--start/--end``, or the last ``duration`` of the data all symbols share; the start moves to the first
    moment with ``warmup`` candles before it when the data begins later."""
    span = timedelta(seconds=Timeframe(timeframe).seconds)
    data_end = min(frame.index[-1] for frame in candles.values()).to_pydatetime() + span
    end = options.end or data_end
    start = options.start or end - options.duration
    if start >= end:
        raise ConfigurationError(f"--start {start.isoformat()} is not before --end {end.isoformat()}")
    first_usable = max(frame.index[min(warmup, len(frame) - 1)] for frame in candles.values()).to_pydatetime()
    if start < first_usable:
        log.warning("replay.start_moved", requested=start.isoformat(), start=first_usable.isoformat(), warmup=warmup)
        start = first_usable
    if start >= end:
        raise DataError(
            f"not enough candles before {end.isoformat()} for a replay ({warmup} bars of history needed: "
            "QUICK_FILTER_LOOKBACK_DAYS of candles plus the strategy's warm-up)"
        )
    return start.astimezone(UTC), end.astimezone(UTC)


def with_warmup(frame: pd.DataFrame, start: datetime, end: datetime, warmup: int, span: timedelta) -> pd.DataFrame:
    """The candles a replay from ``start`` to ``end`` needs: the last ``warmup`` candles complete at ``start``
    (counted in candles, as the bot requests them, so gaps in the data reach further back) and every one after."""
    complete = int(frame.index.searchsorted(pd.Timestamp(start) - span, side="right"))
    kept = frame.iloc[max(0, complete - warmup) :]
    return kept[kept.index < pd.Timestamp(end)]


async def run_replay(settings: Settings, options: ReplayOptions) -> ReplaySummary:
    strategy_from_settings(settings)  # a strategy that cannot be built: one ConfigurationError before anything runs
    timeframe = Timeframe.from_minutes(settings.trading.candle_interval_minutes)
    url, owned = _replay_url(options)
    await asyncio.to_thread(_prepare_database, url, owned)
    db_engine = create_engine(url)
    metrics_server = None
    try:
        await ensure_schema_current(db_engine)
        await _require_no_earlier_replay(session_factory(db_engine), url)
        requested = await _requested_symbols(session_factory(db_engine), settings, options)
        candles = load_replay_candles(settings, options, timeframe, also=requested)
        warmup = warmup_bars(settings, timeframe)
        start, end = replay_window(candles, options, timeframe, warmup)
        trimmed = {
            symbol: with_warmup(frame, start, end, warmup, timeframe_span(timeframe))
            for symbol, frame in {**correlation_context(settings, candles, timeframe), **candles}.items()
        }
        trimmed = {symbol: frame for symbol, frame in trimmed.items() if len(frame)}
        source = ReplayMarketSource.from_settings(
            settings, {s: {timeframe: f} for s, f in trimmed.items()}, start=start
        )
        metrics = SchedulerMetrics()
        metrics_server = metrics.serve(
            settings.scheduler.metrics_port, settings.scheduler.metrics_host, instance="replay"
        )
        engine = await TradingEngine.create(
            settings,
            db_engine,
            mode=TradingMode.REPLAY,
            symbols=list(options.symbols),
            market_source=source,
            metrics=metrics,
            instance="replay",
            ai_cache=JsonlDecisionCache(replay_ai_cache_path(settings)),
        )
        runner = JobRunner(engine, instance="replay", metrics=metrics, heartbeat=False)
        schedule = fire_times(build_triggers(settings.scheduler), start, end)
        # the real-time exits over the candles between the moments (REALTIME_EXITS_ENABLED, as the scheduler)
        feed = CandleTicks(source, engine.watcher) if settings.realtime.exits_enabled else None
        log.info(
            "replay.start",
            start=start.isoformat(),
            end=end.isoformat(),
            moments=len(schedule),
            database=url,
            realtime_exits=feed is not None,
        )
        started = time.perf_counter()
        try:
            await engine.start_up()
            with ReplayProgress(schedule) if options.progress else nullcontext() as progress:
                on_tick = progress.on_tick if progress is not None else None
                moments = await drive_replay(
                    runner, source.advance_to, schedule, speed=options.speed, on_tick=on_tick, feed=feed
                )
        finally:
            await engine.aclose()
        seconds = time.perf_counter() - started
        return await _summarise(
            session_factory(db_engine),
            database=_display_url(url),
            start=start,
            end=end,
            symbols=list(engine.symbols),
            strategy=engine.strategy_label,
            ai=_ai_label(engine),
            moments=moments,
            seconds=seconds,
            jobs=runner.stats.runs,
            start_equity=settings.trading.paper_starting_krw,
        )
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        await db_engine.dispose()


def _ai_label(engine: TradingEngine) -> str:
    if not engine.pipeline.analyzer.trades_with_ai:
        return "not used by the strategy"
    if engine.ai_available:
        return "enabled (asked on the candidate's entry bars)"
    return f"disabled: {engine.ai_off_reason}; candidate entries are held"


async def _require_no_earlier_replay(sessions: async_sessionmaker[AsyncSession], url: str) -> None:
    """A replay starts from a fresh account; on a database that already holds one, refuse (the default
    file is recreated at every run, so this only concerns ``--database-url``)."""
    async with sessions() as session:
        orders, positions = await reports.order_and_position_counts(session, TradingMode.REPLAY)
    if orders or positions:
        raise ConfigurationError(
            f"{_display_url(url)} already holds a replay ({orders} orders, {positions} positions); "
            "give --database-url a fresh, migrated database, or leave it out to use data/replay.db"
        )


def replay_ai_cache_path(settings: Settings) -> Path:
    """The AI answers cache shared with AI backtests: a replay's database is recreated at every run, so
    the answers are kept in this file and a repeated replay asks the model nothing it asked before."""
    return settings.market_data.backtest_data_dir / "ai_cache" / "decisions.jsonl"


def timeframe_span(timeframe: str) -> timedelta:
    return timedelta(seconds=Timeframe(timeframe).seconds)


def _display_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return str(parsed.database)
    return parsed.render_as_string(hide_password=True)


async def _summarise(sessions: async_sessionmaker[AsyncSession], **known: object) -> ReplaySummary:
    mode = TradingMode.REPLAY
    async with sessions() as session:
        cycles = await reports.cycles_by_status(session, mode)
        decisions = await reports.decisions_by_source(session)
        final_decisions = await reports.decisions_by_final(session)
        ai_calls, ai_cost_usd = await reports.model_calls(session)
        orders = await reports.orders_by_status(session, mode)
        trades = await reports.trade_sums(session, mode)
        equities = await portfolio.equity_curve(session, mode)
        exits = await reports.exits_by_reason(session, mode)
        open_positions = await reports.open_position_symbols(session, mode)
    start_equity = Decimal(str(known.pop("start_equity")))
    return ReplaySummary(
        **known,  # type: ignore[arg-type]
        cycles=sum(cycles.values()),
        cycle_errors=cycles.get(CycleStatus.ERROR, 0),
        decisions=decisions,
        final_decisions=final_decisions,
        orders=orders,
        trades=trades.trades,
        buys=trades.buys,
        sells=trades.sells,
        fees_krw=trades.fees_krw,
        realized_pnl_krw=trades.realized_pnl_krw,
        start_equity=start_equity,
        final_equity=equities[-1] if equities else start_equity,
        max_drawdown_pct=max_drawdown_pct([start_equity, *equities]),
        exits=exits,
        open_positions=open_positions,
        ai_calls=ai_calls,
        ai_cost_usd=ai_cost_usd,
    )


def max_drawdown_pct(equities: list[Decimal]) -> Decimal:
    """The deepest fall from a running peak, in percent (a positive number)."""
    peak = ZERO
    deepest = ZERO
    for value in equities:
        peak = max(peak, value)
        if peak > 0:
            deepest = max(deepest, (peak - value) / peak * 100)
    return deepest.quantize(Decimal("0.01"))


def summary_table_rows(summary: ReplaySummary) -> list[tuple[str, str]]:
    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "none"

    rate = f"{summary.moments / summary.seconds:,.0f} moments/s" if summary.seconds > 0 else "-"
    return [
        ("period (UTC)", f"{summary.start:%Y-%m-%d %H:%M} -> {summary.end:%Y-%m-%d %H:%M}"),
        ("symbols", ", ".join(summary.symbols)),
        ("strategy", summary.strategy),
        ("AI", summary.ai),
        ("scheduler moments", f"{summary.moments:,} in {summary.seconds:.1f} s ({rate})"),
        ("jobs run", counts(summary.jobs)),
        ("trading cycles", f"{summary.cycles:,} ({summary.cycle_errors} with errors)"),
        ("decisions by source", counts(summary.decisions)),
        ("AI model calls", f"{counts(summary.ai_calls)} (${summary.ai_cost_usd:.6f})"),
        ("final decisions", counts(summary.final_decisions)),
        ("orders", counts(summary.orders)),
        ("trades", f"{summary.trades} ({summary.buys} buys, {summary.sells} sells)"),
        ("fees", f"{summary.fees_krw:,.0f} KRW"),
        ("realised P&L", f"{summary.realized_pnl_krw:,.0f} KRW"),
        ("equity", f"{summary.start_equity:,.0f} -> {summary.final_equity:,.0f} KRW"),
        ("return", f"{summary.return_pct}%"),
        ("max drawdown", f"{summary.max_drawdown_pct}%"),
        ("exits by reason", counts(summary.exits)),
        ("open positions", ", ".join(summary.open_positions) or "none"),
        ("database", summary.database),
    ]


__all__ = [
    "DEFAULT_REPLAY_DB",
    "JobName",
    "ReplayOptions",
    "ReplaySummary",
    "max_drawdown_pct",
    "run_replay",
    "summary_table_rows",
]
