"""``python backtest.py optimize --strategy S [--space name=lo:hi:step ...] [--trials N] [--method
grid|random|tpe|nsga2] [--objective ...] [--walk-forward FOLDS] [--ray-address ADDR] --json OUT``.

Searches the strategy's declared space (``src.research.space``) on the candles a backtest with the same flags
would trade, evaluating parameter sets in batches (``src.research.batch``), and reports the best parameters;
with ``--walk-forward`` it optimises fold by fold and reports the folds and the stitched out-of-sample metrics
(``src.research.walkforward``). See docs/RESEARCH.md.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from src.backtesting.backtester import Backtester
from src.backtesting.engine import EngineConfig
from src.backtesting.runner import acted_bars, engine_config_for, from_start, load_candles
from src.domain.research_runs import ResearchKind
from src.exceptions import ConfigurationError, DataError
from src.research.batch import SECONDS_PER_YEAR, median_step
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
from src.research.data import ResearchData
from src.research.distributed import add_ray_arguments, cache_from_args, executor_from_args
from src.research.objectives import OBJECTIVE_METRICS, Constraints, parse_objectives
from src.research.report_html import heatmap_payload, write_research_report
from src.research.robustness import deflated_sharpe_of_returns, probability_of_overfitting
from src.research.search import (
    DEFAULT_BATCH,
    Evaluator,
    Method,
    SearchOptions,
    SearchResult,
    run_search,
)
from src.research.space import SearchSpace, search_space
from src.research.walkforward import WalkForwardResult, plan_folds, walk_forward
from src.strategy.contract import history_bars
from src.strategy.registry import AI_STRATEGY, BUNDLED, strategy_class

OVERFITTING_TOP = 50  # sets whose per-bar returns go into the probability of backtest overfitting

MAX_TRIALS = 10_000_000
_SPAN = re.compile(r"(\d+)([hdw]?)")
_SPAN_SECONDS = {"h": 3600, "d": 86_400, "w": 7 * 86_400}


def _count(text: str, low: int = 1, high: int = MAX_TRIALS) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be in {low:,}..{high:,}, got {text}")
    return value


def _trials(text: str) -> int:
    return _count(text)


def _seed(text: str) -> int:
    return _count(text, 0, 2**32 - 1)


def _folds(text: str) -> int:
    return _count(text, 1, 1000)


def _span(text: str) -> str:
    if not _SPAN.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected bars (720) or a duration (30d, 12h, 2w), got {text!r}")
    return text.strip()


def _drawdown(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percent, got {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a percent in [0, 100], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = research_parser(
        "optimize",
        "Search a strategy's parameter space (grid, random, Optuna TPE or NSGA-II) with many parameter sets per "
        "compiled pass over the candles; with --walk-forward, optimise fold by fold and test out of sample.",
    )
    parser.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="NAME=LO:HI[:STEP]|NAME=A,B",
        help="a searched parameter (repeat the flag); default: the strategy's own declared parameters and ranges",
    )
    parser.add_argument(
        "--method",
        choices=[m.value for m in Method],
        help="grid (every point; the default without --trials), random, tpe (the default with --trials), or nsga2 "
        "(several objectives)",
    )
    parser.add_argument("--trials", type=_trials, help="parameter sets to try (grid: the most it may have)")
    parser.add_argument(
        "--objective",
        default="sharpe",
        help=f"maximised: one of {', '.join(OBJECTIVE_METRICS)}, a mix such as 0.7*sharpe+0.3*calmar, or several "
        "separated by commas (nsga2); default sharpe",
    )
    parser.add_argument("--min-trades", type=lambda t: _count(t, 0), default=1, help="constraint (default 1)")
    parser.add_argument("--max-drawdown", type=_drawdown, metavar="PCT", help="constraint: drawdown no deeper")
    parser.add_argument("--seed", type=_seed, default=0, help="random, tpe, nsga2: the seed (default 0)")
    parser.add_argument(
        "--batch-size", type=lambda t: _count(t, 1, 100_000), default=DEFAULT_BATCH, help="parameter sets a batch"
    )
    parser.add_argument("--walk-forward", type=_folds, metavar="FOLDS", help="walk-forward with this many folds")
    parser.add_argument("--train", type=_span, help="walk-forward train window: bars or 30d/12h/2w")
    parser.add_argument("--test", type=_span, help="walk-forward test window: bars or a duration")
    parser.add_argument("--embargo", type=_span, default="0", help="bars (or a duration) between train and test")
    parser.add_argument("--anchored", action="store_true", help="walk-forward train windows all start at --start")
    add_ray_arguments(parser)  # --ray, --ray-address, --workers, --cache-dir, --no-cache
    add_apply_options(parser)
    return parser


def _bars(text: str | None, bar_s: float) -> int | None:
    if text is None:
        return None
    found = _SPAN.fullmatch(text)
    assert found is not None
    number, unit = int(found.group(1)), found.group(2)
    return number if not unit else max(1, round(number * _SPAN_SECONDS[unit] / bar_s))


def _options(args: argparse.Namespace) -> SearchOptions:
    method = Method(args.method) if args.method else (Method.TPE if args.trials else Method.GRID)
    objectives = tuple(parse_objectives(args.objective))
    if len(objectives) > 1 and args.method is None:
        method = Method.NSGA2
    return SearchOptions(method, objectives, Constraints(args.min_trades, args.max_drawdown), args.trials, args.seed)


def load_research_data(args: argparse.Namespace, context: ResearchContext) -> tuple[ResearchData, Any, Any]:
    """The candles a backtest with these flags trades (with its warm-up), the engine's rules, the request."""
    request = backtest_request(args)
    settings = context.settings
    config = engine_config_for(request, settings)
    df, start = acted_bars(load_candles(request, settings), request)
    if len(df) < 2:
        raise DataError("optimize needs at least 2 candles in --start..--end")
    step = float(pd.Series(df.index).diff().median().total_seconds())
    df = from_start(df, start, history_bars(config.quick_filter_lookback_days, int(step)))
    data = ResearchData.of(df, start, request.symbol, request.timeframe)
    return data, config, request


