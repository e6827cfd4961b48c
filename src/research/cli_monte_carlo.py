"""``python backtest.py monte-carlo --strategy S [--params JSON] [--runs N] [--method reshuffle|bootstrap|block]
[--seed K] --json OUT``: one backtest, then its trades resampled (``src.research.robustness``), its significance
against random entries with the same exposure, and its deflated Sharpe ratio. See docs/RESEARCH.md."""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from itertools import product
from typing import Any

import numpy as np
from rich.table import Table

from src.backtesting.backtester import BacktestResult
from src.backtesting.runner import BacktestRequest, simulate
from src.domain.research_runs import ResearchKind
from src.exceptions import ConfigurationError, DataError
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
    probability_of_overfitting,
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
    parser.add_argument(
        "--search-space",
        type=_space,
        action="append",
        metavar="NAME=LO:HI:STEP|NAME=A,B,...",
        help="a small grid search first (each set one backtest; repeat for several parameters, at most "
        f"{MAX_SETS} sets): the Monte Carlo runs on the set with the best Sharpe ratio, the deflated Sharpe uses the "
        "grid's trials and their Sharpe variance, and the probability of backtest overfitting (CSCV) is reported",
    )
    add_apply_options(parser)
    return parser


MAX_SETS = 200
PBO_BLOCKS = 16


def _number(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(lowered)
    except ValueError:
        pass
    try:
        value = float(lowered)
    except ValueError:
        return text.strip()
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected finite values, got {text!r}")
    return value


def _space(text: str) -> tuple[str, list[Any]]:
    """``name=lo:hi:step`` (inclusive) or ``name=a,b,c``: one parameter's values for ``--search-space``."""
    name, _, values = text.partition("=")
    if not name.strip() or not values.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=LO:HI:STEP or NAME=A,B,..., got {text!r}")
    if ":" in values:
        parts = [_number(v) for v in values.split(":")]
        if len(parts) != 3 or not all(isinstance(p, int | float) and not isinstance(p, bool) for p in parts):
            raise argparse.ArgumentTypeError(f"expected NAME=LO:HI:STEP with numbers, got {text!r}")
        low, high, step = parts
        if step <= 0 or high < low:
            raise argparse.ArgumentTypeError(f"expected LO <= HI and STEP > 0, got {text!r}")
        count = math.floor((high - low) / step + 1e-9) + 1
        if count > MAX_SETS:
            raise argparse.ArgumentTypeError(f"{text!r} has {count} values; at most {MAX_SETS} sets")
        whole = all(isinstance(p, int) for p in parts)
        grid = [low + i * step if whole else round(low + i * step, 10) for i in range(count)]
        return name.strip(), grid
    return name.strip(), [_number(v) for v in values.split(",") if v.strip()]


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
    search: dict[str, Any] | None = None
    if args.search_space:
        result, search = grid_search(context, args, request)
    else:
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
    trials, variance = args.trials, args.trials_sharpe_var
    if search is not None:
        trials, variance = search["sets"], search["sharpe_variance"]
    deflated: dict[str, Any] | None
    try:
        deflated = deflated_sharpe_of_returns(
            bar_returns(result), trials=trials, trials_sharpe_variance=variance / per_year
        ).to_dict(per_year)
    except ValueError as exc:
        deflated = {"error": str(exc)}
    report = monte_carlo_report(result, resampled, significance, deflated)
    if search is not None:
        report["search"] = search
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


def grid_search(
    context: ResearchContext, args: argparse.Namespace, request: BacktestRequest
) -> tuple[BacktestResult, dict[str, Any]]:
    """``--search-space``: one backtest per set of the grid over the same bars; the best by Sharpe ratio, the
    grid's Sharpe variance (for the deflated Sharpe) and the probability of backtest overfitting (CSCV over the
    sets' per-bar returns)."""
    if args.trials != 1 or args.trials_sharpe_var != 0.0:
        raise ConfigurationError("--search-space counts the trials itself; drop --trials and --trials-sharpe-var")
    names = [name for name, _values in args.search_space]
    if len(set(names)) != len(names):
        raise ConfigurationError("--search-space names a parameter twice")
    sets = [dict(zip(names, combo, strict=True)) for combo in product(*(v for _n, v in args.search_space))]
    if len(sets) > MAX_SETS:
        raise ConfigurationError(
            f"--search-space makes {len(sets)} sets; at most {MAX_SETS} (use backtest.py optimize)"
        )
    results: list[BacktestResult] = []
    with progress_bar(context.console, "grid search", len(sets)) as advance:
        for number, values in enumerate(sets, 1):
            params = {**request.strategy_params, **values}
            results.append(simulate(replace(request, strategy_params=params), context.settings).result)
            advance(number)
    index = results[0].equity.index
    if any(not r.equity.index.equals(index) for r in results):
        raise DataError("the grid's backtests traded different bars")
    sharpes = np.array([np.nan if r.metrics["sharpe"] is None else float(r.metrics["sharpe"]) for r in results])
    best = int(np.nanargmax(sharpes)) if np.isfinite(sharpes).any() else 0
    finite = sharpes[np.isfinite(sharpes)]
    overfitting: dict[str, Any] | None = None
    if len(sets) >= 2:
        try:
            matrix = np.column_stack([bar_returns(r) for r in results])
            outcome = probability_of_overfitting(matrix, blocks=PBO_BLOCKS)
            overfitting = {k: v for k, v in outcome.to_dict().items() if k != "logits"}
        except ValueError as exc:
            overfitting = {"error": str(exc)}
    return results[best], {
        "sets": len(sets),
        "space": dict(args.search_space),
        "best_params": sets[best],
        "best_sharpe": None if not np.isfinite(sharpes[best]) else float(sharpes[best]),
        "sharpe_variance": float(np.var(finite, ddof=1)) if len(finite) > 1 else 0.0,
        "trials": [
            {
                "params": p,
                "sharpe": None if not np.isfinite(v) else float(v),
                "total_return_pct": r.metrics["total_return_pct"],
            }
            for p, v, r in zip(sets, sharpes, results, strict=True)
        ],
        "overfitting": overfitting,
    }


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
    search = report.get("search")
    if search is not None:
        pbo = (search.get("overfitting") or {}).get("pbo")
        context.console.print(
            f"Grid search: {search['sets']} sets, best {search['best_params']} (Sharpe {search['best_sharpe']}); "
            f"probability of backtest overfitting {'-' if pbo is None else f'{pbo:.2f}'}"
        )
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
