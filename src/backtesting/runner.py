"""Runs one backtest for ``backtest.py``: load candles, build the strategy, simulate, report."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from src.backtesting.ai_strategy import AITradingStrategy
from src.backtesting.backtester import Backtester, BacktestResult, portfolio_config_from_settings
from src.backtesting.data_provider import HistoricalDataProvider, find_gaps
from src.backtesting.report_html import write_html_report
from src.config.settings import Settings
from src.domain.timeframes import Timeframe
from src.exceptions import ConfigurationError
from src.strategy import registry
from src.strategy.bundled import RuleBasedBreakoutStrategy, VolatilityBreakoutStrategy
from src.strategy.contract import Strategy

STRATEGIES = ("rule_breakout", "volatility_breakout", "ai")
PROGRESS_MIN_BARS = 100_000


@dataclass(slots=True)
class BacktestRequest:
    symbol: str = "KRW-BTC"
    timeframe: str = "1h"
    data_file: Path | None = None
    strategy: str = "rule_breakout"
    strategy_params: dict[str, Any] = field(default_factory=dict)
    start: str | None = None
    end: str | None = None
    fee_rate: float | None = None
    slippage_pct: float | None = None
    capital: float | None = None
    position_fraction: float = 1.0
    tick_sizes: bool = True
    json_out: Path | None = None
    html_out: Path | None = None
    ai_cache: Path | None = None
    min_confidence: float | None = None
    show_trades: int = 10


def load_candles(request: BacktestRequest, settings: Settings) -> pd.DataFrame:
    provider = HistoricalDataProvider(settings.market_data.backtest_data_dir)
    if request.data_file is not None:
        return provider.load_file(request.data_file, request.start, request.end)
    return provider.load_historical_data(request.symbol, request.timeframe, request.start, request.end)


def build_strategy(request: BacktestRequest, settings: Settings) -> Strategy:
    params = request.strategy_params
    rule_keys = set(RuleBasedBreakoutStrategy().parameters())
    if request.strategy == "volatility_breakout":
        return VolatilityBreakoutStrategy(
            k=params.get("k", 0.5),
            trend_filter=params.get("trend_filter", False),
            trend_window=params.get("trend_window", 5),
        )
    rule = RuleBasedBreakoutStrategy(**{k: v for k, v in params.items() if k in rule_keys})
    if request.strategy == "rule_breakout":
        return rule
    if request.strategy == "ai":
        return _ai_strategy(request, settings, rule)
    return registry.build_strategy(request.strategy, params, settings.strategy.path)  # a user strategy


def _ai_strategy(request: BacktestRequest, settings: Settings, rule: RuleBasedBreakoutStrategy) -> Strategy:
    from src.ai.cache import JsonlDecisionCache
    from src.ai.service import AIService

    cache_path = request.ai_cache or settings.market_data.backtest_data_dir / "ai_cache" / "decisions.jsonl"
    has_cache = cache_path.is_file()
    if not (settings.ai.enabled and settings.ai.has_key) and not has_cache:
        raise ConfigurationError(
            f"the ai strategy needs OPENAI_API_KEY or a decision cache; none at {cache_path} (use --ai-cache FILE)"
        )
    service = AIService(settings.ai, JsonlDecisionCache(cache_path))
    min_confidence = (
        Decimal(str(request.min_confidence)) if request.min_confidence is not None else settings.ai.min_confidence
    )
    return AITradingStrategy(service, request.symbol, rule, min_confidence=min_confidence, has_cache=has_cache)


def run_backtest(request: BacktestRequest, settings: Settings, console: Console) -> BacktestResult:
    config = portfolio_config_from_settings(settings)
    config = replace(
        config,
        fee_rate=config.fee_rate if request.fee_rate is None else request.fee_rate,
        slippage_pct=config.slippage_pct if request.slippage_pct is None else request.slippage_pct,
        initial_capital=config.initial_capital if request.capital is None else request.capital,
        position_fraction=request.position_fraction,
        use_tick_sizes=request.tick_sizes,
    )
    df = load_candles(request, settings)
    strategy = build_strategy(request, settings)
    with _progress(console, enabled=len(df) >= PROGRESS_MIN_BARS) as progress:
        task = progress.add_task("indicators and signals", total=3)
        if isinstance(strategy, AITradingStrategy):
            asyncio.run(strategy.prepare(df))
        signals = strategy.generate_signals(df)
        progress.update(task, advance=1, description="simulating")
        result = Backtester(config).run_signals(df, signals, strategy.name, strategy.parameters())
        progress.update(task, advance=1, description="writing reports")
        _write_outputs(request, result)
        progress.update(task, advance=1)
    print_report(console, request, result)
    return result


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not enabled,
    )


def _write_outputs(request: BacktestRequest, result: BacktestResult) -> None:
    if request.json_out is not None:
        request.json_out.parent.mkdir(parents=True, exist_ok=True)
        request.json_out.write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
    if request.html_out is not None:
        write_html_report(result, request.html_out, title=f"{request.symbol} {result.strategy}")


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
    gaps = find_gaps(result.candles, m["timeframe"]) if Timeframe.is_known(m["timeframe"]) else []
    console.print(
        f"Annualised with {m['bars_per_year']:,.0f} bars/year ({m['timeframe']} bars, 365-day year). "
        f"Fee {result.config.fee_rate:.4%} per side, slippage {result.config.slippage_pct}%, "
        f"tick sizes {'on' if result.config.use_tick_sizes else 'off'}. Data gaps: {len(gaps)} (not filled)."
    )
    trades = result.trade_records()[-request.show_trades :] if request.show_trades > 0 else []
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