def run(argv: list[str], context: ResearchContext) -> int:
    args = parse_research_args(build_parser(), argv)
    options = _options(args)
    name = args.strategy
    if name == AI_STRATEGY:
        raise ConfigurationError("optimize searches rule strategies; the ai strategy has no parameters to search")
    settings = context.settings
    path = None if name in BUNDLED else settings.strategy.path
    cls = strategy_class(name, path)
    space = search_space(name, cls.space, args.space, args.params)
    data, config, _request = load_research_data(args, context)
    bar_s = float(pd.Series(data.index).diff().median().total_seconds())
    plans = None
    if args.walk_forward is not None:
        plans = plan_folds(
            data.start,
            len(data),
            args.walk_forward,
            train=_bars(args.train, bar_s),
            test=_bars(args.test, bar_s),
            embargo=_bars(args.embargo, bar_s) or 0,
            anchored=args.anchored,
        )
    elif args.train or args.test or args.anchored or args.embargo != "0":
        raise ConfigurationError("--train, --test, --embargo and --anchored need --walk-forward FOLDS")
    request = request_record(
        args,
        space=list(args.space),
        method=options.method.value,
        trials=args.trials,
        objective=args.objective,
        min_trades=args.min_trades,
        max_drawdown=args.max_drawdown,
        seed=args.seed,
        walk_forward=args.walk_forward,
        train=args.train,
        test=args.test,
        embargo=args.embargo,
        anchored=args.anchored,
        ray=args.ray,
        ray_address=args.ray_address,
        workers=args.workers,
    )
    context.begin(args, ResearchKind.OPTIMIZE, request)  # listed as running while it works; failed if it raises
    planned = options.planned(space) * (len(plans) if plans else 1)
    done = [0]
    map_options = {"cache": cache_from_args(args)}  # finished batches on disk: a killed run resumes
    with (
        executor_from_args(args) as executor,
        progress_bar(context.console, f"optimize {name} ({options.method.value})", planned) as advance,
    ):

        def told(sets: int) -> None:
            done[0] += sets
            advance(done[0])

        def evaluator(window: tuple[int, int] | None) -> Evaluator:
            return Evaluator(data, name, config, window, executor, args.batch_size, path, told, map_options=map_options)

        if plans is None:
            found = run_search(space, evaluator(None), options)
            result = _search_report(found, space, data)
            result["overfitting"] = overfitting_report(found, space, data, config, path)
            best = found.best.params if found.best is not None else None
        else:
            walked = walk_forward(data, space, options, plans, config, evaluator)
            result = _walk_forward_report(walked, space, data, options)
            best = result["best_params"]
    result = {"strategy": name, "symbol": data.symbol, "timeframe": data.timeframe, **result}
    _print(context, result)
    outcome = ResearchOutcome(
        kind=ResearchKind.OPTIMIZE,
        request=request,
        result=result,
        summary=_summary(result),
        chosen=ChosenParams(name, best) if best is not None else None,
        html=lambda out: write_research_report(out, result, f"optimize {name} on {data.symbol} {data.timeframe}"),
    )
    return finish(context, args, outcome)


