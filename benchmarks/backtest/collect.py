"""Benchmark: collecting candles into a new file through the real client against the fake Upbit server.

Run from the project root (``--before DIR``: also run the same collection with the code in DIR, e.g. a
``git archive`` of an earlier commit, in a fresh process)::

    .venv/bin/python -m benchmarks.backtest.collect [--candles 40000] [--before DIR]

Times ``sync_candles`` (what ``python -m scripts.backtesting.data_collector`` runs per file): paging 200 hourly
candles a request from the fake exchange (loopback HTTP, tests/fakes/upbit_server.py) into an empty CSV.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

START = datetime(2020, 1, 1, tzinfo=UTC)


async def collect(candles: int, out: Path) -> tuple[int, float]:
    from src.api.upbit_client import UpbitClient
    from src.backtesting.data_provider import sync_candles
    from tests.fakes.upbit_server import FakeUpbit
    from tests.support.candles import make_candles

    async with FakeUpbit() as fake:
        fake.set_candles("KRW-BTC", "1h", make_candles(START, candles, "1h", seed=3))
        client = UpbitClient(fake.base_url, backoff_seconds=0.01)
        try:
            started = time.perf_counter()
            report = await sync_candles(client, out, "KRW-BTC", "1h", START, START + pd.Timedelta(hours=candles))
            return report.requests, time.perf_counter() - started
        finally:
            await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candles", type=int, default=40_000)
    parser.add_argument("--before", type=Path)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: one run into this file
    args = parser.parse_args()
    if args.one is not None:
        requests, seconds = asyncio.run(collect(args.candles, args.one))
        print(f"{requests} {seconds}")
        return
    trees = {"after": Path(__file__).resolve().parents[2]}
    if args.before is not None:
        trees["before"] = args.before.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        for name, root in trees.items():
            out = Path(tmp) / f"{name}.csv"
            done = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--candles", str(args.candles), "--one", str(out)],
                cwd=root,
                env={**os.environ, "PYTHONPATH": str(root)},  # this script, the code of ``root``
                capture_output=True,
                text=True,
                check=True,
            )
            requests, seconds = done.stdout.split()[-2:]
            print(f"{name}: {args.candles:,} hourly candles in {requests} requests: {float(seconds):.1f} s")


if __name__ == "__main__":
    main()
