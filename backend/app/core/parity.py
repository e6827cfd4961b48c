"""Runs both sides of the parity report (``python backtest.py --parity``): the backtest, and the replay of the
same strategy over the same candles in a throw-away SQLite database, whose round trips are read back and compared
by ``src.backtesting.parity`` (docs/PARITY.md).

The backtest itself is handed in as a function (``backtest.py`` owns how a backtest is run from its flags); this
module owns the replay side and the comparison's inputs.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from backend.app.core.entrypoints import parse_time
from backend.app.core.replay import ReplayOptions, ReplaySummary, run_replay
from backend.app.db.migrations import upgrade_to_head
from backend.app.db.queries.round_trips import StoredRoundTrip, cycle_outcomes, round_trips
from backend.app.db.session import create_engine, session_factory
from src.backtesting.data_provider import HistoricalDataProvider
from src.backtesting.parity import ParityReport, RoundTrip, compare_round_trips, utc_moment
from src.config.settings import Settings
from src.domain.exits import ExitReason
from src.domain.modes import TradingMode
from src.domain.timeframes import Timeframe
from src.exceptions import ConfigurationError
from src.strategy.registry import strategy_from_settings

BacktestTrades = Callable[[Settings], Iterable[Mapping[str, Any]]]


@dataclass(slots=True)
class ParityOptions:
    strategy: str
    symbol: str
    start: datetime
    end: datetime
    params: dict[str, Any] = field(default_factory=dict)
    data_file: Path | None = None
    timeframe: str = "1h"  # the backtest's bars; must be the bot's (CANDLE_INTERVAL_MINUTES)


@dataclass(slots=True)
class ReplaySide:
    round_trips: list[RoundTrip]
    cycles: dict[datetime, str]
    summary: ReplaySummary


def settings_for(settings: Settings, strategy: str, params: Mapping[str, Any]) -> Settings:
    """The bot's settings trading ``strategy`` (``TRADING_STRATEGY``) with ``params`` over ``STRATEGY_PARAMS``
    when that is the configured strategy (the parameters in the settings belong to it), else ``params`` alone."""
    configured = settings.strategy.params if strategy == settings.strategy.name else {}
    chosen = settings.strategy.model_copy(update={"name": strategy, "params": {**configured, **params}})
    return settings.model_copy(update={"strategy": chosen})


def round_trip_of(stored: StoredRoundTrip) -> RoundTrip:
    held = stored.closed_at is None
    return RoundTrip(
        entry_at=utc_moment(stored.entry_at),
        entry_price=float(stored.avg_entry_price),
        exit_at=None if stored.closed_at is None else utc_moment(stored.closed_at),
        exit_price=None if held or stored.exit_price is None else float(stored.exit_price),
        exit_reason=ExitReason.END.value
        if held or stored.exit_reason is None
        else ExitReason(stored.exit_reason).value,
    )


async def replay_side(settings: Settings, options: ParityOptions, database: Path) -> ReplaySide:
    """Replay ``options`` into a fresh, migrated SQLite file at ``database`` and read its round trips.

    The replay runs without the real-time exits: the backtest checks exits at the position job's moments on the
    candle closes, and the comparison is of that model (the real-time path inside a candle is replay's alone)."""
    url = f"sqlite+aiosqlite:///{database}"
    await asyncio.to_thread(upgrade_to_head, url)
    realtime = settings.realtime.model_copy(update={"exits_enabled": False})
    summary = await run_replay(
        settings.model_copy(update={"realtime": realtime}),
        ReplayOptions(
            symbols=[options.symbol],
            start=options.start,
            end=options.end,
            data_file=options.data_file,
            database_url=url,
        ),
    )
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            stored = await round_trips(session, TradingMode.REPLAY, options.symbol)
            cycles = await cycle_outcomes(session, TradingMode.REPLAY, options.symbol)
    finally:
        await engine.dispose()
    return ReplaySide([round_trip_of(row) for row in stored], cycles, summary)


def entry_moments(settings: Settings, options: ParityOptions) -> set[datetime]:
    """The fill moments (bar close) of every entry signal the strategy gives up to ``end``, computed over all the
    candles: what both sides should buy at when nothing else (a held position, a risk rule) stands in the way.
    Not clipped to the window: a side that acts on a bar outside it is then told apart by its moment."""
    span = pd.Timedelta(seconds=Timeframe.from_minutes(settings.trading.candle_interval_minutes).seconds)
    provider = HistoricalDataProvider(settings.market_data.backtest_data_dir)
    if options.data_file is not None:
        candles = provider.load_file(options.data_file, end=options.end)
    else:
        timeframe = Timeframe.from_minutes(settings.trading.candle_interval_minutes)
        candles = provider.load_historical_data(options.symbol, timeframe, end=options.end)
    signals = strategy_from_settings(settings).generate_signals(candles)
    closes = signals.index[signals.entry] + span
    return {moment.to_pydatetime() for moment in closes}


def run_parity(settings: Settings, options: ParityOptions, backtest_trades: BacktestTrades) -> ParityReport:
    """The backtest (``backtest_trades``, given the bot's settings for the strategy) and the replay over the same
    window, compared trade by trade."""
    chosen = settings_for(settings, options.strategy, options.params)
    bot_timeframe = Timeframe.from_minutes(chosen.trading.candle_interval_minutes)
    if options.timeframe != bot_timeframe:
        raise ConfigurationError(
            f"--timeframe {options.timeframe}: the bot trades {bot_timeframe} candles (CANDLE_INTERVAL_MINUTES="
            f"{chosen.trading.candle_interval_minutes}); compare on those"
        )
    parameters = strategy_from_settings(chosen).parameters()
    backtest = [RoundTrip.from_backtest(record) for record in backtest_trades(chosen)]
    with tempfile.TemporaryDirectory(prefix="parity-") as folder:
        replay = asyncio.run(replay_side(chosen, options, Path(folder) / "replay.db"))
    return compare_round_trips(
        backtest,
        replay.round_trips,
        float(chosen.backtest.slippage_pct),
        replay_cycles=replay.cycles,
        entry_signals=entry_moments(chosen, options),
        window=(options.start, options.end),
        context={
            "strategy": options.strategy,
            "parameters": parameters,
            "symbol": options.symbol,
            "start": options.start.isoformat(),
            "end": options.end.isoformat(),
            "data_file": str(options.data_file) if options.data_file is not None else None,
            "replay": {
                "start": replay.summary.start.isoformat(),
                "end": replay.summary.end.isoformat(),
                "cycles": replay.summary.cycles,
                "cycle_errors": replay.summary.cycle_errors,
            },
        },
    )


def parse_window(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """``--start``/``--end`` of ``backtest.py --parity``: both required (the replay needs a window), UTC."""
    if start is None or end is None:
        raise ConfigurationError("--parity needs --start and --end (the window both the backtest and replay run)")
    first, last = parse_time(start, "--start"), parse_time(end, "--end")
    if first >= last:
        raise ConfigurationError(f"--start {start} is not before --end {end}")
    return first, last


def report_parity(
    settings: Settings,
    options: ParityOptions,
    backtest_trades: BacktestTrades,
    console: Console,
    json_out: Path | None = None,
) -> int:
    """Run, print and (``json_out``) write the parity report; the exit status: 0 identical, 1 different."""
    console.print(
        f"Parity: {options.strategy} on {options.data_file or options.symbol}, "
        f"{options.start:%Y-%m-%d %H:%M} .. {options.end:%Y-%m-%d %H:%M} UTC: backtest, then replay ...",
        soft_wrap=True,
    )
    report = run_parity(settings, options, backtest_trades)
    for number, line in enumerate(report.lines()):
        style = "" if number else ("green" if report.identical else "bold red")
        console.print(line, style=style or None, highlight=False, soft_wrap=True)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
    return 0 if report.identical else 1
