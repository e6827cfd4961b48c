"""Benchmark: 500 WebSocket clients on ``/api/v1/ws/events``; how long after its commit each client has an event.

Run from the project root::

    .venv/bin/python -m benchmarks.events.run [--database sqlite|postgresql] [--clients 500] [--events 40]

It makes a fresh database (a SQLite file in a temporary directory, or a private PostgreSQL database at
127.0.0.1:5432, dropped at the end), starts ``uvicorn backend.app.main:app`` (one worker: one fan-out reader),
connects the clients (authenticated with ``X-API-Key``), then commits ``--events`` events one at a time, the way
the scheduler's repositories do (``BotRepository.write_heartbeat``: the ``bot_state`` row and its ``heartbeat``
event in one transaction), ``--interval`` seconds apart. Each client notes when each event arrived; the latency
is arrival minus the moment the writer's commit returned (one clock: writer and clients share this process).
While the clients are connected it also times ``GET /api/v1/bot/status`` (``--http-requests``, one at a time),
the API's other work. Prints a markdown row and writes ``benchmarks/results/events-<database>.json``.

``--with-api-load`` adds the API benchmark's load (``benchmarks.api.run``: its data, its wrk runs, its four
targets at 64 connections with 2 wrk threads, on 2 workers with a pool of 4 each) to the same server::

    .venv/bin/python -m benchmarks.events.run --with-api-load [--database postgresql] [--rows 1000000] \
        [--duration 20] [--rounds 2]

It loads ``--rows`` trades, then alternates ``--rounds`` times: the clients connect and events are committed
every ``--interval`` s while wrk runs against each target in turn (a 3 s warm-up, then ``--duration`` s); the
clients leave and wrk runs against each target again. Writes ``benchmarks/results/events-api-load-<database>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from backend.app.db.migrations import upgrade_to_head
from backend.app.db.queries.paging import Cursor
from backend.app.db.repositories.bot import BotRepository
from backend.app.db.session import create_engine, session_factory
from benchmarks.api.run import (
    API_KEY,
    SERVER_URL,
    _admin,
    _describe_machine,
    _free_port,
    _trade_csv,
    cpu_probe_ms,
    load,
    run_wrk,
    start_server,
    stop_server,
)
from src.domain.modes import TradingMode
from src.domain.orders import Side, TradeStatus

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
PATH = "/api/v1/ws/events"


@dataclass
class Result:
    database: str
    clients: int
    connected: int
    events: int
    deliveries: int
    missing: int
    duplicates: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    within_1s: float
    connect_seconds: float
    http_status_p50_ms: float
    http_status_p99_ms: float
    cpu_probe_ms_before: float
    cpu_probe_ms_after: float
    load_average: float


class Client:
    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}
        self.duplicates = 0
        self.ws: ClientConnection | None = None

    async def run(self, url: str, ready: asyncio.Event) -> None:
        async with connect(url, additional_headers={"X-API-Key": API_KEY}, max_queue=None, open_timeout=60) as ws:
            self.ws = ws
            ready.set()
            async for raw in ws:
                arrived = time.perf_counter()
                message = json.loads(raw)
                event_id = message.get("id")
                if event_id is None:
                    continue  # a ping
                if event_id in self.arrivals:
                    self.duplicates += 1
                self.arrivals[event_id] = arrived


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def write_events(
    url: str, count: int | None, interval: float, stop: asyncio.Event | None = None
) -> dict[int, float]:
    """Commit ``count`` heartbeats (or until ``stop`` is set); the id of each one's event and when its commit
    returned."""
    engine = create_engine(url)
    bot = BotRepository(session_factory(engine), TradingMode.PAPER)
    committed: dict[int, float] = {}
    try:
        while (count is None or len(committed) < count) and not (stop is not None and stop.is_set()):
            await bot.write_heartbeat(
                "bench", state="running", mode="paper", symbols=["KRW-BTC"], details={"desired_state": "running"}
            )
            committed_at = time.perf_counter()
            async with engine.connect() as connection:  # the id, read after the commit (not timed)
                event_id = (await connection.exec_driver_sql("SELECT max(id) FROM events")).scalar_one()
            committed[int(event_id)] = committed_at
            await asyncio.sleep(interval)
    finally:
        await engine.dispose()
    return committed


async def time_status(base: str, requests: int) -> list[float]:
    times = []
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": API_KEY}) as client:
        for _ in range(requests):
            started = time.perf_counter()
            response = await client.get("/api/v1/bot/status")
            times.append(time.perf_counter() - started)
            response.raise_for_status()
            await asyncio.sleep(0.02)
    return times


async def connect_crowd(port: int, clients: int) -> tuple[list[Client], list[asyncio.Task[None]], float]:
    """Connect ``clients`` WebSocket clients (a ramp, not a thundering herd of handshakes); seconds it took."""
    ws_url = f"ws://127.0.0.1:{port}{PATH}"
    crowd = [Client() for _ in range(clients)]
    readies = [asyncio.Event() for _ in crowd]
    started = time.perf_counter()
    tasks = []
    for client, ready in zip(crowd, readies, strict=True):
        tasks.append(asyncio.create_task(client.run(ws_url, ready)))
        await asyncio.sleep(0.002)
    await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in readies)), 120)
    connect_seconds = time.perf_counter() - started
    await asyncio.sleep(1.0)  # every client subscribed
    return crowd, tasks, connect_seconds


async def disconnect(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def delivery_stats(crowd: list[Client], committed: dict[int, float]) -> dict[str, float | int]:
    """Each client's latency for each committed event: arrival minus the commit's return."""
    latencies = []
    missing = 0
    for client in crowd:
        for event_id, at in committed.items():
            arrived = client.arrivals.get(event_id)
            if arrived is None:
                missing += 1
            else:
                latencies.append(arrived - at)
    ms = [value * 1000 for value in latencies] or [float("nan")]
    return {
        "clients": len(crowd),
        "connected": sum(1 for client in crowd if client.ws is not None),
        "events": len(committed),
        "deliveries": len(latencies),
        "missing": missing,
        "duplicates": sum(client.duplicates for client in crowd),
        "p50_ms": round(statistics.median(ms), 1),
        "p90_ms": round(percentile(ms, 0.90), 1),
        "p99_ms": round(percentile(ms, 0.99), 1),
        "max_ms": round(max(ms), 1),
        "within_1s": round(sum(1 for value in ms if value <= 1000) / len(ms), 5),
    }


async def measure(url: str, port: int, clients: int, events: int, interval: float, http_requests: int) -> Result:
    crowd, tasks, connect_seconds = await connect_crowd(port, clients)
    probe_before = cpu_probe_ms()
    status = asyncio.create_task(time_status(f"http://127.0.0.1:{port}", http_requests))
    committed = await write_events(url, events, interval)
    status_times = await status
    await asyncio.sleep(2.0)  # the last event reaches everyone
    probe_after = cpu_probe_ms()
    await disconnect(tasks)
    stats = delivery_stats(crowd, committed)
    status_ms = [value * 1000 for value in status_times]
    return Result(
        database=make_label(url),
        **stats,  # type: ignore[arg-type]
        connect_seconds=round(connect_seconds, 2),
        http_status_p50_ms=round(statistics.median(status_ms), 1),
        http_status_p99_ms=round(percentile(status_ms, 0.99), 1),
        cpu_probe_ms_before=probe_before,
        cpu_probe_ms_after=probe_after,
        load_average=round(os.getloadavg()[0], 2),
    )


# --- --with-api-load: the API benchmark's wrk load while the clients are connected, and without them ---------
API_P99_TARGET_MS = 50.0  # "Backend API": p99 < 50 ms at 64 connections, 2 workers, 0 errors
# uvicorn as docs/API.md runs it: no permessage-deflate (a zlib context and a compression per client per event)
SERVER_ARGS = ["--ws-per-message-deflate", "false"]


def load_sqlite(url: str, rows: int) -> float:
    """The API benchmark's trades (``_trade_csv``) into the SQLite file, through the models' column types."""
    from sqlalchemy import create_engine as create_sync_engine

    from backend.app.models.trade import TradeRow

    started = time.perf_counter()
    engine = create_sync_engine(url.replace("+aiosqlite", ""))
    table = TradeRow.__table__
    try:
        for first in range(0, rows, 50_000):
            batch = []
            for line in _trade_csv(first, min(50_000, rows - first)).decode().splitlines():
                trade_id, symbol, side, price, amount, total, fee, pnl, status, mode, created, updated = line.split(",")
                batch.append({
                    "trade_id": trade_id, "symbol": symbol, "side": Side(side), "price": Decimal(price),
                    "amount": Decimal(amount), "total": Decimal(total), "fee": Decimal(fee),
                    "realized_pnl": Decimal(pnl) if pnl else None, "status": TradeStatus(status),
                    "mode": TradingMode(mode), "created_at": datetime.fromisoformat(created),
                    "updated_at": datetime.fromisoformat(updated),
                })  # fmt: skip
            with engine.begin() as connection:
                connection.execute(table.insert(), batch)
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
    return time.perf_counter() - started


async def deep_cursor_any(url: str, offset: int) -> str:
    """The cursor of the page after row ``offset`` (newest first), on either database."""
    from sqlalchemy import select

    from backend.app.models.trade import TradeRow

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            statement = (
                select(TradeRow.created_at, TradeRow.id)
                .order_by(TradeRow.created_at.desc(), TradeRow.id.desc())
                .offset(offset)
                .limit(1)
            )
            row = (await connection.execute(statement)).one()
    finally:
        await engine.dispose()
    return Cursor(row.created_at.astimezone(UTC), row.id).encode()


async def measure_with_api(
    url: str, servers: list[tuple[str, int]], targets: dict[str, str], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``--rounds`` rounds, each: the clients connect, events are committed every ``--interval`` s while wrk runs
    against each target in turn, the clients leave; then wrk against each target again with no client connected.
    With several servers (``--baseline``) the rounds alternate between them. wrk runs in a thread so the clients
    in this process keep reading."""
    deliveries: list[dict[str, Any]] = []
    api: list[dict[str, Any]] = []

    windows: dict[str, tuple[float, float]] = {}  # each target's measured wrk run, on this process's clock

    async def wrk_all(round_no: int, phase: str) -> None:
        for label, path in targets.items():
            target = f"http://127.0.0.1:{port}{path}"
            wrk_nice = -args.client_nice  # wrk at the server's priority, whatever this process runs at
            await asyncio.to_thread(run_wrk, target, args.connections, 3, args.threads, wrk_nice)  # warm-up
            window_start = time.perf_counter()
            measured = await asyncio.to_thread(run_wrk, target, args.connections, args.duration, args.threads, wrk_nice)
            windows[label] = (window_start, time.perf_counter())
            api.append({"round": round_no, "server": server, "phase": phase, "target": label,
                        "connections": args.connections, "load_average": round(os.getloadavg()[0], 2),
                        **measured})  # fmt: skip
            print(api_row(api[-1]), flush=True)

    for round_no in range(1, args.rounds + 1):
        server, port = servers[(round_no - 1) % len(servers)]
        crowd, tasks, connect_seconds = await connect_crowd(port, args.clients)
        probe_before = cpu_probe_ms()
        stop = asyncio.Event()
        writer = asyncio.create_task(write_events(url, None, args.interval, stop))
        try:
            await wrk_all(round_no, f"with {args.clients} clients")
        finally:
            stop.set()
            committed = await writer
        await asyncio.sleep(2.0)  # the last event reaches everyone
        stats = delivery_stats(crowd, committed)
        by_target = {  # the events committed while wrk measured each target
            label: delivery_stats(crowd, {key: at for key, at in committed.items() if start <= at < end})
            for label, (start, end) in windows.items()
        }
        await disconnect(tasks)
        deliveries.append({"round": round_no, "server": server, **stats, "connect_seconds": round(connect_seconds, 2),
                           "cpu_probe_ms_before": probe_before, "cpu_probe_ms_after": cpu_probe_ms(),
                           "load_average": round(os.getloadavg()[0], 2), "during_target": by_target})  # fmt: skip
        print(delivery_row(deliveries[-1]), flush=True)
        for label, target_stats in by_target.items():
            print(f"    while wrk ran {label}: {json.dumps(target_stats)}", flush=True)
        windows.clear()
        await asyncio.sleep(2.0)
        await wrk_all(round_no, "no clients")
    return deliveries, api


