"""Backtest a strategy on historical Upbit candles: ``python backtest.py --help``.

With no arguments: the bot's own settings (``TRADING_STRATEGY`` with ``STRATEGY_PARAMS``, ``PAPER_STARTING_KRW``,
the fee, ``BACKTEST_SLIPPAGE_PCT``, every risk rule and the quick filter) on the bundled KRW-BTC hourly candles.
Flags override. See docs/BACKTESTING.md.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
from rich.console import Console

from src.backtesting.runner import BacktestRequest, run_backtest
from src.config.bootstrap import warn_about_unknown_keys
from src.config.settings import Settings, load_settings
from src.domain.params_json import parse_params_json
from src.exceptions import TradingSystemError
from src.utils.logger import configure_logging, install_excepthooks, redactor


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"backtest.py: error: {message} (see --help)\n")


def _finite(text: str) -> float:
    """Every number on this command line is finite: nan, inf and -inf are refused before any bound is checked."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _share(text: str) -> float:
    value = _finite(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _slippage(text: str) -> float:
    value = _finite(text)
    if not 0 <= value < 10:
        raise argparse.ArgumentTypeError(f"must be a percent in [0, 10) such as 0.05, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _finite(text)
    if not 0 <= value < 0.01:
        raise argparse.ArgumentTypeError(f"must be a rate in [0, 0.01) such as 0.0005, got {text}")
    return value


def _percent(text: str) -> float:
    value = _finite(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be in [0, 100], got {text}")
    return value


def _moment(text: str) -> str:
    """An ISO date or date-time (UTC when naive) that pandas can place on its time axis; kept as given."""
    try:
        datetime.fromisoformat(text)
        pd.Timestamp(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"expected an ISO date such as 2023-01-01 or 2023-01-01T09:00, got {text!r}"
        ) from None
    return text


def _strategy_name(text: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", text):
        raise argparse.ArgumentTypeError(f"expected a strategy name such as rule_breakout, got {text!r}")
    return text


def _params(text: str) -> dict[str, object]:
    try:
        return parse_params_json(text, "--params")
    except TradingSystemError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _output_file(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; expected a file path such as {path / 'report'}")
    return path


DEFAULT_SYMBOL = "KRW-BTC"
_MARKET_IN_NAME = re.compile(r"(KRW-[A-Z0-9]{1,15})(?=[_.\-])")


def market_of_file(path: Path | None) -> str | None:
    """The market a candle file is named for (``KRW-ETH_4h.csv`` -> ``KRW-ETH``), or None."""
    found = _MARKET_IN_NAME.match(path.name) if path is not None else None
    return found.group(1) if found else None


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="backtest.py", description="Backtest a strategy on historical Upbit candles.")
    p.add_argument("--symbol", help="market, e.g. KRW-ETH (default KRW-BTC, or the market a --data file is named for)")
    p.add_argument("--timeframe", default="1h", choices=["1m", "5m", "1h", "4h", "1d"], help="bar size (default 1h)")
    p.add_argument("--data", type=Path, help="a candle CSV (timestamp,open,high,low,close,volume[,value]) instead")
    p.add_argument(
        "--strategy",
        type=_strategy_name,
        help="a bundled strategy (rule_breakout, volatility_breakout), ai, or one from STRATEGY_PATH "
        "(default TRADING_STRATEGY)",
    )
    p.add_argument("--params", type=_params, help="strategy parameters as a JSON object, e.g. '{\"k\": 0.6}'")
    p.add_argument(
        "--start",
        type=_moment,
        help="first moment of the bot's clock (UTC), e.g. 2023-01-01: the bot acts at every bar close from then on, "
        "as scheduler_main.py --replay --start (earlier candles are warm-up)",
    )
    p.add_argument("--end", type=_moment, help="the bot's clock stops before this moment (UTC), as in replay")
    p.add_argument("--fee", type=_fraction, help="fee rate per side (default TRADING_FEE_RATE, 0.0005)")
    p.add_argument("--slippage", type=_slippage, help="slippage percent per fill (default BACKTEST_SLIPPAGE_PCT)")
    p.add_argument("--capital", type=_positive, help="starting KRW (default PAPER_STARTING_KRW)")
    p.add_argument(
        "--position-fraction",
        type=_share,
        help="fixed share of equity per entry (0..1]; default POSITION_SIZING / POSITION_FRACTION_PCT",
    )
    p.add_argument("--no-tick-rounding", action="store_true", help="fill at exact prices, not on the KRW tick grid")
    p.add_argument(
        "--no-risk-rules",
        action="store_true",
        help="research: no trade spacing, daily cap, position caps, cash reserve or circuit breakers",
    )
    p.add_argument("--no-quick-filter", action="store_true", help="research: no quick filter gate before entries")
    p.add_argument("--k", type=_positive, help="volatility breakout k (default 0.5)")
    p.add_argument("--trend-filter", action="store_true", help="volatility breakout: open > mean of last 5 closes")
    p.add_argument("--atr-stop", type=_positive, help="stop in ATRs (parameter stop_atr; rule strategy default 2)")
    p.add_argument("--atr-target", type=_positive, help="target in ATRs (parameter target_atr; default 3)")
    p.add_argument("--squeeze-mode", choices=["bb_or_adx", "bb", "adx"], help="rule strategy squeeze gate")
    p.add_argument("--breakout-mode", choices=["donchian", "range"], help="rule strategy breakout gate")
    p.add_argument("--volume-multiplier", type=_positive, help="rule strategy volume gate (default 1.5)")
    p.add_argument("--ai-cache", type=Path, help="AI decision cache (JSON lines) to replay/record")
    p.add_argument(
        "--decisions-from",
        metavar="DATABASE_URL",
        help="ai: replay the decisions the bot recorded in this database (by candle) instead of asking the model",
    )
    p.add_argument("--min-confidence", type=_percent, help="AI confidence needed to buy (default AI_MIN_CONFIDENCE)")
    p.add_argument("--trades", type=int, default=10, help="how many of the last trades to print (default 10)")
    p.add_argument("--json", type=_output_file, dest="json_out", help="write metrics and trades to this JSON file")
    p.add_argument(
        "--parity",
        action="store_true",
        help="also replay the bot over --start..--end and compare trade by trade (exit 0 identical, 1 different; "
        "--json writes the comparison); see docs/PARITY.md",
    )
    p.add_argument("--html", type=_output_file, dest="html_out", help="write a self-contained HTML report")
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
        symbol=args.symbol or market_of_file(args.data) or DEFAULT_SYMBOL,
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
    args = build_parser().parse_args(argv)
    request = request_from_args(args)
    console = Console()
    install_excepthooks()
    warn_about_unknown_keys()
    try:
        settings = load_settings()
        configure_logging("WARNING", settings.observability.log_format.value, settings.secret_values())
        if args.parity:
            return _parity(request, settings, console)
        run_backtest(request, settings, console)
    except TradingSystemError as exc:
        print(f"backtest.py: error: {redactor.scrub_text(exc.message)}", file=sys.stderr)
        return 1
    except OSError as exc:  # a data, cache or report file that cannot be read or written
        where = f": {exc.filename}" if exc.filename else ""
        print(f"backtest.py: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