def overfitting_report(
    found: SearchResult, space: SearchSpace, data: ResearchData, config: EngineConfig, path: Path | None
) -> dict[str, Any]:
    """What the search's best is worth once the search itself is counted: its deflated Sharpe ratio (every trial
    counted, with the variance of the trials' Sharpe ratios) and the probability of backtest overfitting (CSCV
    over the per-bar returns of the ``OVERFITTING_TOP`` best feasible sets, each backtested once more)."""
    ranked = sorted(found.feasible, key=lambda t: t.values[0], reverse=True)[:OVERFITTING_TOP]
    if not ranked:
        return {"error": "no feasible trial"}
    frame, first = data.frame(), data.index[data.start]
    strategy = strategy_class(space.strategy, path)

    def returns_of(params: dict[str, Any]) -> np.ndarray:
        equity = Backtester(config).run(frame, strategy(**params), first).run.equity_values
        values = np.concatenate(([config.initial_capital], equity))
        return np.diff(values) / values[:-1]

    matrix = np.column_stack([returns_of(t.params) for t in ranked])
    per_year = SECONDS_PER_YEAR / median_step(data.times_ns)
    sharpes = np.array([t.metrics.get("sharpe", math.nan) for t in found.trials], dtype=np.float64)
    sharpes = sharpes[np.isfinite(sharpes)]
    variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0  # annualised, as the metrics are
    out: dict[str, Any] = {"top_sets": len(ranked)}
    try:
        out["deflated_sharpe"] = deflated_sharpe_of_returns(
            matrix[:, 0], trials=len(found.trials), trials_sharpe_variance=variance / per_year
        ).to_dict(per_year)
    except ValueError as exc:
        out["deflated_sharpe"] = {"error": str(exc)}
    try:
        pbo = probability_of_overfitting(matrix).to_dict()
        out["probability_of_overfitting"] = {k: v for k, v in pbo.items() if k != "logits"}
    except ValueError as exc:
        out["probability_of_overfitting"] = {"error": str(exc)}
    return out


def _search_report(found: SearchResult, space: SearchSpace, data: ResearchData) -> dict[str, Any]:
    out = {
        "bars": data.traded,
        "start": data.index[data.start].isoformat(),
        "end": data.index[-1].isoformat(),
        "space": space.describe(),
        "fixed_params": space.base,
        **found.to_dict(),
    }
    heat = _heatmap(found, space)
    if heat is not None:
        out["heatmap"] = heat
    return out


def _heatmap(found: SearchResult, space: SearchSpace) -> dict[str, Any] | None:
    """The first objective over the first two searched parameters (the best over the others), for a grid."""
    if found.method is not Method.GRID or not space.dimensions:
        return None
    x_dim = space.dimensions[0]
    y_dim = space.dimensions[1] if len(space.dimensions) > 1 else None
    xs: list[Any] = x_dim.grid()
    ys: list[Any] = y_dim.grid() if y_dim is not None else [""]
    cells: list[list[float | None]] = [[None] * len(xs) for _ in ys]
    for trial in found.trials:
        if not trial.feasible:
            continue
        i = ys.index(trial.params[y_dim.name]) if y_dim is not None else 0
        j = xs.index(trial.params[x_dim.name])
        value = trial.values[0]
        current = cells[i][j]
        cells[i][j] = value if current is None else max(current, value)
    return heatmap_payload(x_dim.name, xs, y_dim.name if y_dim else "", ys, cells, found.objectives[0].label)


