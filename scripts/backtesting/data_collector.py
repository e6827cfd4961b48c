"""Collect Upbit candles into the backtest cache (``backtest_data/``), resuming from what is cached.

Usage::

    python -m scripts.backtesting.data_collector --symbol KRW-BTC --timeframe 1h --start 2024-01-01
    python -m scripts.backtesting.data_collector --symbol KRW-ETH --timeframe 1d --start 2024-01-01 --end 2025-01-01

200 candles a request, paged with ``to``; the client paces itself by Upbit's ``Remaining-Req`` header,
and a 429 that outlasts the client's retries is waited out here and the same page asked again. The
cache file is rewritten after every page, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from src.api.interfaces import IExchangeClient
from src.backtesting.data_provider import (
    PAGE_SIZE,
    SyncReport,
    cache_path,
    find_gaps,
    load_candle_csv,
    sync_candles,
    to_utc,
)
from src.domain.timeframes import Timeframe
from src.exceptions import TradingSystemError


class UpbitDataCollector:
    """Fills ``<data_dir>/{daily,hourly,minute}/<SYMBOL>_<tf>.csv`` from an ``IExchangeClient``."""

    def __init__(self, exchange: IExchangeClient, data_dir: Path, *, rate_limit_wait: float = 1.0) -> None:
        self.exchange = exchange
        self.data_dir = Path(data_dir)
        self.rate_limit_wait = rate_limit_wait

    def estimated_requests(
        self, symbol: str, timeframe: str, start: datetime | str | None, end: datetime | str | None
    ) -> int:
        path = cache_path(self.data_dir, symbol, timeframe)
        step = pd.Timedelta(seconds=Timeframe(timeframe).seconds)
        end_ts = to_utc(end) or pd.Timestamp.now(tz="UTC")
        start_ts = to_utc(start)
        if path.is_file():
            cached = load_candle_csv(path)
            head = (
                (cached.index[0] - start_ts) if start_ts is not None and start_ts < cached.index[0] else pd.Timedelta(0)
            )
            tail = max(end_ts - cached.index[-1], pd.Timedelta(0))
        else:
            head, tail = pd.Timedelta(0), max(end_ts - (start_ts or end_ts), pd.Timedelta(0))
        return int(-(-(head + tail) // (PAGE_SIZE * step))) + 1

    async def collect(
        self,
        symbol: str,
        timeframe: str,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        console: Console | None = None,
    ) -> SyncReport:
        path = cache_path(self.data_dir, symbol, timeframe)
        total = self.estimated_requests(symbol, timeframe, start, end)
        live = console is not None and console.is_terminal
        with Progress(
            TextColumn(f"{symbol} {timeframe}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("requests, {task.fields[added]:,} new candles, at {task.fields[at]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not live,
            transient=False,
        ) as progress:
            task = progress.add_task("collect", total=total, added=0, at="-")
            plain = PlainProgress(f"{symbol} {timeframe}", total, console if not live else None)

            def on_page(report: SyncReport, position: pd.Timestamp) -> None:
                at = position.strftime("%Y-%m-%d %H:%M")
                progress.update(task, completed=min(report.requests, total), added=report.added, at=at)
                plain.update(report.requests, f"{report.added:,} new candles, at {at}")

            report = await sync_candles(
                self.exchange,
                path,
                symbol,
                timeframe,
                start,
                end,
                on_page=on_page,
                rate_limit_wait=self.rate_limit_wait,
            )
            progress.update(task, completed=total)
        return report


class PlainProgress:
    """Progress where no live bar can be drawn (a pipe, a log): one line at every tenth of the way, with the
    time left, so a long collection is never silent until its summary. ``console=None``: nothing."""

    STEPS = 10

    def __init__(self, label: str, total: int, console: Console | None) -> None:
        self.label, self.total, self.console = label, max(total, 1), console
        self._next = 1
        self._started = time.perf_counter()

    def update(self, done: int, detail: str) -> None:
        if self.console is None or done * self.STEPS < self._next * self.total:
            return
        self._next = done * self.STEPS // self.total + 1
        left = (time.perf_counter() - self._started) * max(self.total - done, 0) / max(done, 1)
        self.console.print(
            f"{self.label} {min(100, 100 * done // self.total):>3}%  {done:,}/{self.total:,} requests  {detail}  "
            f"ETA {left:,.0f} s",
            highlight=False,
        )


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(prog: str = "data_collector") -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=prog, description="Collect Upbit candles into the backtest cache.")
    parser.add_argument("--symbol", action="append", help="market such as KRW-BTC (repeatable)")
    parser.add_argument(
        "--timeframe", action="append", choices=[tf.value for tf in Timeframe], help="bar size (repeatable)"
    )
    parser.add_argument("--start", help="first candle (UTC), needed when nothing is cached yet")
    parser.add_argument("--end", help="stop before this time (UTC); default now")
    parser.add_argument("--data-dir", type=Path, help="cache root (default BACKTEST_DATA_DIR)")
    parser.add_argument("--base-url", help="Upbit base URL (default UPBIT_BASE_URL)")
    return parser


async def collect_all(
    symbols: list[str],
    timeframes: list[str],
    start: str | None,
    end: str | None,
    data_dir: Path | None,
    base_url: str | None,
    console: Console,
) -> list[SyncReport]:
    from src.api.upbit_client import UpbitClient
    from src.config.settings import load_settings

    settings = load_settings()
    directory = data_dir or settings.market_data.backtest_data_dir
    client = UpbitClient(base_url or settings.upbit.base_url, timeout=settings.upbit.timeout_seconds)
    reports = []
    try:
        collector = UpbitDataCollector(client, directory)
        for symbol in symbols:
            for timeframe in timeframes:
                report = await collector.collect(symbol, timeframe, start, end, console)
                path = cache_path(directory, symbol, timeframe)
                gaps = find_gaps(load_candle_csv(path), timeframe) if path.is_file() else []
                console.print(
                    f"{symbol} {timeframe}: {report.added} new candles in {report.requests} requests "
                    f"({report.rate_limited} rate-limited), {len(gaps)} gaps -> {path}"
                )
                reports.append(report)
    finally:
        await client.close()
    return reports


def main(argv: list[str] | None = None, prog: str = "data_collector") -> int:
    args = build_parser(prog).parse_args(argv)
    console = Console()
    try:
        asyncio.run(
            collect_all(
                args.symbol or ["KRW-BTC"],
                args.timeframe or ["1h"],
                args.start,
                args.end,
                args.data_dir,
                args.base_url,
                console,
            )
        )
    except TradingSystemError as exc:
        print(f"{prog}: error: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