def api_row(result: dict[str, Any]) -> str:
    verdict = "met" if result["p99_ms"] < API_P99_TARGET_MS and result["errors"] == 0 else "**missed**"
    return (
        f"| {result['round']} | {result.get('server', 'api')} | {result['phase']} | `{result['target']}` | "
        f"{result['requests_per_second']:,.0f} | "
        f"{result['p50_ms']:.1f} | {result['p99_ms']:.1f} | < {API_P99_TARGET_MS:.0f}: {verdict} | "
        f"{result['errors']} | {result['load_average']} |"
    )


def delivery_row(stats: dict[str, Any]) -> str:
    return (
        f"| {stats['round']} | {stats.get('server', 'api')} | {stats['connected']}/{stats['clients']} | "
        f"{stats['events']} | "
        f"{stats['deliveries']:,} | {stats['missing']} | {stats['duplicates']} | {stats['p50_ms']} | "
        f"{stats['p90_ms']} | **{stats['p99_ms']}** | {stats['max_ms']} | {stats['within_1s']:.2%} | "
        f"{stats['load_average']} |"
    )


def run_with_api_load(url: str, args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk (see benchmarks/README.md, Backend API)")
    postgresql = url.startswith("postgresql")
    load_seconds = asyncio.run(load(url, args.rows)) if postgresql else load_sqlite(url, args.rows)
    print(f"loaded {args.rows:,} trades in {load_seconds:.1f} s", flush=True)
    deep = min(args.deep_offset, args.rows - 100)
    cursor = asyncio.run(deep_cursor_any(url, deep))
    targets = {
        "GET /api/v1/trades?limit=50": "/api/v1/trades?limit=50",
        f"GET /api/v1/trades?limit=50&cursor=<row {deep:,}>": f"/api/v1/trades?limit=50&cursor={cursor}",
        "GET /api/v1/bot/status": "/api/v1/bot/status",
        "GET /metrics": "/metrics",
    }
    servers: list[tuple[str, int]] = []
    processes = []
    try:
        if args.baseline:  # today's main, run as it is deployed today
            port = _free_port()
            processes.append(start_server(url, args.workers, port, args.pool_size, source=args.baseline))
            servers.append(("baseline", port))
        port = _free_port()
        processes.append(start_server(url, args.workers, port, args.pool_size, extra_args=SERVER_ARGS))
        servers.append(("api", port))
        deliveries, api = asyncio.run(measure_with_api(url, servers, targets, args))
    finally:
        for process in processes:
            stop_server(process)
    return {
        "baseline": str(args.baseline) if args.baseline else None,
        "client_nice": args.client_nice,
        "database": make_label(url),
        "rows": args.rows,
        "workers": args.workers,
        "pool_size_per_worker": args.pool_size,
        "wrk_threads": args.threads,
        "connections": args.connections,
        "duration_seconds": args.duration,
        "interval_seconds": args.interval,
        "api_p99_target_ms": API_P99_TARGET_MS,
        "deliveries": deliveries,
        "api": api,
    }


def make_label(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "sqlite"


def row(result: Result) -> str:
    return (
        f"| {result.database} | {result.clients} | {result.events} | {result.deliveries:,} | {result.missing} | "
        f"{result.duplicates} | {result.p50_ms} | {result.p90_ms} | **{result.p99_ms}** | {result.max_ms} | "
        f"{result.within_1s:.2%} | {result.http_status_p50_ms} | {result.http_status_p99_ms} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between two commits")
    parser.add_argument("--http-requests", type=int, default=200)
    parser.add_argument("--output", type=Path, default=None)
    load_group = parser.add_argument_group("--with-api-load: the API benchmark's wrk load at the same time")
    load_group.add_argument("--with-api-load", action="store_true")
    load_group.add_argument("--rows", type=int, default=1_000_000, help="trades loaded (benchmarks.api's data)")
    load_group.add_argument("--deep-offset", type=int, default=900_000)
    load_group.add_argument("--workers", type=int, default=2, help="uvicorn workers (the API targets: 2)")
    load_group.add_argument("--pool-size", type=int, default=4, help="DB_POOL_SIZE of each worker")
    load_group.add_argument("--connections", type=int, default=64, help="wrk connections")
    load_group.add_argument("--threads", type=int, default=2, help="wrk threads")
    load_group.add_argument("--duration", type=int, default=20, help="seconds of wrk per target and phase")
    load_group.add_argument("--rounds", type=int, default=2, help="alternations of with / without the clients")
    load_group.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also run the API of another checkout (today's main: git archive main | tar -x -C DIR); rounds "
        "alternate between it and this one (use an even --rounds)",
    )
    parser.add_argument(
        "--client-nice",
        type=int,
        default=0,
        help="run this process (the WebSocket clients, the writer, the wrk driver) at this nice value, as if the "
        "clients were on other machines; wrk itself keeps its priority",
    )
    args = parser.parse_args()
    if args.client_nice:
        os.nice(args.client_nice)
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        if args.database == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp}/events.db"
            name = None
        else:
            name = f"bench_events_{uuid.uuid4().hex[:8]}"
            asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
            url = SERVER_URL.rsplit("/", 1)[0] + f"/{name}"
        try:
            upgrade_to_head(url)
            if args.with_api_load:
                report = run_with_api_load(url, args)
                return write_api_load_report(report, args)
            port = _free_port()
            server = start_server(url, workers=1, port=port, pool_size=5, extra_args=SERVER_ARGS)
            try:
                result = asyncio.run(measure(url, port, args.clients, args.events, args.interval, args.http_requests))
            finally:
                stop_server(server)
        finally:
            if name is not None:
                asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(
        "| database | clients | events | deliveries | missing | duplicates | p50 ms | p90 ms | p99 ms | max ms | "
        "≤ 1 s | status p50 ms | status p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(row(result))
    output = args.output or RESULTS / f"events-{args.database}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"machine": _describe_machine(), "result": asdict(result)}, indent=2) + "\n")
    print(f"wrote {output}")


def write_api_load_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    print("\n| round | server | connected | events | deliveries | missing | duplicates | p50 ms | p90 ms | p99 ms | "
          "max ms | ≤ 1 s | load avg |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for stats in report["deliveries"]:
        print(delivery_row(stats))
    print("\n| round | server | phase | target | req/s | p50 ms | p99 ms | target ms | errors | load avg |")
    print("|---:|---|---|---|---:|---:|---:|---|---:|---:|")
    for result in sorted(report["api"], key=lambda r: (r["target"], r["round"], r["phase"])):
        print(api_row(result))
    output = args.output or RESULTS / f"events-api-load-{args.database}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"machine": _describe_machine(), **report}, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
