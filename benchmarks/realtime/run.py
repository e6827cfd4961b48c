"""Benchmark: from a ticker message that crosses a stop to the exit order leaving the process.

Run from the project root::

    .venv/bin/python -m benchmarks.realtime.run [--crossings 1000] [--database-url URL]

The real scheduler (``TradingScheduler``, live mode, its ``PriceWatch`` and ``RealtimeExits``) trades on the fake
Upbit (REST, ``tests/fakes/upbit_server.py``) and watches the fake Upbit WebSocket
(``tests/fakes/upbit_websocket.py``, the real ``UpbitStream`` client), both on loopback in this process's other
threads; the database is a fresh, migrated SQLite file (or ``--database-url``, e.g. PostgreSQL).

Each crossing: a position of 1,000,000 KRW of KRW-BTC is bought (a real order) with its stop at 94,000,000 and the
watcher refreshed (outside the timing); then the fake WebSocket sends a ticker at 93,000,000. Timed:

- **message -> order out**: from the moment the fake is asked to send the ticker (``perf_counter`` before
  ``FakeUpbitWebSocket.play``) to the moment the sell's ``POST /v1/orders`` leaves our HTTP client (an httpx
  request hook on the Upbit transport: the request is on its way to the socket);
- of which **tick received -> order out**: from the tick's arrival in our process (``PriceTick.received``) to the
  same moment: the watcher, the exit path's reads (position, balances, unsettled orders), the order row
  written, the single-trader lock checked twice.

Prints a table and writes ``benchmarks/results/realtime.json``. Target: p99 of message -> order out < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from backend.app.core.scheduler import TradingScheduler
from backend.app.db.migrations import upgrade_to_head
from backend.app.db.session import create_engine
from backend.app.services.trading_engine import TradingEngine
from src.api.upbit_client import UpbitClient
from src.config.settings import load_settings
from src.domain.market_stream import PriceTick
from src.domain.orders import OrderStatus
from src.utils.logger import configure_logging
from tests.fakes.upbit_server import FakeUpbit
from tests.fakes.upbit_websocket import FakeUpbitWebSocket

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
SYMBOL = "KRW-BTC"
STOP = Decimal("94000000")
CROSSING = 93_000_000


def _book(fake: FakeUpbit) -> None:
    """A fresh book around 95,000,000 (each round trip eats a little of it)."""
    fake.set_orderbook(
        SYMBOL,
        asks=[(95_000_000 + 1000 * (i + 1), "0.5") for i in range(15)],
        bids=[(95_000_000 - 1000 * i, "0.5") for i in range(15)],
    )
    fake.set_ticker(SYMBOL, 95_500_000)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p90_ms": round(percentile(ms, 90), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


async def bench(crossings: int, database_url: str | None, gap: float = 0.25) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-realtime-"))
    url = database_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    await asyncio.to_thread(upgrade_to_head, url)
    fake = FakeUpbit().start()
    fake.enforce_rate_limits = False  # a round trip a few milliseconds apart, far above Upbit's order budget
    fake.seed_demo(krw=Decimal("100000000"))
    _book(fake)
    ws = FakeUpbitWebSocket(upbit=fake).start()
    env = {
        "TRADING_MODE": "live",
        "TRADING_SYMBOLS": SYMBOL,
        "DATABASE_URL": url,
        "UPBIT_BASE_URL": fake.base_url,
        "UPBIT_ACCESS_KEY": fake.access_key,
        "UPBIT_SECRET_KEY": fake.secret_key,
        "UPBIT_WEBSOCKET_URL": ws.url,
        "AI_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "SCHEDULER_METRICS_PORT": "0",
        "SCHEDULER_POSITION_CHECK_MINUTES": "1440",
        "SCHEDULER_CONTROL_POLL_SECONDS": "3600",
    }
    os.environ.update(env)
    settings = load_settings(env_file=None)
    configure_logging(level="WARNING", log_format="console")
    db_engine = create_engine(url)
    engine = await TradingEngine.create(settings, db_engine, quick_filter=None)
    scheduler = TradingScheduler(engine, db_engine, settings.scheduler)
    exchange = engine.pipeline.exchange
    assert isinstance(exchange, UpbitClient)
    out: list[float] = []

    async def on_request(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path == "/v1/orders" and b'"ask"' in request.content:
            out.append(time.perf_counter())

    exchange.transport._http.event_hooks["request"].append(on_request)
    received: list[float] = []
    watcher = engine.watcher
    original_check = watcher.check

    def check(tick: PriceTick) -> Any:
        if watcher.position(tick.symbol) is not None and tick.price <= STOP:
            received.append(tick.received)
        return original_check(tick)

    watcher.check = check  # type: ignore[method-assign]
    task = asyncio.create_task(scheduler.run(handle_signals=False))
    await asyncio.wait_for(scheduler.started.wait(), timeout=30)
    watch = scheduler.price_watch
    assert watch is not None
    total: list[float] = []
    tick_to_out: list[float] = []
    missed = 0
    loads = [os.getloadavg()[0]]
    try:
        for index in range(crossings):
            if index % 50 == 49:
                loads.append(os.getloadavg()[0])
            await _open(engine, scheduler, fake)
            if index == 0:
                await _until(lambda: any(SYMBOL in s.codes for s in ws.current_subscriptions()), 10)
                await _until(lambda: watch.state.value == "live", 10)
            await asyncio.sleep(gap)  # crossings this far apart: the client's order budget (12/s) never waits
            exits, sent_before, received_before = watch.exits, len(out), len(received)
            started = time.perf_counter()
            ws.play([(SYMBOL, CROSSING)])
            if not await _until(lambda: len(out) > sent_before and watch.exits > exits, 5):  # noqa: B023
                missed += 1
                continue
            total.append(out[-1] - started)
            if len(received) > received_before:
                tick_to_out.append(out[-1] - received[-1])
    finally:
        scheduler.request_stop("benchmark done")
        await asyncio.wait_for(task, timeout=30)
        await engine.aclose()
        await db_engine.dispose()
        ws.stop()
        fake.stop()
    load = os.getloadavg()
    return {
        "benchmark": "realtime exits: ticker crossing a stop -> exit order leaving the process",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": "sqlite" if database_url is None else create_engine(url).dialect.name,
        "crossings": crossings,
        "gap_seconds": gap,
        "missed": missed,
        "message_to_order_out": summary(total),
        "tick_received_to_order_out": summary(tick_to_out) if tick_to_out else None,
        "p50_ms_by_100": [
            round(percentile([t * 1000 for t in total[i : i + 100]], 50), 2) for i in range(0, len(total), 100)
        ],
        "target_p99_ms": 50,
        "met": bool(total) and percentile([t * 1000 for t in total], 99) < 50 and not missed,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_1min_during": {"min": round(min(loads), 2), "max": round(max(loads), 2)},
            "load_after": [round(value, 2) for value in load],
        },
    }


async def _open(engine: TradingEngine, scheduler: TradingScheduler, fake: FakeUpbit) -> None:
    """A new position with its stop at ``STOP``, and the watcher told (outside the timing)."""
    _book(fake)
    async with scheduler.runner.work_lock:
        result = await engine.pipeline.trading.market_buy(SYMBOL, Decimal("1000000"), reason="bench", cycle_id=None)
        assert result.status is OrderStatus.FILLED, result
        store = engine.pipeline.positions.store
        position = await store.get_open_position(engine.mode, SYMBOL)
        assert position is not None
        await store.update_position(replace(position, stop_price=STOP, take_profit_price=None, trailing_stop_pct=None))
        await scheduler.runner.account_changed()


async def _until(check: Any, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.0005)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crossings", type=int, default=1000)
    parser.add_argument("--database-url", default=None, help="a migrated or empty database (default: a SQLite file)")
    parser.add_argument(
        "--gap", type=float, default=0.25, help="seconds between a position's entry and its crossing (default 0.25)"
    )
    args = parser.parse_args()
    if args.crossings < 1:
        parser.error("--crossings must be at least 1")
    if args.gap < 0:
        parser.error("--gap must be 0 or more seconds")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    result = asyncio.run(bench(args.crossings, args.database_url, args.gap))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "realtime.json" if result["database"] == "sqlite" else f"realtime-{result['database']}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print("| database | crossings | missed | measure | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for key in ("message_to_order_out", "tick_received_to_order_out"):
        s = result[key]
        if s:
            print(
                f"| {result['database']} | {result['crossings']} | {result['missed']} | {key} | {s['p50_ms']} | "
                f"{s['p90_ms']} | {s['p99_ms']} | {s['max_ms']} |"
            )
    machine = result["machine"]
    print(
        f"target p99 < 50 ms: {'met' if result['met'] else 'NOT met'}; 1-minute load during "
        f"{machine['load_1min_during']['min']}-{machine['load_1min_during']['max']} on {machine['cpus']} cores"
    )


if __name__ == "__main__":
    main()
