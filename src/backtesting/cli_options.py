"""The command-line options every ``backtest.py`` command shares, defined once.

``python backtest.py [flags]`` (one backtest) and its sub-commands (``optimize``, ``monte-carlo``, ``ai-value``)
read candles the same way: ``--symbol``, ``--timeframe``, ``--data``, ``--start``, ``--end``, ``--fee`` and
``--slippage`` (``add_data_options``). Each value is checked by its type function here, so a bad value is one
line naming the option (``OneLineParser``), never a traceback.
"""

from __future__ import annotations

import argparse
import math
import re
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import pandas as pd

from src.domain.params_json import parse_params_json
from src.exceptions import TradingSystemError

DEFAULT_SYMBOL = "KRW-BTC"
TIMEFRAMES = ("1m", "5m", "1h", "4h", "1d")
_MARKET_IN_NAME = re.compile(r"(KRW-[A-Z0-9]{1,15})(?=[_.\-])")


class OneLineParser(argparse.ArgumentParser):
    """An argument error is one line on stderr (``PROG: error: ... (see --help)``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def finite(text: str) -> float:
    """Every number on this command line is finite: nan, inf and -inf are refused before any bound is checked."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive(text: str) -> float:
    value = finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def share(text: str) -> float:
    value = finite(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def slippage(text: str) -> float:
    value = finite(text)
    if not 0 <= value < 10:
        raise argparse.ArgumentTypeError(f"must be a percent in [0, 10) such as 0.05, got {text}")
    return value


def fee_rate(text: str) -> float:
    value = finite(text)
    if not 0 <= value < 0.01:
        raise argparse.ArgumentTypeError(f"must be a rate in [0, 0.01) such as 0.0005, got {text}")
    return value


def percent(text: str) -> float:
    value = finite(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be in [0, 100], got {text}")
    return value


def moment(text: str) -> str:
    """An ISO date or date-time (UTC when naive) that pandas can place on its time axis; kept as given."""
    try:
        datetime.fromisoformat(text)
        pd.Timestamp(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"expected an ISO date such as 2023-01-01 or 2023-01-01T09:00, got {text!r}"
        ) from None
    return text


def strategy_name(text: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", text):
        raise argparse.ArgumentTypeError(f"expected a strategy name such as rule_breakout, got {text!r}")
    return text


def params_json(text: str) -> dict[str, object]:
    try:
        return parse_params_json(text, "--params")
    except TradingSystemError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def output_file(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; expected a file path such as {path / 'report'}")
    return path


def market_of_file(path: Path | None) -> str | None:
    """The market a candle file is named for (``KRW-ETH_4h.csv`` -> ``KRW-ETH``), or None."""
    found = _MARKET_IN_NAME.match(path.name) if path is not None else None
    return found.group(1) if found else None


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """The candles and costs: the same options, help and checks on every ``backtest.py`` command."""
    parser.add_argument(
        "--symbol", help="market, e.g. KRW-ETH (default KRW-BTC, or the market a --data file is named for)"
    )
    parser.add_argument("--timeframe", default="1h", choices=TIMEFRAMES, help="bar size (default 1h)")
    parser.add_argument("--data", type=Path, help="a candle CSV (timestamp,open,high,low,close,volume[,value]) instead")
    parser.add_argument(
        "--start",
        type=moment,
        help="first moment of the bot's clock (UTC), e.g. 2023-01-01: the bot acts at every bar close from then on, "
        "as scheduler_main.py --replay --start (earlier candles are warm-up)",
    )
    parser.add_argument("--end", type=moment, help="the bot's clock stops before this moment (UTC), as in replay")
    parser.add_argument("--fee", type=fee_rate, help="fee rate per side (default TRADING_FEE_RATE, 0.0005)")
    parser.add_argument("--slippage", type=slippage, help="slippage percent per fill (default BACKTEST_SLIPPAGE_PCT)")


def symbol_of(args: argparse.Namespace) -> str:
    """``--symbol``, else the market the ``--data`` file is named for, else KRW-BTC."""
    return str(args.symbol or market_of_file(args.data) or DEFAULT_SYMBOL)