def _walk_forward_report(walked: WalkForwardResult, space: SearchSpace, data: ResearchData,
                         options: SearchOptions) -> dict[str, Any]:  # fmt: skip
    report = walked.to_dict(data)
    equity = report.pop("oos_equity")
    last = walked.folds[-1].best
    return {
        "bars": data.traded,
        "space": space.describe(),
        "fixed_params": space.base,
        "method": options.method.value,
        "objectives": [o.label for o in options.objectives],
        "best_params": last.params if last is not None else None,  # the last fold's choice: what to trade next
        **report,
        "stitched_equity": equity,
    }


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    if "oos_metrics" in result:
        m = result["oos_metrics"]
        return {
            "folds": len(result["folds"]),
            "oos_return_pct": m.get("total_return_pct"),
            "oos_sharpe": m.get("sharpe"),
            "oos_max_drawdown_pct": m.get("max_drawdown_pct"),
            "best_params": result["best_params"],
        }
    return {
        "trials": result["trials"],
        "feasible_trials": result["feasible_trials"],
        "best_values": result["best_values"],
        "best_params": result["best_params"],
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}"
    return str(value)


def _print(context: ResearchContext, result: dict[str, Any]) -> None:
    console = context.console
    if "folds" in result:
        table = Table(title=f"Walk-forward ({result['mode']}, {len(result['folds'])} folds)")
        for column in ("fold", "train", "test", "params", "IS objective", "OOS objective", "OOS return %"):
            table.add_column(column)
        for fold in result["folds"]:
            table.add_row(
                str(fold["fold"]),
                f"{fold['train']['start'][:10]} .. {fold['train']['end'][:10]}",
                f"{fold['test']['start'][:10]} .. {fold['test']['end'][:10]}",
                " ".join(f"{d['name']}={_fmt(fold['params'][d['name']])}" for d in result["space"])
                if fold["params"]
                else "none feasible",
                _fmt(fold["is_objective"]),
                _fmt(fold["oos_objective"]),
                _fmt((fold["test_metrics"] or {}).get("total_return_pct")),
            )
        console.print(table)
        m = result["oos_metrics"]
        console.print(
            f"Out of sample: return {_fmt(m.get('total_return_pct'))} %, Sharpe {_fmt(m.get('sharpe'))}, max "
            f"drawdown {_fmt(m.get('max_drawdown_pct'))} %, {m.get('trades')} trades"
        )
    else:
        table = Table(title=f"Best of {result['trials']:,} trials ({result['feasible_trials']:,} feasible)")
        names = [d["name"] for d in result["space"]]
        for column in (*names, *result["objectives"], "trades", "return %", "max DD %"):
            table.add_column(column, justify="right")
        for trial in result["top"][:10]:
            m = trial["metrics"]
            table.add_row(
                *(_fmt(trial["params"][n]) for n in names),
                *(_fmt(v) for v in trial["values"]),
                _fmt(m["trades"]),
                _fmt(m["total_return_pct"]),
                _fmt(m["max_drawdown_pct"]),
            )
        console.print(table)
        _print_overfitting(console, result.get("overfitting") or {})
    console.print(f"Best parameters: {result['best_params']}")


def _print_overfitting(console: Any, report: dict[str, Any]) -> None:
    deflated = report.get("deflated_sharpe") or {}
    pbo = report.get("probability_of_overfitting") or {}
    if "deflated_sharpe" in deflated:
        console.print(
            f"Deflated Sharpe of the best: {deflated['deflated_sharpe']:.3f} (probability that its true Sharpe beats "
            f"the best of {deflated['trials']:,} unskilled trials)"
        )
    if "pbo" in pbo:
        console.print(
            f"Probability of backtest overfitting: {pbo['pbo']:.2f} (CSCV over the top {report['top_sets']} sets, "
            f"{pbo['splits']:,} splits)"
        )
