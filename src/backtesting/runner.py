"""Runs one backtest for ``backtest.py``: load candles, build the strategy, simulate, report."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from src.backtesting.backtester import Backtester, BacktestResult, engine_config_from_settings, first_bar
from src.backtesting.data_provider import HistoricalDataProvider, find_gaps
from src.backtesting.engine import EngineConfig
from src.backtesting.performance import bar_seconds
from src.backtesting.recorded_decisions import DecisionLoader
from src.backtesting.report_html import write_html_report
from src.config.settings import Settings
from src.domain.timeframes import Timeframe
from src.exceptions import ConfigurationError, DataError
from src.strategy.contract import Strategy, history_bars
from src.strategy.registry import AI_STRATEGY, build_strategy

if TYPE_CHECKING:  # the AI stack (the model client among it) is imported only when the ai strategy runs
    from src.backtesting.ai_strategy import AIDecisionStats, AITradingStrategy


@dataclass(slots=True)
class BacktestRequest:
    """One run of ``backtest.py``. ``None`` everywhere means "as the bot's settings say"."""

    symbol: str = "KRW-BTC"
    timeframe: str = "1h"
    data_file: Path | None = None
    strategy: str | None = None
    strategy_params: dict[str, Any] = field(default_factory=dict)
    start: str | None = None
    end: str | None = None
    fee_rate: float | None = None
    slippage_pct: float | None = None
    capital: float | None = None
    position_fraction: float | None = None  # share of equity per entry (0..1]: fixed-fraction sizing
    tick_sizes: bool = True
    risk_rules: bool = True
    quick_filter: bool = True
    json_out: Path | None = None
    html_out: Path | None = None
    ai_cache: Path | None = None
    min_confidence: float | None = None
    show_trades: int = 10
    decisions_from: str | None = None  # the database whose recorded AI decisions are replayed (shown)
    decision_loader: DecisionLoader | None = None  # reads them (backtest.py injects it; SQL lives in backend)


def load_candles(request: BacktestRequest, settings: Settings) -> pd.DataFrame:
    """The candles before ``end`` (all of them: the start is applied by ``from_start``)."""
    provider = HistoricalDataProvider(settings.market_data.backtest_data_dir)
    if request.data_file is not None:
        return provider.load_file(request.data_file, None, request.end)
    return provider.load_historical_data(request.symbol, request.timeframe, None, request.end)


def acted_bars(df: pd.DataFrame, request: BacktestRequest) -> tuple[pd.DataFrame, pd.Timestamp | None]:
    """``--start``/``--end`` are moments of the bot's clock, as in ``scheduler_main.py --replay``: the bot acts at
    each bar's close in ``[start, end)``, so the bars acted on are those opening in ``[start - bar, end - bar)``.
    Returns the candles without the bars that close at or after ``end``, and the open time of the first bar acted
    on (None without a start)."""
    if df.empty:
        return df, None
    bar = pd.Timedelta(seconds=bar_seconds(df.index))
    if request.end is not None:
        df = df[df.index < _utc(request.end) - bar]
        if df.empty:
            raise DataError(f"no candle closes before --end {request.end}")
    if request.start is None:
        return df, None
    start = _utc(request.start) - bar
    if df.index[-1] < start:
        raise DataError(f"no candles at or after --start {request.start} (the data ends {df.index[-1].isoformat()})")
    return df, start


def from_start(df: pd.DataFrame, start: pd.Timestamp | None, warmup_bars: int) -> pd.DataFrame:
    """The candles from the first bar acted on, and the ``warmup_bars`` candles before it (indicator warm-up and the
    quick filter's window, as the bot reads them: ``history_bars``)."""
    if start is None or df.empty:
        return df
    first = first_bar(df.index, start)
    if first >= len(df):
        raise DataError(f"no candle closes at or after --start (the data ends {df.index[-1].isoformat()})")
    return df.iloc[max(0, first - warmup_bars) :]


def _utc(text: str) -> pd.Timestamp:
    stamp = pd.Timestamp(text)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def strategy_for(request: BacktestRequest, settings: Settings) -> Strategy:
    """``--strategy`` (default ``TRADING_STRATEGY``) with ``STRATEGY_PARAMS`` when it is the bot's strategy, then
    the parameters given on the command line."""
    config = settings.strategy
    name = request.strategy or config.name
    params = dict(config.params) if name == config.name else {}
    params.update(request.strategy_params)
    if name == AI_STRATEGY:
        candidate = build_strategy(config.candidate, params, config.path)
        return _ai_strategy(request, settings, candidate)
    return build_strategy(name, params, config.path)


def _ai_strategy(request: BacktestRequest, settings: Settings, rule: Strategy) -> Strategy:
    from src.ai.cache import JsonlDecisionCache
    from src.ai.service import AIService
    from src.backtesting.ai_backtest import ai_strategy_from_settings

    min_confidence = None if request.min_confidence is None else Decimal(str(request.min_confidence))
    capital = None if request.capital is None else Decimal(str(request.capital))
    if request.decision_loader is not None:  # the bot's recorded decisions, by candle: no model, no cache
        return ai_strategy_from_settings(
            settings,
            request.symbol,
            None,
            has_cache=False,
            candidate=rule,
            min_confidence=min_confidence,
            capital=capital,
            decision_loader=request.decision_loader,
            decisions_from=request.decisions_from,
        )
    cache_path = request.ai_cache or settings.market_data.backtest_data_dir / "ai_cache" / "decisions.jsonl"
    has_cache = cache_path.is_file()
    if not (settings.ai.enabled and settings.ai.has_key) and not has_cache:
        raise ConfigurationError(
            f"the ai strategy needs OPENAI_API_KEY or a decision cache; none at {cache_path} (use --ai-cache FILE)"
        )
    service = AIService(settings.ai, JsonlDecisionCache(cache_path))
    return ai_strategy_from_settings(
        settings,
        request.symbol,
        service,
        has_cache=has_cache,
        candidate=rule,
        min_confidence=min_confidence,
        capital=capital,
    )


def engine_config_for(request: BacktestRequest, settings: Settings) -> EngineConfig:
    """The bot's rules (``engine_config_from_settings``) with the command line's overrides."""
    config = engine_config_from_settings(settings)
    changes: dict[str, Any] = {"use_tick_sizes": request.tick_sizes, "quick_filter": request.quick_filter}
    if request.fee_rate is not None:
        changes["fee_rate"] = request.fee_rate
    if request.slippage_pct is not None:
        changes["slippage_pct"] = request.slippage_pct
    if request.capital is not None:
        changes["initial_capital"] = request.capital
    if request.position_fraction is not None:
        changes["position_sizing"] = "fixed"
        changes["position_fraction_pct"] = 100.0 * request.position_fraction
    config = replace(config, **changes)
    return config if request.risk_rules else config.without_risk_rules()


ProgressCallback = Callable[[float, str], None]


@dataclass(slots=True)
class Simulated:
    result: BacktestResult
    ai_stats: AIDecisionStats | None  # the ai strategy's model statistics
    strategy: Strategy | None = None  # the strategy that ran (the ai strategy keeps its decisions' outcomes)

    @property
    def extra(self) -> dict[str, Any] | None:
        """What the JSON report adds to the result's own fields."""
        return None if self.ai_stats is None else {"ai": self.ai_stats.to_dict()}


def simulate(request: BacktestRequest, settings: Settings, progress: ProgressCallback | None = None) -> Simulated:
    """The backtest itself, shared by ``backtest.py`` and the API's runs: candles, strategy, simulation.
    ``progress(share_done, stage)`` is told each stage (0..1)."""
    report = progress or (lambda _share, _stage: None)
    config = engine_config_for(request, settings)
    strategy = strategy_for(request, settings)
    source = request.data_file.name if request.data_file is not None else f"{request.symbol} {request.timeframe}"
    report(0.05, f"loading candles: {source}")
    df, start = acted_bars(load_candles(request, settings), request)
    df = from_start(df, start, history_bars(config.quick_filter_lookback_days, int(bar_seconds(df.index))))
    report(0.2, f"indicators and signals: {len(df):,} bars")
    ai = _ai_of(strategy)
    if ai is not None:

        def deciding(done: int, total: int) -> None:  # the slow part of an ai backtest: one decision per entry
            if done < total and done * 200 // total == (done - 1) * 200 // total:
                return  # every half percent is enough (the API's runs send each report through a pipe)
            report(0.2 + 0.3 * done / max(total, 1), f"AI decisions: {done:,} of {total:,} candidate entries")

        asyncio.run(ai.prepare(df, deciding))
    signals = strategy.generate_signals(df)
    rule_signals = None
    if ai is not None:  # the quick filter's rule stage judges the candidate strategy
        rule_signals = ai.rule_strategy.generate_signals(df)
    entries = int(signals.entry.sum())
    gate = f", quick filter at each of up to {entries:,} entry attempts" if config.quick_filter else ""
    report(0.5, f"simulating {len(df):,} bars{gate}")
    result = Backtester(config).run_signals(
        df, signals, strategy.name, strategy.parameters(), strategy.exit_policy, start, rule_signals
    )
    ai_stats = ai.stats if ai is not None else None
    report(0.9, f"writing reports: {int(result.metrics['trades']):,} trades")
    return Simulated(result, ai_stats, strategy)


def _ai_of(strategy: Strategy) -> AITradingStrategy | None:
    """The strategy as the ai strategy, or None. Its module is loaded only when an ai strategy was built, so a
    strategy cannot be one unless the module is in ``sys.modules``: a rule backtest never imports the AI stack."""
    module = sys.modules.get("src.backtesting.ai_strategy")
    if module is None or not isinstance(strategy, module.AITradingStrategy):
        return None
    return strategy


def run_backtest(request: BacktestRequest, settings: Settings, console: Console) -> BacktestResult:
    with _progress(console, enabled=console.is_terminal) as bar:
        task = bar.add_task("preparing", total=1.0)

        def advance(share: float, stage: str) -> None:
            bar.update(task, completed=share, description=stage)

        done = simulate(request, settings, advance)
        _write_outputs(request, done.result, done.extra)
        bar.update(task, completed=1.0)
    print_report(console, request, done.result)
    if done.ai_stats is not None:
        from src.backtesting.ai_backtest import print_ai_report

        print_ai_report(console, done.ai_stats)
    return done.result


def _progress(console: Console, enabled: bool) -> Progress:
    """On a terminal only (never in a pipe, a log or the JSON): the stage, with its counts, a bar and the time
    spent; the spinner and the clock move while a stage runs."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not enabled,
    )


def data_gaps(result: BacktestResult, shown: int = 5) -> dict[str, Any]:
    """The holes in the traded bars (candles are never filled in): how many, the bars they miss, the ``shown``
    longest, and the round trips held across one (their holding time includes the hole: the bot could not have
    seen a price there, and neither did the backtest)."""
    timeframe = result.metrics["timeframe"]
    gaps = find_gaps(result.candles, timeframe) if Timeframe.is_known(timeframe) else []
    across = 0
    if gaps and len(result.trades):
        entries = result.trades["entry_time"].to_numpy(dtype="datetime64[ns]")
        exits = result.trades["exit_time"].to_numpy(dtype="datetime64[ns]")
        held = np.zeros(len(entries), dtype=bool)
        for gap in gaps:
            held |= (entries <= gap.after.to_datetime64()) & (exits >= gap.before.to_datetime64())
        across = int(held.sum())
    longest = sorted(gaps, key=lambda g: g.missing_bars, reverse=True)[:shown]
    return {
        "count": len(gaps),
        "missing_bars": sum(g.missing_bars for g in gaps),
        "longest": [
            {"after": g.after.isoformat(), "before": g.before.isoformat(), "missing_bars": g.missing_bars}
            for g in longest
        ],
        "trades_held_across_a_gap": across,
    }


def _gaps_line(gaps: dict[str, Any], timeframe: str) -> str:
    if not gaps["count"]:
        return "Data gaps: none."
    longest = gaps["longest"][0]
    line = (
        f"Data gaps: {gaps['count']} ({gaps['missing_bars']:,} {timeframe} bars missing, not filled); the longest "
        f"{longest['after'][:16]} -> {longest['before'][:16]} ({longest['missing_bars']:,} bars)."
    )
    if gaps["trades_held_across_a_gap"]:
        line += f" {gaps['trades_held_across_a_gap']} trade(s) held across a gap: their holding time includes it."
    return line


def _write_outputs(request: BacktestRequest, result: BacktestResult, extra: dict[str, Any] | None = None) -> None:
    if request.json_out is not None:
        request.json_out.parent.mkdir(parents=True, exist_ok=True)
        summary = {**result.summary_dict(), "data_gaps": data_gaps(result), **(extra or {})}
        request.json_out.write_text(report_json(summary, result.trade_json_lines()), encoding="utf-8")
    if request.html_out is not None:
        asked = {
            "strategy": result.strategy,
            "params": result.parameters,
            "symbol": request.symbol,
            "timeframe": request.timeframe,
            "start": request.start,
            "end": request.end,
        }
        write_html_report(result, request.html_out, title=f"{request.symbol} {result.strategy}", request=asked)


def report_json(summary: dict[str, Any], trade_lines: list[str]) -> str:
    """The JSON report: ``summary`` indented as ``json.dumps(..., indent=2)`` writes it, then ``"trades"``, one
    trade a line (``trade_lines``: each trade's compact JSON). The same document as ``json.dumps({**summary,
    "trades": records}, indent=2)``, many times faster for 100,000 trades (indented output takes the pure-Python
    encoder) and easier to scan."""
    head = json.dumps(summary, indent=2, allow_nan=False)
    body = "[\n    " + ",\n    ".join(trade_lines) + "\n  ]" if trade_lines else "[]"
    return f'{head[:-2]},\n  "trades": {body}\n}}' if summary else f'{{\n  "trades": {body}\n}}'


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}{suffix}"
    return f"{value}{suffix}"


METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("Total return", "total_return_pct", "%"),
    ("CAGR", "cagr_pct", "%"),
    ("Buy & hold return", "buy_and_hold_return_pct", "%"),
    ("Final equity (KRW)", "final_equity", ""),
    ("Max drawdown", "max_drawdown_pct", "%"),
    ("Max drawdown duration (h)", "max_drawdown_duration_hours", ""),
    ("Volatility (ann.)", "volatility_pct", "%"),
    ("Sharpe", "sharpe", ""),
    ("Sortino", "sortino", ""),
    ("Calmar", "calmar", ""),
    ("Trades", "trades", ""),
    ("Win rate", "win_rate_pct", "%"),
    ("Profit factor", "profit_factor", ""),
    ("Expectancy / trade", "expectancy_pct", "%"),
    ("Average win", "avg_win_pct", "%"),
    ("Average loss", "avg_loss_pct", "%"),
    ("Average holding (h)", "avg_holding_hours", ""),
    ("Max holding (h)", "max_holding_hours", ""),
    ("Max consecutive losses", "max_consecutive_losses", ""),
    ("Exposure", "exposure_pct", "%"),
    ("Fees paid (KRW)", "fees_paid", ""),
)


def print_report(console: Console, request: BacktestRequest, result: BacktestResult) -> None:
    m = result.metrics
    source = str(request.data_file) if request.data_file else f"{request.symbol} {request.timeframe}"
    table = Table(title=f"Backtest: {result.strategy} on {source}  ({m['start']} .. {m['end']}, {m['bars']:,} bars)")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    for label, key, suffix in METRIC_ROWS:
        table.add_row(label, _fmt(m.get(key), suffix))
    console.print(table)
    console.print(
        f"Annualised with {m['bars_per_year']:,.0f} bars/year ({m['timeframe']} bars, 365-day year). "
        f"Fee {result.config.fee_rate:.4%} per side, slippage {result.config.slippage_pct}%, "
        f"tick sizes {'on' if result.config.use_tick_sizes else 'off'}. "
        + _gaps_line(data_gaps(result), m["timeframe"])
    )
    print_gates(console, result)
    trades = result.trade_records(last=request.show_trades) if request.show_trades > 0 else []
    if trades:
        recent = Table(title=f"Last {len(trades)} trades")
        for column in ("entry_time", "entry_price", "exit_time", "exit_price", "pnl_pct", "exit_reason"):
            recent.add_column(column, justify="right" if "price" in column or column == "pnl_pct" else "left")
        for trade in trades:
            recent.add_row(
                trade["entry_time"][:16].replace("T", " "),
                f"{trade['entry_price']:,.0f}",
                trade["exit_time"][:16].replace("T", " "),
                f"{trade['exit_price']:,.0f}",
                f"{trade['pnl_pct']:+.2f}%",
                trade["exit_reason"],
            )
        console.print(recent)


def print_gates(console: Console, result: BacktestResult) -> None:
    """Which rules and gates were applied, and how many entry attempts each refused."""
    c = result.config
    gates = result.gates()
    sizing = (
        f"half-Kelly ({c.kelly_min_pct:g}..{c.kelly_max_pct:g}% after {c.kelly_min_trades} closed trades, "
        f"{c.position_fraction_pct:g}% before)"
        if c.position_sizing == "half_kelly"
        else f"fixed {c.position_fraction_pct:g}% of equity"
    )
    table = Table(title=f"Entry rules and gates ({gates['entry_attempts']:,} entry attempts, "
                  f"{gates['entries_refused']:,} refused)")  # fmt: skip
    table.add_column("Rule")
    table.add_column("Setting")
    table.add_column("Refused", justify="right")
    off = "off (--no-risk-rules)"
    rows: tuple[tuple[str, str], ...] = (
        ("safe_mode", f"daily {c.daily_loss_limit_pct:g}% / weekly {c.weekly_loss_limit_pct:g}% loss" if c.risk_rules
         else off),
        ("min_trade_interval", f"{c.min_trade_interval_hours:g} h" if c.risk_rules else off),
        ("max_trades_per_day", f"{c.max_trades_per_day}" if c.risk_rules else off),
        ("max_positions", f"{c.max_positions}" if c.risk_rules else off),
        ("max_position_pct", f"{c.max_position_pct:g}% of equity" if c.risk_rules else off),
        ("cash_reserve", f"{c.cash_reserve_pct:g}% of equity" if c.risk_rules else off),
        ("min_order", f"{c.min_order_krw:,.0f} KRW; sizing {sizing}"),
        ("quick_filter", f"rule stage: {c.quick_filter_tier}, last {c.quick_filter_lookback_days} days"
         if c.quick_filter else "off (--no-quick-filter)"),
    )  # fmt: skip
    if result.strategy == "ai":
        rows += (("quick_filter_ai", "AI stage: the same on the AI-confirmed entries" if c.quick_filter else "off"),)
    for rule, setting in rows:
        table.add_row(rule, setting, f"{gates['refused_by'][rule]:,}")
    console.print(table)
    console.print(
        f"Exits: {_policy_text(result)}; position check every {c.position_check_minutes} min. "
        f"Safe mode entered {gates['safe_mode_entered']} time(s)."
    )


def _policy_text(result: BacktestResult) -> str:
    p = result.policy
    parts = [
        f"{label} {value:g}{unit}"
        for label, value, unit in (
            ("stop", p.stop_loss_pct, "%"),
            ("target", p.take_profit_pct, "%"),
            ("trailing", p.trailing_stop_pct, "%"),
            ("stop", p.stop_atr, " ATR"),
            ("target", p.target_atr, " ATR"),
            ("time-out", p.max_hold_hours, " h"),
        )
        if value > 0
    ]
    return ", ".join(parts) if parts else "signal exits only"
