"""Check candle files and write cleaned copies.

Usage::

    python -m scripts.backtesting.data_quality report backtest_data/hourly/KRW-BTC_1h.csv --timeframe 1h [--json]
    python -m scripts.backtesting.data_quality clean BAD.csv --out CLEAN.csv

``report`` exits 1 when the file has problems the backtester would refuse; ``clean`` drops unparsable,
duplicate and inconsistent rows (and says how many), never fills gaps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.table import Table

from src.backtesting.data_quality import clean_candles, quality_report
from src.domain.timeframes import Timeframe
from src.exceptions import TradingSystemError


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"data_quality: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog="data_quality", description="Validate and clean candle CSVs.")
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="list every problem of a candle file")
    report.add_argument("file", type=Path)
    report.add_argument("--timeframe", required=True, choices=[tf.value for tf in Timeframe])
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    clean = commands.add_parser("clean", help="write a cleaned copy")
    clean.add_argument("file", type=Path)
    clean.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    console = Console()
    try:
        if not args.file.is_file():
            print(f"data_quality: error: {args.file}: file not found", file=sys.stderr)
            return 1
        if args.command == "clean":
            result = clean_candles(args.file, args.out)
            console.print(
                f"{result.rows_in:,} rows in, {result.rows_out:,} out; dropped {result.dropped} -> {args.out}"
            )
            return 0
        found = quality_report(args.file, args.timeframe)
        if args.json:
            print(json.dumps(found.to_dict(), indent=2))
        else:
            table = Table(title=f"Quality of {args.file}")
            table.add_column("check")
            table.add_column("value", justify="right")
            for key, value in found.to_dict().items():
                table.add_row(key, str(value))
            console.print(table)
        return 0 if found.clean else 1
    except TradingSystemError as exc:
        print(f"data_quality: error: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
