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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect

from backend.app.db.migrations import upgrade_to_head
from backend.app.db.repositories.bot import BotRepository
from backend.app.db.session import create_engine, session_factory
from benchmarks.api.run import (
    API_KEY,
    SERVER_URL,
    _admin,
    _describe_machine,
    _free_port,
    cpu_probe_ms,
    start_server,
    stop_server,
)
from src.domain.modes import TradingMode

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


async def write_events(url: str, count: int, interval: float) -> dict[int, float]:
    """Commit ``count`` heartbeats; the id of each one's event and when its commit returned."""
    engine = create_engine(url)
    bot = BotRepository(session_factory(engine), TradingMode.PAPER)
    committed: dict[int, float] = {}
    try:
        for _ in range(count):
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


async def measure(url: str, port: int, clients: int, events: int, interval: float, http_requests: int) -> Result:
    ws_url = f"ws://127.0.0.1:{port}{PATH}"
    crowd = [Client() for _ in range(clients)]
    readies = [asyncio.Event() for _ in crowd]
    started = time.perf_counter()
    tasks = []
    for client, ready in zip(crowd, readies, strict=True):
        tasks.append(asyncio.create_task(client.run(ws_url, ready)))
        await asyncio.sleep(0.002)  # a ramp, not a thundering herd of handshakes
    await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in readies)), 120)
    connect_seconds = time.perf_counter() - started
    await asyncio.sleep(1.0)  # every client subscribed
    probe_before = cpu_probe_ms()
    status = asyncio.create_task(time_status(f"http://127.0.0.1:{port}", http_requests))
    committed = await write_events(url, events, interval)
    status_times = await status
    await asyncio.sleep(2.0)  # the last event reaches everyone
    probe_after = cpu_probe_ms()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = []
    missing = 0
    for client in crowd:
        for event_id, at in committed.items():
            arrived = client.arrivals.get(event_id)
            if arrived is None:
                missing += 1
            else:
                latencies.append(arrived - at)
    connected = sum(1 for client in crowd if client.ws is not None)
    ms = [value * 1000 for value in latencies] or [float("nan")]
    status_ms = [value * 1000 for value in status_times]
    return Result(
        database=make_label(url),
        clients=clients,
        connected=connected,
        events=len(committed),
        deliveries=len(latencies),
        missing=missing,
        duplicates=sum(client.duplicates for client in crowd),
        p50_ms=round(statistics.median(ms), 1),
        p90_ms=round(percentile(ms, 0.90), 1),
        p99_ms=round(percentile(ms, 0.99), 1),
        max_ms=round(max(ms), 1),
        within_1s=round(sum(1 for value in ms if value <= 1000) / len(ms), 5),
        connect_seconds=round(connect_seconds, 2),
        http_status_p50_ms=round(statistics.median(status_ms), 1),
        http_status_p99_ms=round(percentile(status_ms, 0.99), 1),
        cpu_probe_ms_before=probe_before,
        cpu_probe_ms_after=probe_after,
        load_average=round(os.getloadavg()[0], 2),
    )


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
    args = parser.parse_args()
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
            port = _free_port()
            server = start_server(url, workers=1, port=port, pool_size=5)
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


if __name__ == "__main__":
    main()
