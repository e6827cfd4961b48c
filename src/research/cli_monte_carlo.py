"""``python backtest.py monte-carlo --strategy S [--params JSON] [--runs N] [--method reshuffle|bootstrap|block]
[--seed K] --json OUT``: one backtest, then its trades resampled (``src.research.robustness``), its significance
against random entries with the same exposure, and its deflated Sharpe ratio. See docs/RESEARCH.md."""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np
from rich.table import Table

from src.backtesting.backtester import BacktestResult
from src.backtesting.runner import simulate
from src.domain.research_runs import ResearchKind
from src.exceptions import DataError
from src.research.cli_support import (
    ChosenParams,
    ResearchContext,
    ResearchOutcome,
    add_apply_options,
    backtest_request,
    finish,
    parse_research_args,
    progress_bar,
    request_record,
    research_parser,
)
from src.research.robustness import (
    MonteCarloResult,
    ResampleMethod,
    SignificanceResult,
    deflated_sharpe_of_returns,
    monte_carlo,
    random_entry_test,
    trade_returns_on_equity,
)

MAX_RUNS = 1_000_000


def _runs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_RUNS:
        raise argparse.ArgumentTypeError(f"must be in 1..{MAX_RUNS:,}, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in 0..2**63-1, got {text}")
    return value


def _trials(text: str) -> int:
    value = _seed(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _variance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = research_parser(
        "monte-carlo",
        "Resample a backtest's trades (percentiles of return, drawdown and losing streak), test them against "
        "random entries with the same exposure (p-value), and deflate their Sharpe ratio for a search.",
    )
    parser.add_argument("--runs", type=_runs, default=1000, help="resampled sequences (default 1000)")
    parser.add_argument(
        "--method",
        choices=[method.value for method in ResampleMethod],
        default=ResampleMethod.RESHUFFLE.value,
        help="reshuffle (same trades, random order; default), bootstrap (with replacement), block (blocks of "
        "consecutive trades with replacement)",
    )
    parser.add_argument("--block", type=_trials, help="block length in trades for --method block (default ~n^(1/3))")
    parser.add_argument("--seed", type=_seed, help="random seed: the same seed gives the same result")
    parser.add_argument(
        "--trials",
        type=_trials,
        default=1,
        help="deflated Sharpe: how many parameter sets the search that chose these tried (default 1)",
    )
    parser.add_argument(
        "--trials-sharpe-var",
        type=_variance,
        default=0.0,
        help="deflated Sharpe: variance of the trials' annualised Sharpe ratios (default 0)",
    )
    add_apply_options(parser)
    return parser


def trade_inputs(result: BacktestResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The trades in the order they closed: return on equity, net return on their own cost (fractions), and
    holding time in bars of the traded candles."""
    trades = result.trades.sort_values("exit_time", kind="stable")
    if trades.empty:
        raise DataError("the backtest made no trades; there is nothing to resample (widen --start/--end?)")
    index = result.candles.index
    entry = index.searchsorted(trades["entry_candle"].to_numpy(), side="left")
    exit_ = index.searchsorted(trades["exit_candle"].to_numpy(), side="left")
    on_equity = trade_returns_on_equity(trades["pnl"].to_numpy(dtype=np.float64), result.config.initial_capital)
    own = trades["pnl_pct"].to_numpy(dtype=np.float64) / 100.0
    return on_equity, own, np.maximum(exit_ - entry, 1)


def bar_returns(result: BacktestResult) -> np.ndarray:
    values = np.concatenate(([result.config.initial_capital], result.equity.to_numpy(dtype=np.float64)))
    return np.diff(values) / values[:-1]


def run(argv: list[str], context: ResearchContext) -> int:
    args = parse_research_args(build_parser(), argv)
    settings = context.settings
    request = backtest_request(args)
    asked = request_record(
        args,
        runs=args.runs,
        method=args.method,
        seed=args.seed,
        block=args.block,
        trials=args.trials,
        trials_sharpe_var=args.trials_sharpe_var,
    )
    context.begin(args, ResearchKind.MONTE_CARLO, asked)
    with progress_bar(context.console, "backtest", 1) as advance:
        result = simulate(request, settings).result
        advance(1)
    on_equity, own, holds = trade_inputs(result)
    method = ResampleMethod(args.method)
    with progress_bar(context.console, f"Monte Carlo ({method.value})", args.runs) as advance:
        resampled = monte_carlo(
            on_equity, runs=args.runs, method=method, seed=args.seed, block=args.block, progress=advance
        )
    with progress_bar(context.console, "random entries", args.runs) as advance:
        significance = random_entry_test(
            result.candles["close"].to_numpy(dtype=np.float64),
            holds,
            own,
            fee_rate=result.config.fee_rate,
            slippage_pct=result.config.slippage_pct,
            runs=args.runs,
            seed=args.seed,
            progress=advance,
        )
    per_year = float(result.metrics["bars_per_year"])
    deflated: dict[str, Any] | None
    try:
        deflated = deflated_sharpe_of_returns(
            bar_returns(result), trials=args.trials, trials_sharpe_variance=args.trials_sharpe_var / per_year
        ).to_dict(per_year)
    except ValueError as exc:
        deflated = {"error": str(exc)}
    report = monte_carlo_report(result, resampled, significance, deflated)
    report["request"] = asked
    print_summary(context, report)
    from src.research.report_html import write_research_report

    outcome = ResearchOutcome(
        kind=ResearchKind.MONTE_CARLO,
        request=report["request"],
        result=report,
        summary=summary_of(report),
        chosen=ChosenParams(result.strategy, dict(result.parameters)),
        html=lambda path: write_research_report(path, report, title=f"Monte Carlo: {result.strategy}"),
    )
    return finish(context, args, outcome)


def monte_carlo_report(
    result: BacktestResult,
    resampled: MonteCarloResult,
    significance: SignificanceResult,
    deflated: dict[str, Any] | None,
) -> dict[str, Any]:
    """The JSON of ``backtest.py monte-carlo``: ``percentiles`` and ``p_value`` at the top."""
    keep = (
        "start",
        "end",
        "bars",
        "timeframe",
        "total_return_pct",
        "max_drawdown_pct",
        "sharpe",
        "trades",
        "max_consecutive_losses",
        "buy_and_hold_return_pct",
        "exposure_pct",
    )
    return {
        "kind": ResearchKind.MONTE_CARLO.value,
        "strategy": result.strategy,
        "params": result.parameters,
        "percentiles": resampled.percentiles,
        "p_value": significance.p_value,
        "backtest": {key: result.metrics.get(key) for key in keep},
        "monte_carlo": resampled.to_dict(),
        "significance": significance.to_dict(),
        "deflated_sharpe": deflated,
    }


def summary_of(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers a list of runs shows."""
    return {
        "strategy": report["strategy"],
        "params": report["params"],
        "total_return_pct": report["backtest"]["total_return_pct"],
        "total_return_p5": report["percentiles"]["total_return"]["5"],
        "max_drawdown_p5": report["percentiles"]["max_drawdown"]["5"],
        "p_value": report["p_value"],
        "deflated_sharpe": (report.get("deflated_sharpe") or {}).get("deflated_sharpe"),
    }


def print_summary(context: ResearchContext, report: dict[str, Any]) -> None:
    mc = report["monte_carlo"]
    table = Table(
        title=f"Monte Carlo: {report['strategy']} {report['params']}, {mc['trades']} trades, {mc['runs']:,} runs "
        f"({mc['method']}, seed {mc['seed']})"
    )
    for column in ("", "this backtest", "5th pct", "median", "95th pct"):
        table.add_column(column, justify="right" if column else "left")
    labels = {
        "total_return": "Total return %",
        "max_drawdown": "Max drawdown %",
        "longest_losing_streak": "Longest losing streak",
    }
    for key, label in labels.items():
        levels = report["percentiles"][key]
        table.add_row(label, f"{mc['observed'][key]:,.2f}", *(f"{levels[q]:,.2f}" for q in ("5", "50", "95")))
    context.console.print(table)
    sig = report["significance"]
    context.console.print(
        f"Random entries with the same exposure ({sig['runs']:,}): p-value {sig['p_value']:.4f} "
        f"(trades {sig['observed_return_pct']:+.2f}% vs random median {sig['random_return_pct']['50']:+.2f}%)"
    )
    deflated = report.get("deflated_sharpe") or {}
    if "deflated_sharpe" in deflated:
        context.console.print(
            f"Deflated Sharpe ratio {deflated['deflated_sharpe']:.4f} (Sharpe {deflated['sharpe_annualised']:.2f} "
            f"annualised against {deflated['expected_max_sharpe_annualised']:.2f} expected from "
            f"{deflated['trials']} trial(s))"
        )
    elif deflated:
        context.console.print(f"Deflated Sharpe ratio: not computed ({deflated['error']})")
