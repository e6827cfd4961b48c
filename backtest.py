"""Backtest a strategy on historical Upbit candles: ``python backtest.py --help``.

With no arguments: the bot's own settings (``TRADING_STRATEGY`` with ``STRATEGY_PARAMS``, ``PAPER_STARTING_KRW``,
the fee, ``BACKTEST_SLIPPAGE_PCT``, every risk rule and the quick filter) on the bundled KRW-BTC hourly candles.
Flags override. See docs/BACKTESTING.md.

Sub-commands (docs/RESEARCH.md): ``backtest.py optimize|monte-carlo|ai-value [flags]`` run
``src/research/cli_*.py`` (``run(argv, context)``, see ``src.research.cli_support``) with the same data options
(``--symbol --timeframe --data --start --end --fee --slippage``, defined once in ``src.backtesting.cli_options``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from src.backtesting.cli_options import (
    DEFAULT_SYMBOL,
    OneLineParser,
    add_data_options,
    market_of_file,
    output_file,
    params_json,
    percent,
    positive,
    share,
    strategy_name,
    symbol_of,
)
from src.backtesting.runner import BacktestRequest, run_backtest
from src.config.bootstrap import warn_about_unknown_keys
from src.config.settings import Settings, load_settings
from src.exceptions import TradingSystemError
from src.utils.logger import configure_logging, install_excepthooks, redactor

__all__ = ["DEFAULT_SYMBOL", "SUBCOMMANDS", "build_parser", "main", "market_of_file", "request_from_args"]


# The sub-commands: ``backtest.py NAME ...`` runs ``MODULE.run(argv, context)`` (argv after NAME, context a
# ``src.research.cli_support.ResearchContext``), imported only when asked. Anything else is one backtest.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "optimize": ("src.research.cli_optimize", "parameter search and walk-forward over a strategy's space"),
    "monte-carlo": ("src.research.cli_monte_carlo", "Monte Carlo over the trades, significance against chance"),
    "ai-value": ("src.research.cli_ai_value", "rules only vs rules + AI vs buy-and-hold, by market regime"),
}


def _subcommand_help() -> str:
    lines = "\n".join(f"  {name:<12} {text}" for name, (_module, text) in SUBCOMMANDS.items())
    return f"sub-commands (python backtest.py NAME --help; docs/RESEARCH.md):\n{lines}"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="backtest.py",
        usage="%(prog)s [flags]  |  %(prog)s {" + ",".join(SUBCOMMANDS) + "} [flags]",
        description="Backtest a strategy on historical Upbit candles.",
        epilog=_subcommand_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_options(p)
    p.add_argument(
        "--strategy",
        type=strategy_name,
        help="a bundled strategy (rule_breakout, volatility_breakout), ai, or one from STRATEGY_PATH "
        "(default TRADING_STRATEGY)",
    )
    p.add_argument("--params", type=params_json, help="strategy parameters as a JSON object, e.g. '{\"k\": 0.6}'")
    p.add_argument("--capital", type=positive, help="starting KRW (default PAPER_STARTING_KRW)")
    p.add_argument(
        "--position-fraction",
        type=share,
        help="fixed share of equity per entry (0..1]; default POSITION_SIZING / POSITION_FRACTION_PCT",
    )
    p.add_argument("--no-tick-rounding", action="store_true", help="fill at exact prices, not on the KRW tick grid")
    p.add_argument(
        "--no-risk-rules",
        action="store_true",
        help="research: no trade spacing, daily cap, position caps, cash reserve or circuit breakers",
    )
    p.add_argument("--no-quick-filter", action="store_true", help="research: no quick filter gate before entries")
    p.add_argument("--k", type=positive, help="volatility breakout k (default 0.5)")
    p.add_argument("--trend-filter", action="store_true", help="volatility breakout: open > mean of last 5 closes")
    p.add_argument("--atr-stop", type=positive, help="stop in ATRs (parameter stop_atr; rule strategy default 2)")
    p.add_argument("--atr-target", type=positive, help="target in ATRs (parameter target_atr; default 3)")
    p.add_argument("--squeeze-mode", choices=["bb_or_adx", "bb", "adx"], help="rule strategy squeeze gate")
    p.add_argument("--breakout-mode", choices=["donchian", "range"], help="rule strategy breakout gate")
    p.add_argument("--volume-multiplier", type=positive, help="rule strategy volume gate (default 1.5)")
    p.add_argument("--ai-cache", type=Path, help="AI decision cache (JSON lines) to replay/record")
    p.add_argument(
        "--decisions-from",
        metavar="DATABASE_URL",
        help="ai: replay the decisions the bot recorded in this database (by candle) instead of asking the model",
    )
    p.add_argument("--min-confidence", type=percent, help="AI confidence needed to buy (default AI_MIN_CONFIDENCE)")
    p.add_argument("--trades", type=int, default=10, help="how many of the last trades to print (default 10)")
    p.add_argument("--json", type=output_file, dest="json_out", help="write metrics and trades to this JSON file")
    p.add_argument(
        "--parity",
        action="store_true",
        help="also replay the bot over --start..--end and compare trade by trade (exit 0 identical, 1 different; "
        "--json writes the comparison); see docs/PARITY.md",
    )
    p.add_argument("--html", type=output_file, dest="html_out", help="write a self-contained HTML report")
    return p


def request_from_args(args: argparse.Namespace) -> BacktestRequest:
    names = {
        "k": "k",
        "atr_stop": "stop_atr",
        "atr_target": "target_atr",
        "squeeze_mode": "squeeze_mode",
        "breakout_mode": "breakout_mode",
        "volume_multiplier": "volume_multiplier",
    }
    params = dict(args.params or {})
    params.update({key: getattr(args, attr) for attr, key in names.items() if getattr(args, attr) is not None})
    if args.trend_filter:
        params["trend_filter"] = True
    return BacktestRequest(
        symbol=symbol_of(args),
        timeframe=args.timeframe,
        data_file=args.data,
        strategy=args.strategy,
        strategy_params=params,
        start=args.start,
        end=args.end,
        fee_rate=args.fee,
        slippage_pct=args.slippage,
        capital=args.capital,
        position_fraction=args.position_fraction,
        tick_sizes=not args.no_tick_rounding,
        risk_rules=not args.no_risk_rules,
        quick_filter=not args.no_quick_filter,
        json_out=args.json_out,
        html_out=args.html_out,
        ai_cache=args.ai_cache,
        min_confidence=args.min_confidence,
        show_trades=args.trades,
        **_recorded_decisions(args),
    )


def _recorded_decisions(args: argparse.Namespace) -> dict[str, Any]:
    """``--decisions-from``: the loader of the recorded AI decisions (read through backend/app/db)."""
    if args.decisions_from is None:
        return {}
    if args.strategy != "ai":
        build_parser().error("--decisions-from replays recorded AI decisions; use it with --strategy ai")
    from backend.app.db.recorded_decisions import database_decision_loader, display_url

    return {
        "decisions_from": display_url(args.decisions_from),
        "decision_loader": database_decision_loader(args.decisions_from),
    }


def _parity(request: BacktestRequest, settings: Settings, console: Console) -> int:
    """The parity report (``backend/app/core/parity.py``): this backtest against the replay of the bot."""
    from backend.app.core.parity import ParityOptions, parse_window, report_parity

    start, end = parse_window(request.start, request.end)
    strategy = request.strategy or settings.strategy.name
    options = ParityOptions(
        strategy, request.symbol, start, end, request.strategy_params, request.data_file, request.timeframe
    )
    quiet = replace(request, strategy=strategy, json_out=None, html_out=None, show_trades=0)
    return report_parity(
        settings,
        options,
        lambda chosen: run_backtest(
            replace(quiet, strategy_params=dict(chosen.strategy.params)), chosen, Console(quiet=True)
        ).trade_records(),
        console,
        request.json_out,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return run_subcommand(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    request = request_from_args(args)
    console = Console()
    install_excepthooks()
    warn_about_unknown_keys()

    def backtest() -> int:
        settings = load_settings()
        configure_logging("WARNING", settings.observability.log_format.value, settings.secret_values())
        if args.parity:
            return _parity(request, settings, console)
        run_backtest(request, settings, console)
        return 0

    return _one_line_errors("backtest.py", backtest)


def run_subcommand(name: str, argv: list[str]) -> int:
    """``backtest.py NAME ...``: the sub-command's module, imported now, runs with the shared context."""
    prog = f"backtest.py {name}"
    module_name = SUBCOMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:  # an install without the research extras (Optuna, Ray)
        print(
            f"{prog}: error: needs the package {exc.name} "
            '(pip install -r requirements-research.txt, or pip install ".[research]")',
            file=sys.stderr,
        )
        return 2
    from src.research.cli_support import ResearchContext

    install_excepthooks()
    warn_about_unknown_keys()
    context = ResearchContext(
        prog=prog,
        console=Console(),
        settings_loader=_settings_for_research,
        store_opener=_open_run_store,
        decisions_opener=_open_recorded_decisions,
    )
    entry: Callable[[list[str], ResearchContext], int] = module.run

    def work() -> int:
        try:
            return entry(argv, context)
        except TradingSystemError as exc:  # the stored run (if any) keeps why it failed
            context.fail(redactor.scrub_text(exc.message))
            raise
        except (Exception, KeyboardInterrupt) as exc:
            context.fail(redactor.scrub_text(f"{type(exc).__name__}: {exc}"))
            raise

    return _one_line_errors(prog, work)


def _open_run_store(url: str, settings: Settings) -> Any:
    """The research runs' store (``backend/app/services/research_runs.py``: SQL lives in backend)."""
    from backend.app.services.research_runs import DatabaseRunStore

    return DatabaseRunStore(url, settings)


def _open_recorded_decisions(url: str) -> tuple[str, Any]:
    """The decisions the bot recorded in the database at ``url`` (``--decisions-from``), read through backend."""
    from backend.app.db.recorded_decisions import database_decision_loader, display_url

    return display_url(url), database_decision_loader(url)


def _settings_for_research() -> Settings:
    settings = load_settings()
    configure_logging("WARNING", settings.observability.log_format.value, settings.secret_values())
    return settings


def _one_line_errors(prog: str, work: Callable[[], int]) -> int:
    """``work()``'s exit code; an error the user can act on is one line on stderr and exit code 1."""
    try:
        return work()
    except TradingSystemError as exc:
        print(f"{prog}: error: {redactor.scrub_text(exc.message)}", file=sys.stderr)
        return 1
    except OSError as exc:  # a data, cache or report file that cannot be read or written
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{prog}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
