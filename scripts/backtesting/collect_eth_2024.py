"""Collect KRW-ETH candles for 2024 (UTC) into the backtest cache: daily, 4-hourly and hourly.

Usage: ``python -m scripts.backtesting.collect_eth_2024 [--timeframe 1h] [--data-dir DIR] [--base-url URL]``
Needs network access to Upbit (or a compatible server); resumes if interrupted.
"""

from __future__ import annotations

import sys

from scripts.backtesting.data_collector import main as collector_main

START, END = "2024-01-01T00:00:00+00:00", "2025-01-01T00:00:00+00:00"
TIMEFRAMES = ("1d", "4h", "1h")


def main(argv: list[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    if "--timeframe" not in args:
        for timeframe in TIMEFRAMES:
            args += ["--timeframe", timeframe]
    return collector_main(["--symbol", "KRW-ETH", "--start", START, "--end", END, *args], prog="collect_eth_2024")


if __name__ == "__main__":
    sys.exit(main())
