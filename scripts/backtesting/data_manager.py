"""Manage the backtest candle cache: list it, merge/dedupe files, import a CSV into it.

Usage::

    python -m scripts.backtesting.data_manager list
    python -m scripts.backtesting.data_manager merge A.csv B.csv --out MERGED.csv
    python -m scripts.backtesting.data_manager import FILE.csv --symbol KRW-BTC --timeframe 1h

Every input is validated by the strict loader first (file, line and reason on error). Where two inputs
hold the same timestamp, the later file wins.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.table import Table

from src.backtesting.data_provider import cache_path, find_gaps, load_candle_csv, merge_candles, save_candle_csv
from src.domain.timeframes import Timeframe
from src.exceptions import TradingSystemError


def merge_files(inputs: list[Path], out: Path) -> int:
    merged = load_candle_csv(inputs[0])
    for path in inputs[1:]:
        merged = merge_candles(merged, load_candle_csv(path))
    save_candle_csv(merged, out)
    return len(merged)


def import_file(source: Path, data_dir: Path, symbol: str, timeframe: str) -> tuple[Path, int]:
    target = cache_path(data_dir, symbol, timeframe)
    incoming = load_candle_csv(source)
    merged = merge_candles(load_candle_csv(target), incoming) if target.is_file() else incoming
    save_candle_csv(merged, target)
    return target, len(merged)


def list_cache(data_dir: Path, console: Console) -> None:
    table = Table(title=f"Candle cache {data_dir}")
    for column in ("file", "rows", "first", "last", "gaps"):
        table.add_column(column)
    for path in sorted(data_dir.glob("*/*.csv")):
        timeframe = path.stem.rsplit("_", 1)[-1]
        df = load_candle_csv(path)
        gaps = len(find_gaps(df, timeframe)) if Timeframe.is_known(timeframe) else "-"
        table.add_row(
            str(path.relative_to(data_dir)),
            f"{len(df):,}",
            df.index[0].isoformat(),
            df.index[-1].isoformat(),
            str(gaps),
        )
    console.print(table)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"data_manager: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog="data_manager", description="Manage the backtest candle cache.")
    parser.add_argument("--data-dir", type=Path, help="cache root (default BACKTEST_DATA_DIR)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="files, rows, span and gaps of the cache")
    merge = commands.add_parser("merge", help="merge and de-duplicate candle CSVs")
    merge.add_argument("inputs", type=Path, nargs="+")
    merge.add_argument("--out", type=Path, required=True)
    imp = commands.add_parser("import", help="validate a CSV and merge it into the cache")
    imp.add_argument("source", type=Path)
    imp.add_argument("--symbol", required=True)
    imp.add_argument("--timeframe", required=True, choices=[tf.value for tf in Timeframe])
    args = parser.parse_args(argv)
    console = Console()
    try:
        if args.command == "merge":
            console.print(f"{merge_files(args.inputs, args.out):,} candles -> {args.out}")
            return 0
        from src.config.settings import load_settings

        data_dir = args.data_dir or load_settings().market_data.backtest_data_dir
        if args.command == "list":
            list_cache(data_dir, console)
        else:
            target, rows = import_file(args.source, data_dir, args.symbol, args.timeframe)
            console.print(f"{rows:,} candles -> {target}")
    except TradingSystemError as exc:
        print(f"data_manager: error: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
